"""units: canonical sensor units, the units of each profile version, metric units

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 23:30:00

Sensor units were free text; they are now parsed with pint and stored in one spelling
(``degC``, ``C``, ``celsius`` -> ``°C``; ``millivolt`` -> ``mV``). This migration rewrites the
units of existing sensors that way and gives every profile version the units it converts
between (``sensor_profiles.input_unit`` / ``display_unit``), taken from its sensor: before
this, a sensor had one pair of units for all its versions.

A thermocouple profile converted into its payload's ``display`` if it had one, else into the
sensor's display unit if that was °C, °F or K in one of the spellings it knew, else into °C:
its versions get the unit their values are really in, and the sensor's display unit follows
its current version when the two differed.

Nothing is guessed: a unit that does not parse, or that does not fit its thermocouple profile
(an input unit that is not a voltage), is left as written and printed in a report at the end
(stderr). Such a sensor keeps converting as it did (no unit conversion) until its units are
corrected with ``PATCH /api/v1/sensors/{id}``. Downgrading drops the new columns; the
rewritten spellings stay (they mean the same units).
"""

from __future__ import annotations

import sys
from typing import Any

import sqlalchemy as sa
from alembic import op

from cloud.db.types import JSONType
from common import units

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

#: The display spellings the thermocouple kind understood before units were parsed (and its
#: fallback, C): what its stored values are in. Frozen here, as it was.
_LEGACY_TC_DISPLAY = {
    "c": "degC", "°c": "degC", "degc": "degC", "deg c": "degC", "celsius": "degC",
    "f": "degF", "°f": "degF", "degf": "degF", "deg f": "degF", "fahrenheit": "degF",
    "k": "kelvin", "kelvin": "kelvin",
}  # fmt: skip
_LEGACY_TC_PAYLOAD = {"C": "degC", "F": "degF", "K": "kelvin"}


class Report:
    """What the migration could not settle, printed at its end (no dataclass: Alembic loads
    this file outside sys.modules)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, sensor: Any, message: str) -> None:
        line = f"  sensor {sensor.id} ({sensor.name!r}): {message}"
        if line not in self.lines:  # once per sensor, not once per profile version
            self.lines.append(line)

    def emit(self) -> None:
        if not self.lines:
            return
        print(
            "migration 0005 (units): left as written or changed, check these sensors "
            "(fix a unit with PATCH /api/v1/sensors/{id}):\n" + "\n".join(self.lines),
            file=sys.stderr,
            flush=True,
        )


def upgrade() -> None:
    # Constant defaults: a plain ALTER TABLE .. ADD COLUMN on both databases.
    for column in ("input_unit", "display_unit"):
        op.add_column(
            "sensor_profiles",
            sa.Column(column, sa.String(length=32), server_default="", nullable=False),
        )
    op.add_column("metrics", sa.Column("unit", sa.String(length=32), nullable=True))
    report = Report()
    conn = op.get_bind()
    sensors = sa.table(
        "sensors",
        sa.column("id", sa.Uuid()),
        sa.column("name", sa.String()),
        sa.column("input_unit", sa.String()),
        sa.column("display_unit", sa.String()),
        sa.column("profile_version", sa.String()),
    )
    profiles = sa.table(
        "sensor_profiles",
        sa.column("id", sa.BigInteger()),
        sa.column("sensor_id", sa.Uuid()),
        sa.column("version", sa.String()),
        sa.column("kind", sa.String()),
        sa.column("payload", JSONType),
        sa.column("input_unit", sa.String()),
        sa.column("display_unit", sa.String()),
    )
    by_sensor: dict[Any, list[Any]] = {}
    for p in conn.execute(sa.select(profiles)):
        by_sensor.setdefault(p.sensor_id, []).append(p)
    for s in conn.execute(sa.select(sensors)).all():
        input_unit = _normalised(s, "input_unit", s.input_unit, report)
        display_unit = _normalised(s, "display_unit", s.display_unit, report)
        current_display = display_unit
        for p in by_sensor.get(s.id, []):
            p_display = display_unit
            if p.kind == "thermocouple":
                payload = p.payload if isinstance(p.payload, dict) else {}
                _check_tc_input(s, payload, input_unit, report)
                p_display = _tc_display(payload, s.display_unit)
                if p.version == s.profile_version and p_display != display_unit:
                    report.add(
                        s,
                        f"display_unit {s.display_unit!r} was not what its thermocouple "
                        f"profile {p.version} converts into; set to {p_display}, the unit of "
                        "its values",
                    )
            if p.version == s.profile_version:
                current_display = p_display
            conn.execute(
                profiles.update()
                .where(profiles.c.id == p.id)
                .values(input_unit=input_unit, display_unit=p_display)
            )
        if (input_unit, current_display) != (s.input_unit, s.display_unit):
            conn.execute(
                sensors.update()
                .where(sensors.c.id == s.id)
                .values(input_unit=input_unit, display_unit=current_display)
            )
    report.emit()


def _normalised(sensor: Any, column: str, text: str, report: Report) -> str:
    try:
        return units.canonical(text)
    except units.UnitError as exc:
        report.add(sensor, f"{column} left as written: {exc}")
        return text


def _tc_display(payload: dict[str, Any], display_text: str) -> str:
    legacy = _LEGACY_TC_PAYLOAD.get(str(payload.get("display")))
    if legacy is None:
        legacy = _LEGACY_TC_DISPLAY.get(display_text.strip().lower(), "degC")
    return units.canonical(legacy)


def _check_tc_input(sensor: Any, payload: dict[str, Any], input_unit: str, report: Report) -> None:
    expects = "degC" if payload.get("input") == "max31855" else "mV"
    try:
        given = units.parse(input_unit)
    except units.UnitError:
        return  # reported already
    wanted = units.parse(expects)
    if given.dimension != wanted.dimension:
        report.add(
            sensor,
            f"input_unit {input_unit} is a {given.dimension} but its thermocouple profile "
            f"reads a {wanted.dimension} ({wanted.symbol}); left as it is, "
            "readings are converted as before (no unit conversion)",
        )
    elif given != wanted:
        report.add(
            sensor,
            f"input_unit {input_unit}: its thermocouple profile read these values as "
            f"{wanted.symbol} until now (now converted from {input_unit}); readings stored "
            "before this migration were converted from the wrong scale",
        )


def downgrade() -> None:
    op.drop_column("metrics", "unit")
    with op.batch_alter_table("sensor_profiles") as batch:
        batch.drop_column("display_unit")
        batch.drop_column("input_unit")
