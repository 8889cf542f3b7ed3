"""fleet health: sensors' expected_interval_s, edges' conditions in force

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 06:00:00

``sensors.expected_interval_s`` (optional): the health rule ``sensor_silent`` fires after 10
of them without a reading. ``edges.health``: the health conditions in force on the edge
(cloud/health.py), changed with the row locked, each start and end a journal event.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    # Plain ADD COLUMN (as 0011): a batch could recreate the tables on SQLite.
    op.add_column("sensors", sa.Column("expected_interval_s", sa.Float(), nullable=True))
    op.add_column("edges", sa.Column("health", JSON, nullable=True))


def downgrade() -> None:
    op.drop_column("edges", "health")
    op.drop_column("sensors", "expected_interval_s")
