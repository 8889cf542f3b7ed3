"""fleet: edges (bench PCs) with their own tokens and their last heartbeat

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 02:30:00

An edge is registered by a project's owner and reports in with its token; the row keeps the
last heartbeat it sent and when the cloud received it (staleness is computed on read).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "edges",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat", JSON, nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("token_hash", sa.String(length=64), nullable=True),
        sa.Column("token_preview", sa.String(length=32), nullable=True),
        sa.Column("token_status", sa.String(length=16), nullable=False),
        sa.Column("token_issued_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_edges_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_edges")),
        sa.UniqueConstraint("project_id", "name", name=op.f("uq_edges_project_id")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_edges_token_hash")),
    )
    op.create_index(op.f("ix_edges_project_id"), "edges", ["project_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_edges_project_id"), table_name="edges")
    op.drop_table("edges")
