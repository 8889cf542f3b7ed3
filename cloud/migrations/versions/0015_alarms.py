"""alarms: rules on a sensor's values (with their evaluator's state) and the alarms raised

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 06:00:00

``sensors.alarm_rules`` counts a sensor's rules that are not deleted: the ingest reads it in
the lookup it makes anyway, and evaluates nothing for a sensor whose count is 0.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.add_column(
        "sensors", sa.Column("alarm_rules", sa.Integer(), server_default="0", nullable=False)
    )
    op.create_table(
        "alarm_rules",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("sensor_id", sa.Uuid(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("low", sa.Float(), nullable=True),
        sa.Column("high", sa.Float(), nullable=True),
        sa.Column("window_s", sa.Float(), nullable=True),
        sa.Column("after_s", sa.Float(), nullable=True),
        sa.Column("for_s", sa.Float(), nullable=False),
        sa.Column("hysteresis", sa.Float(), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_ts_us", sa.BigInteger(), nullable=True),
        sa.Column("last_session_id", sa.Uuid(), nullable=True),
        sa.Column("holding_since_us", sa.BigInteger(), nullable=True),
        sa.Column("open_alarm_id", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_alarm_rules_project_id_projects")
        ),
        sa.ForeignKeyConstraint(
            ["sensor_id"], ["sensors.id"], name=op.f("fk_alarm_rules_sensor_id_sensors")
        ),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_alarm_rules_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarm_rules")),
    )
    op.create_index("ix_alarm_rules_sensor", "alarm_rules", ["sensor_id", "deleted_at"])
    op.create_table(
        "alarms",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("rule_id", sa.Uuid(), nullable=False),
        sa.Column("sensor_id", sa.Uuid(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=True),
        sa.Column("capture_session_id", sa.Uuid(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("rule", _JSON, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("late", sa.Boolean(), nullable=False),
        sa.Column("cleared_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cleared_value", sa.Float(), nullable=True),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by", sa.String(length=100), nullable=True),
        sa.Column("ack_note", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_alarms_project_id_projects")
        ),
        sa.ForeignKeyConstraint(
            ["rule_id"], ["alarm_rules.id"], name=op.f("fk_alarms_rule_id_alarm_rules")
        ),
        sa.ForeignKeyConstraint(
            ["sensor_id"], ["sensors.id"], name=op.f("fk_alarms_sensor_id_sensors")
        ),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_alarms_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarms")),
    )
    op.create_index("ix_alarms_project_state", "alarms", ["project_id", "state", "raised_at", "id"])
    op.create_index("ix_alarms_run", "alarms", ["run_id", "raised_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_alarms_run", table_name="alarms")
    op.drop_index("ix_alarms_project_state", table_name="alarms")
    op.drop_table("alarms")
    op.drop_index("ix_alarm_rules_sensor", table_name="alarm_rules")
    op.drop_table("alarm_rules")
    op.drop_column("sensors", "alarm_rules")
