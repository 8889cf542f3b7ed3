"""units: canonical sensor units, the units of each profile version, metric units

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 23:30:00

Sensor units were free text; they are now parsed with pint and stored in one spelling
(``degC``, ``C``, ``celsius`` -> ``°C``; ``millivolt`` -> ``mV``). Every profile version gets
the units its stored values were really computed with (``sensor_profiles.input_unit`` /
``display_unit``): before this, a sensor had one pair of units for all its versions, and a
thermocouple ignored its sensor's input unit.

A thermocouple profile read its raw values as mV (a MAX31855 reading as °C) whatever its
sensor declared, and converted into its payload's ``display`` if it had one, else into the
sensor's display unit if that was °C, °F or K in one of the spellings it knew, else into °C.
Its versions are labelled with those units, so the readings stored under them say the truth.

A thermocouple sensor that declared another scale of the same dimension (``V``, ``µV``) gets a
new profile version (the current one's name with its number raised, as a unit change through
the API makes) converting from the declared unit, and it becomes the sensor's current version:
readings ingested from now on are converted as declared, those stored before keep the old
version. If the device in fact sends mV, ``PATCH /api/v1/sensors/{id}`` with
``{"input_unit": "mV"}`` makes a further version that reads mV again.

Nothing is guessed: a unit that does not parse, or that cannot feed its thermocouple profile
(an input unit that is not a voltage), is reported at the end (stderr) with what is applied
instead; the sensor row shows its current version's units. Fix a unit with
``PATCH /api/v1/sensors/{id}``. Each version this migration makes is also in the sensor's
journal (``sensor.profile_changed``, actor ``migration 0005``).

Downgrading drops the new columns; the rewritten spellings and the versions made here stay.
The code before this migration reads every thermocouple as mV again, so a sensor whose
current version converts otherwise (from V) gets a new version for the readings stored from
then on (reported), and the units of the versions the code before cannot say are kept in
``sensor_profile_units_0005`` for the next upgrade, which takes them back and drops it: each
version keeps the units its readings were computed with, however often one goes down and up.

Frozen here: what this migration does must not change when the live unit code does (Alembic
runs this file against old databases for as long as it exists), so the lab spellings, the
canonical spelling and the legacy thermocouple rules are copied as they were at 0005; only
pint is imported, to parse.
"""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime
from typing import Any

import pint
import sqlalchemy as sa
from alembic import op

from cloud.db.types import JSONType

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

#: Whole-unit spellings (compared with spaces collapsed, case-folded) that mean a
#: temperature on a bench but something else to pint (C: coulomb, F: farad, K: nothing).
_LAB_SPELLINGS = {
    "c": "degC", "°c": "degC", "℃": "degC", "degc": "degC", "deg c": "degC",
    "degrees c": "degC", "celsius": "degC",
    "f": "degF", "°f": "degF", "℉": "degF", "degf": "degF", "deg f": "degF",
    "degrees f": "degF", "fahrenheit": "degF",
    "k": "kelvin", "kelvin": "kelvin",
}  # fmt: skip
#: The display spellings the thermocouple kind understood before units were parsed (and its
#: fallback, C): what its stored values are in.
_LEGACY_TC_DISPLAY = {
    "c": "degC", "°c": "degC", "degc": "degC", "deg c": "degC", "celsius": "degC",
    "f": "degF", "°f": "degF", "degf": "degF", "deg f": "degF", "fahrenheit": "degF",
    "k": "kelvin", "kelvin": "kelvin",
}  # fmt: skip
_LEGACY_TC_PAYLOAD = {"C": "degC", "F": "degF", "K": "kelvin"}
#: What a thermocouple read its raw values as, by its payload's ``input`` (default mV),
#: whatever its sensor's input unit said.
_LEGACY_TC_INPUT = {"mV": "mV", "max31855": "degC"}
_DIMENSION_NAMES = {"[electric_potential]": "voltage", "[temperature]": "temperature"}
_MAX_INPUT = 200  # pint's parse time grows with the square of a word's length
_ACTOR = "migration 0005"


class Unit:
    """A parsed unit: its canonical spelling and what it measures (no dataclass: Alembic
    loads this file outside sys.modules)."""

    def __init__(self, symbol: str, pint_unit: Any, dimension: str) -> None:
        self.symbol = symbol
        self.pint_unit = pint_unit
        self.dimension = dimension


