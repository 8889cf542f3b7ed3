"""sensors: calibration fits (sensor_calibrations)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 10:00:00

``POST /api/v1/sensors/{sensor_id}/calibrations`` fits a correction and keeps the fit: what
it was fitted from (explicit pairs, or a reference sensor over a time window), the profile
version whose values it fitted, and its answer as given (JSON), listed newest first per
sensor by the index.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sensor_calibrations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("sensor_id", sa.Uuid(), nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("model", sa.String(length=32), nullable=False),
        sa.Column("degree", sa.SmallInteger(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("reference_sensor_id", sa.Uuid(), nullable=True),
        sa.Column("since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("base_profile_version", sa.String(length=64), nullable=False),
        sa.Column(
            "result",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["sensor_id"], ["sensors.id"], name=op.f("fk_sensor_calibrations_sensor_id_sensors")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sensor_calibrations")),
    )
    op.create_index(
        "ix_sensor_calibrations_sensor",
        "sensor_calibrations",
        ["sensor_id", "created_at", "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_sensor_calibrations_sensor", table_name="sensor_calibrations")
    op.drop_table("sensor_calibrations")
