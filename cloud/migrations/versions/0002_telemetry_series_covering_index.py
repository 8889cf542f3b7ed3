"""telemetry: the session index covers chart queries (INCLUDE project_id, value)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 07:00:00

A chart (``GET /telemetry/series``) of a capture session reads every reading of one sensor in
that session, but only ``ts`` and ``value`` (and ``project_id``, the caller's scope). With
those two columns carried in ``ix_telemetry_session_sensor_ts`` the per-bucket range scans are
index-only: a million-reading chart reads ~90 MB of index in shared buffers instead of ~140 MB
of heap. The index replaces the old one with the same name and key (so every query that used
it still can), it does not add another: ingest pays for a wider entry, not for a fourth index.

PostgreSQL only: SQLite has no INCLUDE, and there the index stays as it was.

``CREATE INDEX`` here is not CONCURRENTLY: it runs inside the migration's transaction, so it
is all or nothing, and it blocks writes to telemetry_readings while it builds (about a second
per million readings on the benchmark machine; the edge buffers and retries meanwhile).
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

KEY = ["capture_session_id", "sensor_id", "ts", "id"]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_telemetry_session_sensor_ts", table_name="telemetry_readings")
    op.create_index(
        "ix_telemetry_session_sensor_ts",
        "telemetry_readings",
        KEY,
        postgresql_include=["project_id", "value"],
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_telemetry_session_sensor_ts", table_name="telemetry_readings")
    op.create_index("ix_telemetry_session_sensor_ts", "telemetry_readings", KEY)