class Units:
    """Parses with a registry of its own: nothing shared with the running application."""

    def __init__(self) -> None:
        self.ureg: Any = pint.UnitRegistry()
        self.names = [(self.ureg.get_dimensionality(d), n) for d, n in _DIMENSION_NAMES.items()]

    def _read(self, text: str) -> Any:
        spelled = _LAB_SPELLINGS.get(" ".join(text.split()).casefold(), text.strip())
        try:
            return self.ureg.Unit(spelled)
        except Exception:  # pint raises several kinds (and AssertionError on some signs)
            return None

    def parse(self, text: str) -> Unit | None:
        """The unit ``text`` names in the canonical spelling (pint's short symbol, or its
        name if the symbol reads back as another unit), or None."""
        if not isinstance(text, str) or not text.strip() or len(text) > _MAX_INPUT:
            return None
        unit = self._read(text)
        if unit is None:
            return None
        for spelling in (f"{unit:~P}", f"{unit:P}"):
            if spelling and len(spelling) <= 32 and self._read(spelling) == unit:
                dims = unit.dimensionality
                name = next((n for d, n in self.names if d == dims), str(dims))
                return Unit(spelling, unit, name)
        return None


class Report:
    """What the migration changed or could not settle, printed at its end."""

    def __init__(self, title: str = "migration 0005 (units)") -> None:
        self.title = title
        self.lines: list[str] = []

    def add(self, sensor: Any, message: str) -> None:
        line = f"  sensor {sensor.id} ({sensor.name!r}): {message}"
        if line not in self.lines:  # once per sensor, not once per profile version
            self.lines.append(line)

    def emit(self) -> None:
        if not self.lines:
            return
        print(
            f"{self.title}: check these sensors "
            "(fix a unit with PATCH /api/v1/sensors/{id}):\n" + "\n".join(self.lines),
            file=sys.stderr,
            flush=True,
        )


