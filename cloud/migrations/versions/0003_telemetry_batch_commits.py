"""telemetry: the commit order of batches (telemetry_batch_commits), for live-stream resume

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 09:00:00

A live client resumes after the last event it saw, i.e. after a batch. Batch ids come from a
sequence at insert time while concurrent ingest transactions commit in any order, so "the
batches with a higher id" both misses a batch with a lower id that committed later and
repeats one with a higher id that committed earlier. Each batch now gets a ``position`` in
its ingest transaction under a lock held until the commit (``cloud.live.positions``):
positions follow the commit order, and resume reads the batches after the resume point's
position.

Existing batches get positions in id order (the best order known for them): the table is
one narrow row per batch (a batch is a request of up to thousands of readings).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "telemetry_batch_commits",
        sa.Column(
            "position",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("batch_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("position", name=op.f("pk_telemetry_batch_commits")),
        sa.UniqueConstraint("batch_id", name=op.f("uq_telemetry_batch_commits_batch_id")),
    )
    op.execute(
        "INSERT INTO telemetry_batch_commits (batch_id)"
        " SELECT id FROM telemetry_batches ORDER BY id"
    )


def downgrade() -> None:
    op.drop_table("telemetry_batch_commits")
