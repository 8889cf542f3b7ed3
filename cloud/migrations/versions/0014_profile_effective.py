"""conversion profile versions apply from a time; a request split between versions

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 06:00:00

``sensor_profiles.effective_from``: readings stamped from that instant on convert with the
version, until the next version's. Existing versions: a sensor's first one is effective from
the Unix epoch (every reading has a version, whatever its timestamp); each later one from its
``created_at``, the moment it became current, which is what ingest did until now for the
readings that arrived in time.

``telemetry_batches.request_batch_id``: a request whose readings fall under several versions
is stored as one batch per version, each naming the batch that holds the request's
Idempotency-Key (a retry is answered for the whole request). NULL for every existing batch.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    # Plain ADD COLUMN (no batch: see 0011). NOT NULL needs a default to add the column to
    # existing rows; every row gets its own value just below, and PostgreSQL drops the
    # default again (SQLite cannot without recreating the table; ORM inserts always give one).
    epoch = "'1970-01-01 00:00:00+00'" if pg else "'1970-01-01 00:00:00.000000'"
    op.add_column(
        "sensor_profiles",
        sa.Column(
            "effective_from",
            sa.DateTime(timezone=True),
            server_default=sa.text(epoch),
            nullable=False,
        ),
    )
    profiles = sa.table(
        "sensor_profiles",
        sa.column("id", sa.BigInteger()),
        sa.column("sensor_id"),
        sa.column("created_at"),
        sa.column("effective_from"),
    )
    p2 = profiles.alias("p2")
    first_of_sensor = (
        sa.select(sa.func.min(p2.c.id)).where(p2.c.sensor_id == profiles.c.sensor_id)
    ).scalar_subquery()
    op.execute(
        profiles.update()
        .where(profiles.c.id != first_of_sensor)
        .values(effective_from=profiles.c.created_at)
    )
    if pg:
        op.alter_column("sensor_profiles", "effective_from", server_default=None)
    op.add_column(
        "telemetry_batches", sa.Column("request_batch_id", sa.BigInteger(), nullable=True)
    )
    op.create_index(
        "ix_telemetry_batches_request",
        "telemetry_batches",
        ["request_batch_id"],
        postgresql_where=sa.text("request_batch_id IS NOT NULL"),
        sqlite_where=sa.text("request_batch_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_telemetry_batches_request", table_name="telemetry_batches")
    op.drop_column("telemetry_batches", "request_batch_id")
    op.drop_column("sensor_profiles", "effective_from")