_sensors = sa.table(
    "sensors",
    sa.column("id", sa.Uuid()),
    sa.column("project_id", sa.Uuid()),
    sa.column("name", sa.String()),
    sa.column("input_unit", sa.String()),
    sa.column("display_unit", sa.String()),
    sa.column("profile_version", sa.String()),
    sa.column("updated_at", sa.DateTime(timezone=True)),
)
_profiles = sa.table(
    "sensor_profiles",
    sa.column("id", sa.BigInteger()),
    sa.column("sensor_id", sa.Uuid()),
    sa.column("version", sa.String()),
    sa.column("kind", sa.String()),
    sa.column("payload", JSONType),
    sa.column("input_unit", sa.String()),
    sa.column("display_unit", sa.String()),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("created_by", sa.Uuid()),
)
#: Made by the downgrade, read and dropped by the next upgrade: the units of the versions
#: whose values are in units the code before 0005 would not say (its columns are gone).
_stash = sa.table(
    "sensor_profile_units_0005",
    sa.column("profile_id", sa.BigInteger()),
    sa.column("input_unit", sa.String()),
    sa.column("display_unit", sa.String()),
)
_events = sa.table(
    "events",
    sa.column("project_id", sa.Uuid()),
    sa.column("sensor_id", sa.Uuid()),
    sa.column("kind", sa.String()),
    sa.column("payload", JSONType),
    sa.column("actor", sa.String()),
    sa.column("created_at", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    # Constant defaults: a plain ALTER TABLE .. ADD COLUMN on both databases.
    for column in ("input_unit", "display_unit"):
        op.add_column(
            "sensor_profiles",
            sa.Column(column, sa.String(length=32), server_default="", nullable=False),
        )
    op.add_column("metrics", sa.Column("unit", sa.String(length=32), nullable=True))
    conn = op.get_bind()
    units, report = Units(), Report()
    stashed: dict[int, tuple[str, str]] = {}
    if sa.inspect(conn).has_table(_stash.name):
        stashed = {r[0]: (r[1], r[2]) for r in conn.execute(sa.select(_stash))}
        op.drop_table(_stash.name)
    by_sensor: dict[Any, list[Any]] = {}
    for p in conn.execute(sa.select(_profiles)):
        by_sensor.setdefault(p.sensor_id, []).append(p)
    for s in conn.execute(sa.select(_sensors)).all():
        _upgrade_sensor(conn, units, report, s, by_sensor.get(s.id, []), stashed)
    report.emit()


def _upgrade_sensor(
    conn: Any,
    units: Units,
    report: Report,
    s: Any,
    versions: list[Any],
    stashed: dict[int, tuple[str, str]],
) -> None:
    declared_in = units.parse(s.input_unit)
    declared_display = units.parse(s.display_unit)
    current: tuple[Any, str, str] | None = None
    for p in versions:
        # A version the downgrade stashed was never current below 0005 (it made a new one).
        input_unit, display_unit = stashed.get(p.id) or _applied(
            units, p, s, declared_in, declared_display
        )
        conn.execute(
            _profiles.update()
            .where(_profiles.c.id == p.id)
            .values(input_unit=input_unit, display_unit=display_unit)
        )
        if p.version == s.profile_version:
            current = (p, input_unit, display_unit)
    if current is None:  # no profile row to follow: only the spellings change
        sensor_units = (
            declared_in.symbol if declared_in else s.input_unit,
            declared_display.symbol if declared_display else s.display_unit,
        )
        version = s.profile_version
    else:
        version, sensor_units = _settle_current(conn, units, report, s, versions, *current)
        if declared_display is not None and sensor_units[1] != declared_display.symbol:
            report.add(
                s,
                f"display_unit {s.display_unit!r} was not what its thermocouple profile "
                f"{current[0].version} converts into; set to {sensor_units[1]}, the unit of "
                "its values",
            )
    if declared_in is None and sensor_units[0] == s.input_unit:  # else said by _settle_current
        _unparsed(report, s, "input_unit", sensor_units[0])
    if declared_display is None:
        _unparsed(report, s, "display_unit", sensor_units[1])
    if (*sensor_units, version) != (s.input_unit, s.display_unit, s.profile_version):
        conn.execute(
            _sensors.update()
            .where(_sensors.c.id == s.id)
            .values(
                input_unit=sensor_units[0],
                display_unit=sensor_units[1],
                profile_version=version,
                updated_at=datetime.now(UTC),
            )
        )


def _unparsed(report: Report, sensor: Any, column: str, kept: str) -> None:
    text = getattr(sensor, column)
    what = "left as written" if kept == text else f"set to {kept}, the unit its values are in"
    report.add(sensor, f"{column} {text!r} is not a unit pint knows; {what}")


def _applied(
    units: Units, p: Any, s: Any, declared_in: Unit | None, declared_display: Unit | None
) -> tuple[str, str]:
    """The units version ``p``'s stored values were really computed with."""
    if p.kind != "thermocouple":
        # Other kinds never read a unit: the sensor's were only labels, and stay so.
        return (
            declared_in.symbol if declared_in else s.input_unit,
            declared_display.symbol if declared_display else s.display_unit,
        )
    payload = p.payload if isinstance(p.payload, dict) else {}
    read_as = _LEGACY_TC_INPUT.get(str(payload.get("input", "mV")), "mV")
    display = _LEGACY_TC_PAYLOAD.get(str(payload.get("display")))
    if display is None:
        display = _LEGACY_TC_DISPLAY.get(str(s.display_unit).strip().lower(), "degC")
    return _symbol(units, read_as), _symbol(units, display)


def _symbol(units: Units, text: str) -> str:
    unit = units.parse(text)
    assert unit is not None, text  # the frozen legacy units all parse
    return unit.symbol


def _settle_current(
    conn: Any,
    units: Units,
    report: Report,
    s: Any,
    versions: list[Any],
    p: Any,
    input_unit: str,
    display_unit: str,
) -> tuple[str, tuple[str, str]]:
    """The sensor's current version and units from now on: a new version if it declared an
    input unit its thermocouple can convert but did not (V instead of mV)."""
    if p.kind != "thermocouple" or input_unit == s.input_unit:
        return p.version, (input_unit, display_unit)
    applied = units.parse(input_unit)
    declared = units.parse(s.input_unit)
    assert applied is not None
    if declared is None or declared.dimension != applied.dimension:
        what = "not a unit" if declared is None else f"a {declared.dimension}"
        report.add(
            s,
            f"input_unit {s.input_unit!r} is {what}, but its thermocouple profile "
            f"{p.version} reads a {applied.dimension}: its readings were and are converted "
            f"from {applied.symbol}; input_unit set to {applied.symbol}. If the device sends "
            "another unit, PATCH the sensor's input_unit (a new version)",
        )
        return p.version, (input_unit, display_unit)
    if declared.pint_unit == applied.pint_unit:  # another spelling of the same unit
        return p.version, (input_unit, display_unit)
    new = _next_version(p.version, {v.version for v in versions})
    _add_version(
        conn,
        s,
        p,
        new,
        (declared.symbol, display_unit),
        f"input_unit {declared.symbol} declared, {applied.symbol} applied until now; "
        f"{p.version} and older keep {applied.symbol}",
    )
    report.add(
        s,
        f"input_unit declared {declared.symbol}, but its thermocouple profile read raw "
        f"values as {applied.symbol}: readings stored until now were converted from "
        f"{applied.symbol} and keep version {p.version} (now labelled {applied.symbol}); a new "
        f"version {new} converts from {declared.symbol} and is current: readings from now on "
        f"are converted from {declared.symbol}. If the device really sends {applied.symbol}, "
        f'PATCH /api/v1/sensors/{s.id} with {{"input_unit": "{applied.symbol}"}} '
        "(a further version)",
    )
    return new, (declared.symbol, display_unit)


def _add_version(conn: Any, s: Any, p: Any, new: str, labels: tuple[str, str], reason: str) -> None:
    """A copy of version ``p`` named ``new``, converting between ``labels``, made sensor
    ``s``'s current version, and a journal entry saying why."""
    now = datetime.now(UTC)
    input_unit, display_unit = labels
    conn.execute(
        _profiles.insert().values(
            sensor_id=s.id,
            version=new,
            kind=p.kind,
            payload=p.payload,
            input_unit=input_unit,
            display_unit=display_unit,
            created_at=now,
            created_by=None,
        )
    )
    conn.execute(
        _sensors.update().where(_sensors.c.id == s.id).values(profile_version=new, updated_at=now)
    )
    conn.execute(
        _events.insert().values(
            project_id=s.project_id,
            sensor_id=s.id,
            kind="sensor.profile_changed",
            payload={
                "version": new,
                "previous_version": p.version,
                "kind": p.kind,
                "input_unit": input_unit,
                "display_unit": display_unit,
                "reason": reason,
            },
            actor=_ACTOR,
            created_at=now,
        )
    )


def _next_version(current: str, taken: set[str]) -> str:
    """The name a unit change through the API gives a new version: the current one's with
    its trailing number raised (v1 -> v2), else with "-2" appended; the first not taken."""
    match = re.fullmatch(r"(.*?)(\d+)", current)
    stem, n = (match.group(1), int(match.group(2))) if match else (current + "-", 1)
    while True:
        n += 1
        name = f"{stem}{n}"
        if name not in taken and len(name) <= 64:
            return name
        if len(name) > 64:
            stem, n = "v", 1


def downgrade() -> None:
    """Before 0005, a thermocouple read mV and converted into the display its payload or its
    sensor named. A version whose values are in other units keeps them in a table of their
    own for the next upgrade, and a sensor whose current version is one of those gets a new
    version for the code below 0005 to convert with as it did (reported): the readings it
    stores are then not mixed up with those of the version before."""
    conn = op.get_bind()
    units, report = Units(), Report("migration 0005 downgrade (units)")
    by_sensor: dict[Any, list[Any]] = {}
    for p in conn.execute(sa.select(_profiles)):
        by_sensor.setdefault(p.sensor_id, []).append(p)
    stash: list[dict[str, Any]] = []
    for s in conn.execute(sa.select(_sensors)).all():
        versions = by_sensor.get(s.id, [])
        declared = units.parse(s.input_unit), units.parse(s.display_unit)
        for p in versions:
            # What the next upgrade would say without the stash (other kinds: the sensor's).
            legacy = _applied(units, p, s, *declared)
            if (p.input_unit, p.display_unit) == legacy:
                continue
            stash.append(
                {"profile_id": p.id, "input_unit": p.input_unit, "display_unit": p.display_unit}
            )
            if p.version != s.profile_version:  # always so for other kinds: their units are
                continue  # their sensor's
            new = _next_version(p.version, {v.version for v in versions})
            _add_version(
                conn,
                s,
                p,
                new,
                legacy,
                f"downgrade below 0005: {p.version} converts {p.input_unit} -> "
                f"{p.display_unit}, the code before 0005 {legacy[0]} -> {legacy[1]}",
            )
            report.add(
                s,
                f"version {p.version} converts from {p.input_unit} into {p.display_unit}; the "
                f"code before 0005 reads {legacy[0]} into {legacy[1]}, so readings from now on "
                f"go under a new version {new} (upgrading again labels each version with the "
                "units its readings were computed with)",
            )
    op.create_table(
        _stash.name,
        sa.Column("profile_id", sa.BigInteger(), primary_key=True),
        sa.Column("input_unit", sa.String(length=32), nullable=False),
        sa.Column("display_unit", sa.String(length=32), nullable=False),
    )
    if stash:
        conn.execute(_stash.insert(), stash)
    report.emit()
    op.drop_column("metrics", "unit")
    with op.batch_alter_table("sensor_profiles") as batch:
        batch.drop_column("display_unit")
        batch.drop_column("input_unit")
