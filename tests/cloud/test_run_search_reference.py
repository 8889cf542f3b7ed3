"""GET /api/v1/runs against a brute-force reference: random runs (params of mixed types, tags,
statuses, metrics, telemetry summarised or not), random filters and sorts, every page walked
with a random page size; the answer must be what a Python evaluation of the grammar over
every stored reading and metric point says, in order, on both databases."""

from __future__ import annotations

import os
import random
from datetime import datetime
from typing import Any
from urllib.parse import quote

import pytest

from tests.cloud.conftest import Api
from tests.cloud.search_world import (
    METRICS,
    SENSORS,
    TAGS,
    TEXTS,
    Builder,
    World,
    expected,
)

SEED = int(os.environ.get("BENCHLINK_SEARCH_SEED", "1906"))
SEARCHES = 60
OP_LIST = ("=", "!=", "<", "<=", ">", ">=")


@pytest.fixture
def world(api: Api) -> World:
    return Builder(api, random.Random(SEED)).world(runs=16, other_runs=4)


def number_text(rng: random.Random, value: float) -> str:
    """A number as a user may write it: 400, 400.0, 4e2."""
    if value == int(value) and rng.random() < 0.5:
        return rng.choice([str(int(value)), f"{value:.1f}", f"{value:e}"])
    return repr(value)


def summary_values(w: World, kind: str, name: str, summary: str) -> list[float]:
    if kind == "metric":
        index = ("count", "min", "max", "last").index(summary)
        return [float(v[index]) for (_, n), v in w.metrics.items() if n == name]
    values = [vs for (_, n), vs in w.readings.items() if n == name]
    pick = {"count": len, "min": min, "max": max, "mean": lambda v: sum(v) / len(v)}[summary]
    return [float(pick(v)) for v in values]


def random_term(rng: random.Random, w: World) -> tuple[str, tuple[Any, ...]]:
    """(the term as the query string writes it, the reference's term)."""
    op = rng.choice(OP_LIST)
    kind = rng.choice(["param", "param", "metric", "telemetry", "time", "plain"])
    if kind == "param":
        name = rng.choice(["setpoint", "mode", "a.b"])
        if rng.random() < 0.5:
            value = rng.choice([350.0, 400.0, 425.5, 450.0, 3.0, 1.0, 2.0, 412.25])
            return f"param.{name}{op}{number_text(rng, value)}", ("param", name, "", op, value)
        words = rng.choice([*TEXTS, "true", "false", "x", "hot", "f"])
        shown = f'"{words}"' if words[0].isdigit() or rng.random() < 0.3 else words
        return f"param.{name}{op}{shown}", ("param", name, "", op, words)
    if kind in ("metric", "telemetry"):
        name = rng.choice(METRICS if kind == "metric" else SENSORS)
        summaries = (
            ("min", "max", "last", "count") if kind == "metric" else ("min", "max", "mean", "count")
        )
        summary = rng.choice(summaries)
        seen = summary_values(w, kind, name, summary) or [1.0]
        value = rng.choice(seen) + rng.choice([0.0, 0.0, 0.5, -0.5])
        return (
            f"{kind}.{name}.{summary}{op}{number_text(rng, value)}",
            (kind, name, summary, op, value),
        )
    if kind == "time":
        column = rng.choice(["created_at", "started_at", "ended_at"])
        op = rng.choice(["<", "<=", ">", ">="])
        stamps = [r[column] for r in w.runs.values() if r[column] is not None]
        at = datetime.fromisoformat(rng.choice(stamps).replace("Z", "+00:00"))
        shown = at.isoformat()
        shown = shown.replace("+00:00", "Z") if rng.random() < 0.5 else shown
        return f"{column}{op}{shown}", (column, "", "", op, at)
    plain = rng.choice(["tag", "status", "experiment_id"])
    if plain == "tag":
        tag = rng.choice(TAGS)
        return f"tag={tag}", ("tag", tag)
    if plain == "status":
        statuses = rng.sample(["draft", "running", "succeeded", "failed"], rng.randint(1, 2))
        return "&".join(f"status={s}" for s in statuses), ("status", statuses)
    experiment = rng.choice(w.experiments)
    return f"experiment_id={experiment}", ("experiment_id", experiment)


def random_sort(rng: random.Random) -> tuple[str, tuple[str, str, str], bool]:
    kind, name, summary = rng.choice(
        [
            ("created_at", "", ""),
            ("started_at", "", ""),
            ("ended_at", "", ""),
            ("param", "setpoint", ""),
            ("param", "mode", ""),
            ("metric", "loss", "min"),
            ("metric", "acc", "last"),
            ("metric", "loss", "count"),
            ("telemetry", "probe", "max"),
            ("telemetry", "jacket", "mean"),
            ("telemetry", "probe", "count"),
        ]
    )
    desc = rng.random() < 0.5
    spelled = ".".join(p for p in (kind, name, summary) if p)
    return ("-" if desc else "") + spelled, (kind, name, summary), desc


def encoded(rng: random.Random, part: str) -> str:
    """A comparison as sent: as written (but a + is a space in a query string: %2B), or
    percent-encoded whole, operator included."""
    if part.split("=", 1)[0] in ("tag", "status", "experiment_id") or rng.random() < 0.5:
        return part.replace("+", "%2B")
    return quote(part, safe="")


def walk(api: Api, w: World, query: str, limit: int) -> list[str]:
    names: list[str] = []
    cursor = None
    for _ in range(100):
        url = f"/api/v1/runs?{query}&limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        r = api.get(url, headers=w.owner.headers())
        assert r.status_code == 200, (query, r.text)
        page = r.json()
        assert len(page["items"]) <= limit
        names += [item["name"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return names
    raise AssertionError(f"more than 100 pages for {query}")


def test_random_searches_match_a_python_evaluation_in_one_project_only(
    api: Api, world: World
) -> None:
    rng = random.Random(SEED + 1)
    nonempty = 0
    for i in range(SEARCHES):
        picked = [random_term(rng, world) for _ in range(rng.randint(0, 3))]
        sort_text, sort, desc = random_sort(rng)
        parts = [encoded(rng, text) for text, _ in picked] + [f"sort={sort_text}"]
        want = expected(world, [term for _, term in picked], sort, desc)
        got = walk(api, world, "&".join(parts), rng.randint(1, 6))
        assert got == want, (i, parts)
        nonempty += bool(want)
    # The random filters must find something often enough to test the order of pages.
    assert nonempty >= SEARCHES // 3, nonempty
    # (One world for both checks: building it is most of the time.)
    another_project_searches_its_own_runs_only(api, world)


def another_project_searches_its_own_runs_only(api: Api, world: World) -> None:
    """The other project has sensors of the same names and runs with the same params."""
    for query in ("", "param.setpoint>0", "telemetry.probe.count>0", "sort=param.setpoint"):
        mine = api.get(f"/api/v1/runs?{query}&limit=500", headers=world.owner.headers()).json()
        theirs = api.get(f"/api/v1/runs?{query}&limit=500", headers=world.other.headers()).json()
        mine_ids = {run["id"] for run in mine["items"]}
        their_ids = {run["id"] for run in theirs["items"]}
        assert mine_ids <= set(world.runs), query
        assert their_ids <= world.other_runs, query
    everything = api.get("/api/v1/runs?limit=500", headers=world.other.headers()).json()
    assert {run["id"] for run in everything["items"]} == world.other_runs
