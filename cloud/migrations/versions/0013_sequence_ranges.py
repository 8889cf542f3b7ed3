"""edge sequence numbers: the ranges each stored batch holds, and each reading's number

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 06:00:00

The edge numbers every reading per sensor (1, 2, 3, ... per buffer file, its *epoch*) and
sends each batch's numbers as ranges. ``telemetry_seq_ranges`` keeps them per stored batch,
written in the batch's transaction; ``telemetry_readings.seq`` keeps each reading's own number,
so that rows deleted outside benchlink show as the exact numbers missing. Readings sent
without numbers (a batch sent by hand) have ``seq`` NULL. Nothing is backfilled: batches
stored before this have no numbers and count as arrived without edge accounting.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "telemetry_seq_ranges",
        sa.Column("id", _BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("batch_id", sa.BigInteger(), nullable=False),
        sa.Column("sensor_id", sa.Uuid(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("capture_session_id", sa.Uuid(), nullable=False),
        sa.Column("epoch", sa.Uuid(), nullable=False),
        sa.Column("seq_first", sa.BigInteger(), nullable=False),
        sa.Column("seq_last", sa.BigInteger(), nullable=False),
        sa.Column("duplicate", sa.Boolean(), nullable=False),
    )
    op.create_index(
        "ix_seq_ranges_session",
        "telemetry_seq_ranges",
        ["capture_session_id", "sensor_id", "epoch", "seq_first"],
    )
    op.create_index("ix_telemetry_seq_ranges_batch_id", "telemetry_seq_ranges", ["batch_id"])
    op.create_index("ix_telemetry_seq_ranges_run_id", "telemetry_seq_ranges", ["run_id"])
    # nullable, no default: a catalog-only change on PostgreSQL, whatever the table's size
    op.add_column("telemetry_readings", sa.Column("seq", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("telemetry_readings", "seq")
    op.drop_index("ix_telemetry_seq_ranges_run_id", table_name="telemetry_seq_ranges")
    op.drop_index("ix_telemetry_seq_ranges_batch_id", table_name="telemetry_seq_ranges")
    op.drop_index("ix_seq_ranges_session", table_name="telemetry_seq_ranges")
    op.drop_table("telemetry_seq_ranges")
