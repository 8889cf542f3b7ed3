"""Alarm rules at the edge: pulled from the cloud (:mod:`edge.rules`), cached in the buffer,
evaluated in each group commit's transaction on the readings it stores.

The rules and the evaluator are the cloud's (:mod:`common.alarm_eval`), on the value the
cloud will store (the sensor's conversion profile, pulled with its rules, applied with
:mod:`common.profiles`). So a bench cut off from the cloud still logs each alarm (one line
when raised, one when cleared) and ``benchlink-edge status`` shows those in force. The cloud
stays the record: nothing here is sent; it raises the same alarm once at ingest, with the
reading's time, marked late when the readings come late.

Cost: a commit with no rules cached pays one test. With rules, each of their sensors'
readings is converted and timestamped once per commit; a rule whose state cannot change
(:func:`common.alarm_eval.quiet` on the least and greatest value) makes no pass per reading;
the rules' state is written back with one statement per commit, in its transaction (a
restart goes on where the last commit left it, a rolled-back commit is evaluated again).

``stale``: by the edge's clock, the time the last reading was *stored* (captured) plus
``after_s`` (:meth:`Evaluator.stale_tick`, the daemon's maintenance); the next reading
clears it.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from bisect import bisect_right
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from common.alarm_eval import Spec, State, evaluate
from common.edge_rules import EdgeRule, EdgeRules
from edge.buffer.records import NewReading, Write, WriteResult, ts_text

if TYPE_CHECKING:
    from common.profiles import Converter

log = logging.getLogger("benchlink.edge.alarms")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US = timedelta(microseconds=1)
#: how many cleared alarms ``status`` lists (newest first)
RECENT = 10


#: a log line to write once the transaction is committed: (level, message)
Line = tuple[int, str]


def micros(ts: datetime) -> int:
    return (ts - EPOCH) // US


def at(us: int) -> str:
    return ts_text(EPOCH + us * US)


@dataclass
class Rule:
    rule: EdgeRule
    spec: Spec
    state: State
    #: the edge alarm it holds open (``edge_alarms.id``)
    alarm: int | None = None

    @property
    def id(self) -> str:
        return str(self.rule.id)


@dataclass
class Sensor:
    sensor_id: str
    #: each profile version's start (ascending) and converter (None: not evaluated, e.g.
    #: a version in another display unit than the rules')
    effective: list[int]
    converters: list[Converter | None]
    rules: list[Rule]
    #: recent (timestamp, value) readings, for ``rate`` rules (None: not read yet)
    history: deque[tuple[int, float]] | None = None
    window_us: int = 0

    def converter_at(self, stamp: int) -> Converter | None:
        """The converter of the version the cloud converts a reading stamped then with."""
        i = bisect_right(self.effective, stamp) - 1
        return self.converters[i] if i >= 0 else None

    def applying(self, run_id: str) -> list[Rule]:
        """The run's own rules, and the sensor's of the kinds the run has none of."""
        own = [r for r in self.rules if r.rule.run_id is not None and str(r.rule.run_id) == run_id]
        kinds = {r.rule.kind for r in own}
        return own + [r for r in self.rules if r.rule.run_id is None and r.rule.kind not in kinds]


@dataclass
class Readings:
    """A sensor's readings of one commit, converted, in timestamp order."""

    stamps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    metas: list[dict[str, Any] | None] = field(default_factory=list)
    bounds: dict[int, tuple[float, float]] = field(default_factory=dict)

    def tail_bounds(self, start: int) -> tuple[float, float]:
        got = self.bounds.get(start)
        if got is None:
            tail = self.values[start:] if start else self.values
            got = self.bounds[start] = (min(tail), max(tail))
        return got


