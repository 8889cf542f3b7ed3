"""telemetry: per-sensor summaries at fixed resolutions for charts (telemetry_rollups)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 13:00:00

A chart of a capture session with a million readings read every one of them (one index-only
range scan per bucket): ~300 ms on the benchmark machine. Ingest now keeps count, sum, min and
max per sensor and session for cells of 10 ms up to an hour (``cloud.services.telemetry_rollup``),
and a chart reads those cells: thousands of rows instead of millions.

``telemetry_batches.rollup_level`` says from which level up a batch is summarised. Batches
stored before this migration get 7 (in no summary): a chart over them reads their readings,
as before, so no row is rewritten here. On PostgreSQL the new index (not built CONCURRENTLY:
all or nothing, in the migration's transaction) covers every batch stored before, so it takes
a moment per million batches and holds up ingest meanwhile (the edge buffers and retries).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "telemetry_rollups",
        sa.Column("sensor_id", sa.Uuid(), nullable=False),
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column("cell", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("capture_session_id", sa.Uuid(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.Float(), nullable=False),
        sa.Column("lo", sa.Float(), nullable=False),
        sa.Column("hi", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(
            "sensor_id", "level", "cell", "capture_session_id", name=op.f("pk_telemetry_rollups")
        ),
    )
    # A constant default: a plain ALTER TABLE .. ADD COLUMN on both databases (on SQLite an
    # expression default would make Alembic copy the whole table).
    op.add_column(
        "telemetry_batches",
        sa.Column("rollup_level", sa.SmallInteger(), server_default="7", nullable=False),
    )
    op.create_index(
        "ix_telemetry_batches_unrolled",
        "telemetry_batches",
        ["sensor_id", "capture_session_id", "last_ts", "first_ts", "rollup_level"],
        postgresql_where=sa.text("rollup_level > 0"),
        sqlite_where=sa.text("rollup_level > 0"),
    )


def downgrade() -> None:
    op.drop_index("ix_telemetry_batches_unrolled", table_name="telemetry_batches")
    with op.batch_alter_table("telemetry_batches") as batch_op:
        batch_op.drop_column("rollup_level")
    op.drop_table("telemetry_rollups")
