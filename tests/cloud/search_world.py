"""Random runs with params, tags, metrics and telemetry, built through the API, and a plain
Python evaluation of the run search grammar over what the database holds (every reading
and metric point, not the summaries the search reads)."""

from __future__ import annotations

import operator
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update

from cloud.db.models import Metric, Sensor, TelemetryBatch, TelemetryReading, TelemetryRollup
from tests.cloud.conftest import LONG_AGO, Api, Identity

SENSORS = ("probe", "jacket")
METRICS = ("loss", "acc")
TAGS = ("k", "n", "gold")
TEXTS = ("fast", "Fast", "slow", "élan", "400")
T0 = datetime(2026, 1, 1, 8, 0, 0, tzinfo=LONG_AGO.tzinfo)
OPS: dict[str, Any] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def quarter(rng: random.Random, lo: int, hi: int) -> float:
    """Values exact in binary, so that sums (and means) are the same in any order."""
    return rng.randint(lo * 4, hi * 4) / 4


def random_params(rng: random.Random) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if rng.random() < 0.8:
        params["setpoint"] = rng.choice([350, 400, 400.0, 425.5, 450, "400", "hot"])
    if rng.random() < 0.6:
        params["mode"] = rng.choice([*TEXTS, 3, True, False])
    if rng.random() < 0.5:
        params["a.b"] = rng.choice([1, 2, "x"])
    return params


@dataclass
class World:
    api: Api
    owner: Identity
    other: Identity
    experiments: list[str]
    #: run id -> the run as the API answers it
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    other_runs: set[str] = field(default_factory=set)
    #: (run id, sensor name) -> values of its readings
    readings: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    #: (run id, metric name) -> (count, min, max, last)
    metrics: dict[tuple[str, str], tuple[int, float, float, float]] = field(default_factory=dict)


class Builder:
    def __init__(self, api: Api, rng: random.Random) -> None:
        self.api, self.rng = api, rng
        self.sensor_ids: dict[tuple[str, str], tuple[str, str]] = {}  # (project, name)
        self.clock: dict[str, int] = defaultdict(int)  # sensor id -> next free second

    def world(self, runs: int, other_runs: int) -> World:
        api = self.api
        owner, other = api.project("search"), api.project("elsewhere")
        for who in (owner, other):
            for name in SENSORS:
                self.sensor_ids[(who.project_id, name)] = api.sensor(who, name=name)
        w = World(api, owner, other, [api.experiment(owner, "e1"), api.experiment(owner, "e2")])
        other_exp = api.experiment(other, "e1")
        for i in range(runs):
            w.runs[self.run(owner, self.rng.choice(w.experiments), f"r{i:02d}")] = {}
        for i in range(other_runs):
            w.other_runs.add(self.run(other, other_exp, f"other{i}"))
        for run_id in list(w.runs):
            w.runs[run_id] = api.get(f"/api/v1/runs/{run_id}", headers=owner.headers()).json()
        self.truth(w)
        return w

    def run(self, who: Identity, experiment_id: str, name: str) -> str:
        rng, api = self.rng, self.api
        body = {
            "name": name,
            "params": random_params(rng),
            "tags": rng.sample(TAGS, rng.randint(0, 2)),
            "status": rng.choice(["draft", "running", "running", "running"]),
        }
        run_id = api.run(who, experiment_id, body)
        if body["status"] == "running":
            self.metrics(who, run_id)
            for ordinal in range(1, rng.randint(1, 2) + 1):
                self.session(who, run_id, ordinal)
            final = rng.choice([None, "succeeded", "failed"])
            if final:
                r = api.patch(f"/api/v1/runs/{run_id}", {"status": final}, headers=who.headers())
                assert r.status_code == 200, r.text
        return run_id

    def metrics(self, who: Identity, run_id: str) -> None:
        points = [
            {"name": name, "step": self.rng.randint(0, 5), "value": quarter(self.rng, -4, 4)}
            for name in METRICS
            if self.rng.random() < 0.7
            for _ in range(self.rng.randint(1, 6))
        ]
        if points:
            r = self.api.post(
                f"/api/v1/runs/{run_id}/metrics", {"metrics": points}, headers=who.headers()
            )
            assert r.status_code == 201, r.text

    def session(self, who: Identity, run_id: str, ordinal: int) -> None:
        api, rng = self.api, self.rng
        session_id = api.session(who, run_id, ordinal)
        api.backdate(session_id, LONG_AGO)
        for name in SENSORS:
            if rng.random() < 0.7:
                sensor_id, token = self.sensor_ids[(who.project_id, name)]
                ids = {
                    "sensor_id": sensor_id,
                    "token": token,
                    "run_id": run_id,
                    "capture_session_id": session_id,
                }
                self.batches(ids, legacy=rng.random() < 0.3)
        r = api.post(
            f"/api/v1/runs/{run_id}/capture-sessions/{session_id}/stop", {}, headers=who.headers()
        )
        assert r.status_code == 200, r.text

    def batches(self, ids: dict[str, str], *, legacy: bool) -> None:
        """1-4 batches, dense or sparse (so summarised from different levels); ``legacy``:
        the first ones end up as batches stored before summaries existed (migration 0004)."""
        rng = self.rng
        count = rng.randint(1, 4)
        for k in range(count):
            n = rng.choice([1, 2, 5, 30])
            step = rng.choice([0.02, 1, 400])  # seconds between readings
            start = self.clock[ids["sensor_id"]]
            stamps = [T0 + timedelta(seconds=start + step * j) for j in range(n)]
            self.clock[ids["sensor_id"]] = start + int(step * n) + 1
            readings = [
                {
                    "timestamp": t.isoformat().replace("+00:00", "Z"),
                    "raw_value": quarter(rng, 150, 230),
                }
                for t in stamps
            ]
            r = self.api.ingest(ids, readings)
            assert r.status_code == 202, r.text
            if legacy and k == count // 2:
                self.forget_summaries(ids)

    def forget_summaries(self, ids: dict[str, str]) -> None:
        """What a database upgraded to migration 0004 holds for batches stored before it: no
        summaries, ``rollup_level`` NOT_ROLLED (7). Batches stored after add summaries again."""
        sensor, session = uuid.UUID(ids["sensor_id"]), uuid.UUID(ids["capture_session_id"])
        with self.api.services.sessionmaker.begin() as db:
            db.execute(
                delete(TelemetryRollup).where(
                    TelemetryRollup.sensor_id == sensor,
                    TelemetryRollup.capture_session_id == session,
                )
            )
            db.execute(
                update(TelemetryBatch)
                .where(
                    TelemetryBatch.sensor_id == sensor, TelemetryBatch.capture_session_id == session
                )
                .values(rollup_level=7)
            )

    def truth(self, w: World) -> None:
        with self.api.services.sessionmaker() as db:
            rows = db.execute(
                select(TelemetryReading.run_id, Sensor.name, TelemetryReading.value).join(
                    Sensor, Sensor.id == TelemetryReading.sensor_id
                )
            ).all()
            for run_id, name, value in rows:
                w.readings.setdefault((str(run_id), name), []).append(value)
            points = db.execute(
                select(Metric.run_id, Metric.name, Metric.step, Metric.id, Metric.value)
            ).all()
        by: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for run_id, name, step, ident, value in points:
            by[(str(run_id), name)].append((step, ident, value))
        for key, pts in by.items():
            values = [v for _, _, v in pts]
            w.metrics[key] = (len(pts), min(values), max(values), max(pts)[2])


