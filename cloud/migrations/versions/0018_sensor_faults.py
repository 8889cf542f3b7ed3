"""sensor faults: episodes of a sensor's device faults (an open or shorted probe), as an
edge sends them

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 12:30:00

A new table; nothing existing changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sensor_faults",
        sa.Column("sensor_id", sa.Uuid(), nullable=False),
        sa.Column("episode_id", sa.Uuid(), nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("capture_session_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.String(length=200), nullable=True),
        sa.Column("first_ts", _TS, nullable=False),
        sa.Column("last_ts", _TS, nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("late", sa.Boolean(), nullable=False),
        sa.Column("received_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("sensor_id", "episode_id", name=op.f("pk_sensor_faults")),
    )
    op.create_index("ix_sensor_faults_sensor", "sensor_faults", ["sensor_id", "first_ts"])
    op.create_index(op.f("ix_sensor_faults_run_id"), "sensor_faults", ["run_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_sensor_faults_run_id"), table_name="sensor_faults")
    op.drop_index("ix_sensor_faults_sensor", table_name="sensor_faults")
    op.drop_table("sensor_faults")
