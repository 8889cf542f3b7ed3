"""experiments and runs: soft delete (deleted_at), purged after a grace period

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 10:00:00

An owner's DELETE of a run or an experiment stamps ``deleted_at``; the thing vanishes from
lists and reads but ``POST .../restore`` brings it back until the app's periodic task purges
it (``BENCHLINK_DELETE_GRACE_S`` later). The runs of a deleted experiment are stamped with it
and ``deleted_with_experiment``, so that restoring the experiment brings back those runs and
not one deleted on its own before. Both columns are indexed: the purge and the telemetry
queries look the deleted ones up.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN on both databases, not a batch: on SQLite a batch may recreate the
    # table, and SQLite refuses to drop `runs` while rows of other tables point at it.
    op.add_column("experiments", sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_experiments_deleted_at", "experiments", ["deleted_at"])
    op.add_column("runs", sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "runs",
        sa.Column(
            "deleted_with_experiment", sa.Boolean(), server_default=sa.false(), nullable=False
        ),
    )
    op.create_index("ix_runs_deleted_at", "runs", ["deleted_at"])


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite has it since 3.35), not a batch, as in upgrade().
    op.drop_index("ix_runs_deleted_at", table_name="runs")
    op.drop_column("runs", "deleted_with_experiment")
    op.drop_column("runs", "deleted_at")
    op.drop_index("ix_experiments_deleted_at", table_name="experiments")
    op.drop_column("experiments", "deleted_at")