# --- the grammar, evaluated in Python ------------------------------------------------------


def param_kinds(value: Any) -> tuple[float | None, str | None]:
    """(number, text) of a param value, as the search types it."""
    if isinstance(value, bool):
        return None, "true" if value else "false"
    if isinstance(value, int | float):
        return float(value), None
    if isinstance(value, str):
        return None, value
    return None, None


def field_value(w: World, run: dict[str, Any], kind: str, name: str, summary: str) -> Any:
    if kind in ("created_at", "started_at", "ended_at"):
        raw = run[kind]
        return None if raw is None else datetime.fromisoformat(raw.replace("Z", "+00:00"))
    if kind == "metric":
        found = w.metrics.get((run["id"], name))
        if found is None:
            return None
        return dict(zip(("count", "min", "max", "last"), found, strict=True))[summary]
    values = w.readings.get((run["id"], name))
    if not values:
        return None
    return {
        "count": len(values),
        "min": min(values),
        "max": max(values),
        "mean": sum(values) / len(values),
    }[summary]


def matches(w: World, run: dict[str, Any], term: tuple[Any, ...]) -> bool:
    kind = term[0]
    if kind == "experiment_id":
        return bool(run["experiment_id"] in term[1])
    if kind == "status":
        return bool(run["status"] in term[1])
    if kind == "tag":
        return term[1] in run["tags"]
    _, name, summary, op, value = term
    if kind == "param":
        if name not in run["params"]:
            return False
        number, words = param_kinds(run["params"][name])
        mine = number if isinstance(value, float) else words
    else:
        mine = field_value(w, run, kind, name, summary)
    return mine is not None and bool(OPS[op](mine, value))


def sort_key(w: World, run: dict[str, Any], sort: tuple[str, str, str], desc: bool) -> Any:
    kind, name, summary = sort
    tail = (datetime.fromisoformat(run["created_at"].replace("Z", "+00:00")), run["id"])
    if kind == "created_at":
        return tail
    if kind == "param":
        number, words = param_kinds(run["params"].get(name))
        ranks = (2, 1, 0) if desc else (0, 1, 2)
        rank = ranks[0] if number is not None else ranks[1] if words is not None else ranks[2]
        return (rank, number or 0.0, words or "", *tail)
    value = field_value(w, run, kind, name, summary)
    missing = value is None
    rank = (0 if missing else 1) if desc else (1 if missing else 0)
    return (rank, value if value is not None else 0, *tail)


def expected(
    w: World, terms: list[tuple[Any, ...]], sort: tuple[str, str, str], desc: bool
) -> list[str]:
    # status= and experiment_id= repeated (in one term or several) mean any of them.
    anyof: dict[str, list[Any]] = {}
    for t in terms:
        if t[0] in ("status", "experiment_id"):
            anyof.setdefault(t[0], []).extend(t[1] if t[0] == "status" else [t[1]])
    terms = [t for t in terms if t[0] not in anyof] + [(k, v) for k, v in anyof.items()]
    found = [run for run in w.runs.values() if all(matches(w, run, t) for t in terms)]
    found.sort(key=lambda run: sort_key(w, run, sort, desc), reverse=desc)
    return [run["name"] for run in found]
