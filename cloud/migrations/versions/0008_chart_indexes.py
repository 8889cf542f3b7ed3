"""telemetry: readings of a capture session in time order (ix_telemetry_session_ts)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 00:15:00

The telemetry list by capture session alone (``GET /telemetry?capture_session_id=..``, the
first page of a session's readings) had no index in its order: the session index leads with
the sensor, so the first page sorted every reading of the session (half a second at two
million). ``(capture_session_id, ts, id)`` gives the order directly; the first page then
reads its own rows and no more, however long the session. Sensor, run and sensor + session
already had theirs.

Not CONCURRENTLY: it runs inside the migration's transaction, so it is all or nothing, and it
blocks writes to telemetry_readings while it builds (about a second per million readings on
the benchmark machine; the edge buffers and retries meanwhile).
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_telemetry_session_ts", "telemetry_readings", ["capture_session_id", "ts", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_telemetry_session_ts", table_name="telemetry_readings")
