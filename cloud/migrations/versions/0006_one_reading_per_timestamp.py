"""telemetry: one reading per sensor and timestamp (unique index ux_telemetry_sensor_ts)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 23:00:00

Two edges (or two daemons sharing an MQTT session) could deliver the same reading, and both
copies were stored. A sensor has one reading per timestamp: ingest now drops a second copy
with the same raw value and refuses a different value at that timestamp
(``cloud.services.telemetry``), and the database holds it to that across batches, API
workers and concurrent requests. The unique index replaces ``ix_telemetry_sensor_ts``
(sensor_id, ts, id) rather than adding a fourth index to every ingest; on PostgreSQL it
carries ``id`` so a sensor's (ts, id) keyset scans stay index-only.

A database that already holds two readings of one sensor at one timestamp cannot get the
index, and which copy is right is not ours to guess (a doubled reading also counted twice in
the summaries of migration 0004). The upgrade then stops before changing anything and says
how many there are, shows the first ones and the query that lists them all: remove the
copies you do not want, then run the migration again.

``CREATE UNIQUE INDEX`` is not CONCURRENTLY: it runs inside the migration's transaction (all
or nothing) and blocks writes to telemetry_readings while it builds (about a second per
million readings); the edge buffers and retries meanwhile.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

#: Every (sensor, timestamp) with more than one reading, the question the error gives out.
DUPLICATES_SQL = (
    "SELECT sensor_id, ts, count(*) AS copies, count(DISTINCT raw_value) AS raw_values,"
    " min(id) AS first_id, max(id) AS last_id"
    " FROM telemetry_readings GROUP BY sensor_id, ts HAVING count(*) > 1"
    " ORDER BY sensor_id, ts"
)
#: How many of them the error message shows.
SHOWN = 10


class DuplicateReadings(RuntimeError):
    """The table holds several readings of one sensor at one timestamp."""


def _refuse_duplicates() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.text(DUPLICATES_SQL)).all()
    if not rows:
        return
    extra = sum(r.copies - 1 for r in rows)
    differing = sum(1 for r in rows if r.raw_values > 1)
    shown = "\n".join(
        f"  sensor {uuid.UUID(str(r.sensor_id))} at {r.ts}: {r.copies} readings,"
        f" {r.raw_values} raw value(s), ids {r.first_id}..{r.last_id}"
        for r in rows[:SHOWN]
    )
    raise DuplicateReadings(
        f"migration 0006 needs one reading per sensor and timestamp, but {len(rows)}"
        f" (sensor, timestamp) pairs have more than one ({extra} extra readings; {differing}"
        f" of the pairs disagree on raw_value). Nothing was changed. The first ones:\n{shown}\n"
        f"All of them: {DUPLICATES_SQL};\n"
        "Delete the copies you do not want (for identical ones, keep the lowest id), then run"
        " the migration again."
    )


def upgrade() -> None:
    _refuse_duplicates()
    op.drop_index("ix_telemetry_sensor_ts", table_name="telemetry_readings")
    op.create_index(
        "ux_telemetry_sensor_ts",
        "telemetry_readings",
        ["sensor_id", "ts"],
        unique=True,
        postgresql_include=["id"],
    )


def downgrade() -> None:
    op.drop_index("ux_telemetry_sensor_ts", table_name="telemetry_readings")
    op.create_index("ix_telemetry_sensor_ts", "telemetry_readings", ["sensor_id", "ts", "id"])