class Evaluator:
    """The cached rules of every sensor and their state, as of the last commit."""

    def __init__(self) -> None:
        self.sensors: dict[str, Sensor] = {}
        #: a transaction that evaluated was rolled back: read the state again first
        self.dirty = False

    def has_stale(self) -> bool:
        """Whether a stale rule may be cached (True until the state is read again)."""
        return self.dirty or any(
            r.rule.kind == "stale" for s in self.sensors.values() for r in s.rules
        )

    def load(self, c: sqlite3.Connection) -> None:
        self.sensors = {}
        self.dirty = False
        states = {
            row[0]: row[1:]
            for row in c.execute(
                "SELECT rule_id, last_ts_us, holding_since_us, open_alarm FROM alarm_state"
            )
        }
        for sid, doc in c.execute("SELECT sensor_id, doc FROM alarm_sensors").fetchall():
            try:
                rules = EdgeRules.model_validate_json(doc)
            except ValidationError as exc:  # a file edited by hand: the next pull replaces it
                log.warning("alarm rules of sensor %s: cached ones unreadable (%s)", sid, exc)
                continue
            if not rules.rules:
                continue
            loaded = []
            for r in rules.rules:
                last, hold, alarm = states.get(str(r.id), (None, None, None))
                loaded.append(Rule(r, r.spec(), State(last, hold, alarm is not None), alarm))
            windows = [r.window_s or 0.0 for r in rules.rules if r.kind == "rate"]
            effective, converters = _converters(sid, rules)
            window_us = int(max(windows, default=0) * 1e6)
            self.sensors[sid] = Sensor(sid, effective, converters, loaded, window_us=window_us)

    # -- the group commit ------------------------------------------------------------------------

    def after_writes(
        self,
        c: sqlite3.Connection,
        writes: Sequence[Write],
        results: Sequence[object],
        now: float,
    ) -> list[Line]:
        """Evaluate the readings the commit stored (inside its transaction); the log lines
        of the alarms raised and cleared, to log once it is committed."""
        if self.dirty:
            self.load(c)
        if not self.sensors:
            return []
        groups: dict[str, list[NewReading]] = {}
        for w, res in zip(writes, results, strict=True):
            if not isinstance(res, WriteResult) or res.duplicate or not res.committed:
                continue
            for r in w.readings:
                if r.sensor_id in self.sensors:
                    groups.setdefault(r.sensor_id, []).append(r)
        if not groups:
            return []
        lines: list[Line] = []
        now_us = int(now * 1e6)
        bindings = dict(c.execute("SELECT sensor_id, run_id FROM sensors").fetchall())
        touched: list[Rule] = []
        for sid, readings in groups.items():
            s = self.sensors[sid]
            rules = s.applying(bindings.get(sid, ""))
            touched += rules
            lines += self._sensor(c, s, bindings.get(sid), rules, readings, now_us)
        _store(c, touched)
        return lines

    def _sensor(
        self,
        c: sqlite3.Connection,
        s: Sensor,
        run_id: str | None,
        rules: list[Rule],
        readings: list[NewReading],
        now_us: int,
    ) -> list[Line]:
        lines: list[Line] = []
        for rule in rules:
            if rule.rule.kind == "stale":  # the sensor speaks again
                if rule.state.open:
                    lines.append(_clear(c, s, rule, now_us, None, "a reading arrived"))
                rule.state.last_ts_us = now_us
        got = _converted(s, readings)
        if got is None or not got.stamps:
            return lines
        if s.window_us and s.history is None:
            s.history = _seed_history(c, s, got.stamps[0])
        for rule in rules:
            if rule.rule.kind != "stale":
                lines += self._rule(c, s, run_id, rule, got)
        if s.history is not None:
            s.history.extend(zip(got.stamps, got.values, strict=True))
            edge = got.stamps[-1] - s.window_us
            while s.history and s.history[0][0] < edge:
                s.history.popleft()
        return lines

    def _rule(
        self, c: sqlite3.Connection, s: Sensor, run_id: str | None, rule: Rule, got: Readings
    ) -> list[Line]:
        last = rule.state.last_ts_us
        start = 0 if last is None or got.stamps[0] > last else bisect_right(got.stamps, last)
        ts = got.stamps[start:] if start else got.stamps
        if not ts:
            return []  # older than what it evaluated: out of order, as in the cloud
        vs = got.values[start:] if start else got.values
        ms = got.metas[start:] if start else got.metas
        history = None
        if rule.rule.kind == "rate" and s.history and last is not None:
            lo = ts[0] - int((rule.rule.window_s or 0.0) * 1e6)
            before = [(t, v) for t, v in s.history if lo <= t <= min(last, ts[0] - 1)]
            history = ([t for t, _ in before], [v for _, v in before])
        bounds = got.tail_bounds(start) if rule.rule.kind != "fault" else None
        lines = []
        for change in evaluate(rule.spec, rule.state, ts, vs, ms, history, bounds):
            t, v = ts[change.index], vs[change.index]
            if change.what == "raise":
                lines.append(_raise(c, s, run_id, rule, t, v))
            else:
                lines.append(_clear(c, s, rule, t, v, None))
        return lines

    # -- by the clock ----------------------------------------------------------------------------

    def stale_tick(self, c: sqlite3.Connection, now: float) -> list[Line]:
        """Raise the alarm of every stale rule whose sensor stored nothing for ``after_s``."""
        if self.dirty:
            self.load(c)
        bindings = dict(c.execute("SELECT sensor_id, run_id FROM sensors").fetchall())
        lines, touched = [], []
        now_us = int(now * 1e6)
        for s in self.sensors.values():
            for rule in s.applying(bindings.get(s.sensor_id, "")):
                last = rule.state.last_ts_us
                if rule.rule.kind != "stale" or rule.state.open or last is None:
                    continue
                due = last + int((rule.rule.after_s or 0.0) * 1e6)
                if now_us >= due:
                    lines.append(_raise(c, s, bindings.get(s.sensor_id), rule, due, None))
                    touched.append(rule)
        _store(c, touched)
        return lines

    # -- rules pulled ----------------------------------------------------------------------------

    def replace(self, c: sqlite3.Connection, sensor_id: str, rules: EdgeRules, now: float) -> int:
        """The sensor's rules as the cloud has them now: state kept for a rule unchanged, a
        changed one's hold starts again (its open alarm stays, as in the cloud), a deleted
        one's open alarm clears. The number of rules."""
        doc = rules.model_dump_json()
        c.execute(
            "INSERT INTO alarm_sensors (sensor_id, doc, pulled_at) VALUES (?, ?, ?)"
            " ON CONFLICT (sensor_id) DO UPDATE SET doc = excluded.doc,"
            " pulled_at = excluded.pulled_at",
            (sensor_id, doc, now),
        )
        kept = {str(r.id): r.model_dump_json() for r in rules.rules}
        old = c.execute(
            "SELECT rule_id, rule, open_alarm FROM alarm_state WHERE sensor_id = ?", (sensor_id,)
        ).fetchall()
        for rule_id, text, alarm in old:
            if rule_id not in kept:
                if alarm is not None:
                    _close(c, alarm, at(int(now * 1e6)), None, "rule deleted")
                c.execute("DELETE FROM alarm_state WHERE rule_id = ?", (rule_id,))
            elif text != kept[rule_id]:
                c.execute(
                    "UPDATE alarm_state SET rule = ?, holding_since_us = NULL WHERE rule_id = ?",
                    (kept[rule_id], rule_id),
                )
        c.executemany(
            "INSERT OR IGNORE INTO alarm_state (rule_id, sensor_id, rule) VALUES (?, ?, ?)",
            [(rid, sensor_id, text) for rid, text in kept.items()],
        )
        self.dirty = True  # read back at the next use, on the buffer's thread
        return len(kept)

    def forget(self, c: sqlite3.Connection, keep: set[str], now: float) -> list[str]:
        """Drop the cached rules of the sensors not in ``keep`` (gone from this edge's
        config) and clear their alarms in force: a sensor the edge no longer reads is not
        silent, and its ``stale`` rule must not raise. The sensors dropped."""
        gone = [
            sid for (sid,) in c.execute("SELECT sensor_id FROM alarm_sensors") if sid not in keep
        ]
        when = at(int(now * 1e6))
        for sid in gone:
            for (alarm,) in c.execute(
                "SELECT open_alarm FROM alarm_state WHERE sensor_id = ? AND open_alarm IS NOT NULL",
                (sid,),
            ).fetchall():
                _close(c, alarm, when, None, "sensor removed from this edge's config")
            c.execute("DELETE FROM alarm_state WHERE sensor_id = ?", (sid,))
            c.execute("DELETE FROM alarm_sensors WHERE sensor_id = ?", (sid,))
        if gone:
            self.dirty = True  # read back at the next use, on the buffer's thread
        return gone


