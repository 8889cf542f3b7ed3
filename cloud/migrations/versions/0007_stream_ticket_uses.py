"""live: spent stream tickets (stream_ticket_uses), so a ticket opens one stream only

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 23:50:00

A stream ticket travels in a URL, where proxies and access logs may keep it. Each API process
records the ticket's id when it opens a stream with it, in the database they share, and
refuses an id already there. Rows are needed only until the ticket expires (a minute).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stream_ticket_uses",
        sa.Column("ticket_id", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("ticket_id", name=op.f("pk_stream_ticket_uses")),
    )
    op.create_index(op.f("ix_stream_ticket_uses_expires_at"), "stream_ticket_uses", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_stream_ticket_uses_expires_at"), table_name="stream_ticket_uses")
    op.drop_table("stream_ticket_uses")
