"""reprocessing: jobs that re-derive a sensor's stored readings under a profile version, and
the values they derive, kept beside the readings' first values

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 09:00:00

Nothing existing changes: ``telemetry_readings.value`` stays each reading's first value.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "reprocess_jobs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("sensor_id", sa.Uuid(), nullable=False),
        sa.Column("profile_version", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=True),
        sa.Column("since", _TS, nullable=True),
        sa.Column("until", _TS, nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("max_id", sa.BigInteger(), nullable=True),
        sa.Column("first_ts", _TS, nullable=True),
        sa.Column("last_ts", _TS, nullable=True),
        sa.Column("cursor_ts", _TS, nullable=True),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("done", sa.BigInteger(), nullable=False),
        sa.Column("converted", sa.BigInteger(), nullable=False),
        sa.Column("unchanged", sa.BigInteger(), nullable=False),
        sa.Column("unconvertible", sa.BigInteger(), nullable=False),
        sa.Column("from_versions", _JSON, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("cancelled_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("started_at", _TS, nullable=True),
        sa.Column("finished_at", _TS, nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_reprocess_jobs_project_id_projects")
        ),
        sa.ForeignKeyConstraint(
            ["sensor_id"], ["sensors.id"], name=op.f("fk_reprocess_jobs_sensor_id_sensors")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reprocess_jobs")),
    )
    op.create_index("ix_reprocess_jobs_sensor", "reprocess_jobs", ["sensor_id", "profile_version"])
    pending = sa.text("status IN ('queued', 'running')")
    op.create_index(
        "ix_reprocess_jobs_pending",
        "reprocess_jobs",
        ["created_at"],
        postgresql_where=pending,
        sqlite_where=pending,
    )
    op.create_table(
        "reprocessed_values",
        sa.Column("reading_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("profile_version", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.PrimaryKeyConstraint(
            "reading_id", "profile_version", name=op.f("pk_reprocessed_values")
        ),
    )


def downgrade() -> None:
    op.drop_table("reprocessed_values")
    op.drop_index("ix_reprocess_jobs_pending", table_name="reprocess_jobs")
    op.drop_index("ix_reprocess_jobs_sensor", table_name="reprocess_jobs")
    op.drop_table("reprocess_jobs")