def _converters(sensor_id: str, rules: EdgeRules) -> tuple[list[int], list[Converter | None]]:
    # Imported with the first rules only: the units' registry (pint) is megabytes that an
    # edge without rules need not hold.
    from common.profiles import build_converter

    effective: list[int] = []
    converters: list[Converter | None] = []
    for p in rules.profiles:
        effective.append(micros(p.effective_from))
        if p.display_unit != rules.display_unit:
            converters.append(None)  # as in the cloud: not in the rules' unit, not evaluated
            continue
        try:
            converter = build_converter(
                p.kind, p.payload, p.display_unit, p.input_unit, lenient=True
            )
        except ValueError as exc:  # ProfileError, UnitMismatch
            log.warning(
                "alarm rules of sensor %s: its readings converted by profile version %s are"
                " not evaluated at the edge, the version cannot be used here (%s)",
                sensor_id,
                p.version,
                exc,
            )
            converter = None
        converters.append(converter)
    return effective, converters


def _converted(s: Sensor, readings: list[NewReading]) -> Readings | None:
    """The readings as the cloud will store them (value in the display unit, by the profile
    version of their timestamp), in timestamp order; those it would refuse are left out."""
    if not s.effective:
        return None
    newest_from, newest = s.effective[-1], s.converters[-1]
    out = Readings()
    for r in readings:
        try:
            if not math.isfinite(r.raw_value):
                continue
            stamp = micros(r.timestamp)
            converter = newest if stamp >= newest_from else s.converter_at(stamp)
            if converter is None:
                continue
            value = converter.convert(r.raw_value, r.meta)
        except (TypeError, ValueError, OverflowError):  # ConversionError is a ValueError
            continue
        out.stamps.append(stamp)
        out.values.append(value)
        out.metas.append(r.meta)
    if out.stamps != sorted(out.stamps):
        order = sorted(range(len(out.stamps)), key=out.stamps.__getitem__)
        out.stamps = [out.stamps[k] for k in order]
        out.values = [out.values[k] for k in order]
        out.metas = [out.metas[k] for k in order]
    return out


def _seed_history(c: sqlite3.Connection, s: Sensor, first_us: int) -> deque[tuple[int, float]]:
    """The sensor's stored readings within the widest rate window before ``first_us`` (a
    restarted daemon's rate looks back as the cloud's does)."""
    since = at(first_us - s.window_us)
    rows = c.execute(
        "SELECT ts, raw_value, meta FROM readings WHERE sensor_id = ? AND ts >= ?"
        " ORDER BY ts DESC LIMIT 100000",
        (s.sensor_id, since),
    ).fetchall()
    seeded = _converted(
        s,
        [
            NewReading(s.sensor_id, datetime.fromisoformat(ts), raw, json.loads(m) if m else None)
            for ts, raw, m in rows
        ],
    )
    if seeded is None:
        return deque()
    return deque((t, v) for t, v in zip(seeded.stamps, seeded.values, strict=True) if t < first_us)


def _describe(rule: EdgeRule) -> str:
    fields = ("threshold", "low", "high", "window_s", "after_s", "for_s", "hysteresis")
    given = [f"{n}={getattr(rule, n):g}" for n in fields if getattr(rule, n)]
    return f"{rule.kind} {' '.join(given)}".strip()


def _raise(
    c: sqlite3.Connection, s: Sensor, run_id: str | None, rule: Rule, t: int, v: float | None
) -> Line:
    when = at(t)
    cur = c.execute(
        "INSERT INTO edge_alarms (sensor_id, rule_id, kind, run_id, rule, raised_at, value)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (s.sensor_id, rule.id, rule.rule.kind, run_id, rule.rule.model_dump_json(), when, v),
    )
    rule.alarm = cur.lastrowid
    rule.state.open = True
    value = "-" if v is None else f"{v:g}"
    return logging.WARNING, (
        f"alarm raised at the edge: sensor {s.sensor_id} rule {rule.id} ({_describe(rule.rule)})"
        f" value {value} at {when}"
    )


def _clear(
    c: sqlite3.Connection, s: Sensor, rule: Rule, t: int, v: float | None, why: str | None
) -> Line:
    when = at(t)
    if rule.alarm is not None:
        _close(c, rule.alarm, when, v, why)
    rule.alarm = None
    rule.state.open = False
    value = "-" if v is None else f"{v:g}"
    return logging.INFO, (
        f"alarm cleared at the edge: sensor {s.sensor_id} rule {rule.id}"
        f" ({_describe(rule.rule)}) value {value} at {when}"
    )


def _close(c: sqlite3.Connection, alarm: int, when: str, v: float | None, why: str | None) -> None:
    c.execute(
        "UPDATE edge_alarms SET cleared_at = ?, cleared_value = ?, cleared_why = ?"
        " WHERE id = ? AND cleared_at IS NULL",
        (when, v, why, alarm),
    )


def _store(c: sqlite3.Connection, rules: Iterable[Rule]) -> None:
    c.executemany(
        "UPDATE alarm_state SET last_ts_us = ?, holding_since_us = ?, open_alarm = ?"
        " WHERE rule_id = ?",
        [
            (r.state.last_ts_us, r.state.holding_since_us, r.alarm if r.state.open else None, r.id)
            for r in rules
        ],
    )


def report(c: sqlite3.Connection) -> dict[str, Any]:
    """For ``status``: each sensor's cached rules (how many, when pulled), the alarms in
    force at the edge and the latest cleared ones."""
    rules = {
        sid: {
            "rules": len(json.loads(doc).get("rules") or []),
            "pulled_at": datetime.fromtimestamp(pulled, UTC).isoformat(),
        }
        for sid, doc, pulled in c.execute("SELECT sensor_id, doc, pulled_at FROM alarm_sensors")
    }
    columns = "id, sensor_id, rule_id, kind, run_id, raised_at, value, cleared_at, cleared_value"
    in_force = _dicts(
        c, f"SELECT {columns} FROM edge_alarms WHERE cleared_at IS NULL ORDER BY id DESC"
    )
    recent = _dicts(
        c,
        f"SELECT {columns} FROM edge_alarms WHERE cleared_at IS NOT NULL ORDER BY id DESC"
        f" LIMIT {RECENT}",
    )
    return {"rules": rules, "in_force": in_force, "recent": recent}


def _dicts(c: sqlite3.Connection, sql: str) -> list[dict[str, Any]]:
    cur = c.execute(sql)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur]
