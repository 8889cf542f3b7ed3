"""Alarm evaluation's cost at ingest: the same batches into sensors with five rules and into
sensors without, taking turns of a few batches on one cloud; the figure is the ratio of the
two rates.

Two workloads, both measured and reported:

- the row's figure: :data:`SENSORS` sensors, each one's batches sent in timestamp order by
  its own client, one at a time, as an edge syncs them (the concurrency comes from the many
  sensors);
- in the row's ``extra`` (and printed), the worst case: one sensor's batches from
  ``ingest_clients`` concurrent clients, which reach the cloud out of timestamp order. A
  rule does not evaluate readings older than the newest it evaluated, so a late batch
  breaks a hold or splits an excursion in two: this workload raises several times the
  alarms the same wave sent in order does, each a transition written in the sensor's
  serialized section."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import statistics
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg

from bench.harness import (
    Cloud,
    Row,
    Sizes,
    libpq,
    pg_database,
    post_all,
    post_streams,
    postgres_cpu,
)
from bench.ingest import BATCH, telemetry_bodies
from bench.project import Bench, backdate, bootstrap

#: One client's requests: each a body and its headers.
Stream = list[tuple[bytes, dict[str, str]]]

#: A slow wave, 15 .. 25 over 20 s of readings (10 kHz): the rules below raise and clear a
#: few times a round, as alarms do (a rule that fires on every batch is a misconfigured one).
PERIOD = 200_000


def wave(i: int) -> float:
    return round(20 + 5 * math.sin(2 * math.pi * i / PERIOD), 4)


#: One rule of each reading kind.
RULES = (
    {"kind": "above", "threshold": 24.0, "for_s": 0.5, "hysteresis": 0.5},
    {"kind": "below", "threshold": 16.0, "hysteresis": 0.5},
    {"kind": "outside", "low": 15.5, "high": 24.5, "hysteresis": 0.1},
    {"kind": "rate", "threshold": 1.4, "window_s": 0.1, "hysteresis": 0.2},
    {"kind": "fault"},
)


#: Sensors of the in-order workload (the figure), each with its own client.
SENSORS = 8


def _with_rules(base_url: str, bench: Bench) -> None:
    with httpx.Client(base_url=base_url, timeout=30, headers=bench.headers) as c:
        for rule in RULES:
            c.post(f"/api/v1/sensors/{bench.sensor_id}/alarm-rules", json=rule).raise_for_status()


def _headers(bench: Bench, count: int) -> list[dict[str, str]]:
    return [
        {
            "Authorization": f"Bearer {bench.token}",
            "Content-Type": "application/json",
            "Idempotency-Key": str(uuid.uuid4()),
        }
        for _ in range(count)
    ]


def _worst_round(
    cloud: Cloud, url: str, sides: dict[str, Bench], n: int, start: datetime, k: int,
    clients: int, rates: _Rates,
) -> None:  # fmt: skip
    """Round ``k`` of the worst case: each side's one sensor gets ``n`` readings from
    ``clients`` concurrent clients, the sides taking turns of :data:`TURN` batches a client
    as the figure's do; each side's rate appended to ``rates``."""
    at = start + timedelta(minutes=20 * k)
    sent = {}
    for side, bench in sides.items():
        bodies = telemetry_bodies(bench, n, at, wave)
        sent[side] = (bodies, _headers(bench, len(bodies)))
    seconds = dict.fromkeys(sides, 0.0)
    size = TURN * clients
    assert cloud.rss is not None
    _checkpoint(url)
    for t, lo in enumerate(range(0, len(sent["without"][0]), size)):
        for side in _in_turn_order(t, k):
            bodies, headers = sent[side]
            seconds[side] += asyncio.run(
                post_all(
                    cloud.url, "/api/v1/telemetry", bodies[lo : lo + size],
                    headers[lo : lo + size], clients, 202, cloud.rss,
                )
            )  # fmt: skip
    for side in sides:
        getattr(rates, side).append(n / seconds[side])


#: Batches of each sensor in one turn of a side. The sides take turns of this size through
#: each round: a machine's speed can move from one few-second stretch to the next, and
#: sides measured in whole rounds of their own drew it independently (the same ingest on
#: both sides measured far from 100% of itself); in short turns both sides see the same
#: stretches (bench/README.md has the figures).
TURN = 2


def _turns(benches: list[Bench], per: int, start: datetime, k: int) -> list[list[Stream]]:
    """``per`` readings into each sensor, each sensor's batches in order from its own
    client, cut into turns of :data:`TURN` batches of each sensor. Each sensor's wave goes on
    from round to round (round ``k`` from reading ``k * per`` of it), the sensors' phases
    spread over the period: together they see as much of the wave as the one sensor does,
    each as one continuous stream, so they raise about as often as the wave sent in order
    does."""
    streams = []
    for j, b in enumerate(benches):
        shift = k * per + j * PERIOD // len(benches)
        bodies = telemetry_bodies(b, per, start, functools.partial(_shifted, shift))
        streams.append(list(zip(bodies, _headers(b, len(bodies)), strict=True)))
    batches = len(streams[0])
    return [[s[lo : lo + TURN] for s in streams] for lo in range(0, batches, TURN)]


def _in_turn_order(t: int, k: int) -> tuple[str, str]:
    """The sides in the order they go in turn ``t`` of round ``k``: alternating turn by
    turn, and from round to round the one that starts (right after the checkpoint, whose
    first writes cost more)."""
    return ("without", "with_rules") if (t + k) % 2 == 0 else ("with_rules", "without")


def _turn(cloud: Cloud, streams: list[Stream]) -> float:
    """One turn: each stream's batches in order, the streams concurrently; the seconds."""
    assert cloud.rss is not None
    return asyncio.run(post_streams(cloud.url, "/api/v1/telemetry", streams, 202, cloud.rss))


def _round_in_turns(
    cloud: Cloud, url: str, sides: dict[str, list[Bench]], per: int, start: datetime, k: int,
    rates: _Rates,
) -> None:  # fmt: skip
    """Round ``k`` of the figure: ``per`` readings into each sensor of both sides, the sides
    taking turns; each side's rate and CPU per batch appended to ``rates``."""
    at = start + timedelta(minutes=20 * k)
    turns = {side: _turns(benches, per, at, k) for side, benches in sides.items()}
    seconds = dict.fromkeys(sides, 0.0)
    cpu = {side: _Cpu(cloud, url) for side in sides}
    _checkpoint(url)
    for t in range(len(turns["without"])):
        for side in _in_turn_order(t, k):
            with cpu[side].counting():
                seconds[side] += _turn(cloud, turns[side][t])
    batches = SENSORS * math.ceil(per / BATCH)
    for side in sides:
        getattr(rates, side).append(per * SENSORS / seconds[side])
        rates.cpu[side].append(cpu[side].per_batch(batches))


def _shifted(by: int, i: int) -> float:
    return wave(i + by)


def _checkpoint(url: str) -> None:
    """Each round starts with no dirty pages of the one before: without it the round after
    another paid for that one's writes, and the figure's rounds spread twice as wide."""
    # A role without pg_checkpoint: the rounds run as they did before.
    with (
        psycopg.connect(libpq(url), autocommit=True) as conn,
        contextlib.suppress(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("CHECKPOINT")


def _alarms(url: str, benches: list[Bench]) -> int:
    with psycopg.connect(libpq(url)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM alarms WHERE sensor_id::text = ANY(%s)",
            ([b.sensor_id for b in benches],),
        ).fetchone()
    return row[0] if row else 0


def _setup(url: str, base_url: str, count: int, rules: bool, start: datetime) -> list[Bench]:
    benches = [bootstrap(base_url) for _ in range(count)]
    for b in benches:
        if rules:
            _with_rules(base_url, b)
        backdate(url, b.capture_session_id, start)
    return benches


@dataclass
class _Rates:
    without: list[float] = field(default_factory=list)
    with_rules: list[float] = field(default_factory=list)
    #: per round of each side: CPU milliseconds per batch of the API and of PostgreSQL
    cpu: dict[str, list[tuple[float, float | None]]] = field(
        default_factory=lambda: {"without": [], "with_rules": []}
    )

    def ratio(self) -> float:
        return statistics.median(self.with_rules) / statistics.median(self.without)

    def cpu_per_batch(self) -> dict[str, dict[str, float | None]]:
        """The median of each side's rounds: where the rules' cost went (the API's Python
        or the database), which the rates alone do not say."""
        out: dict[str, dict[str, float | None]] = {}
        for side, rounds in self.cpu.items():
            pg = [p for _, p in rounds if p is not None]
            out[side] = {
                "api_ms": round(statistics.median(a for a, _ in rounds), 2) if rounds else None,
                "postgres_ms": round(statistics.median(pg), 2) if pg else None,
            }
        return out


class _Cpu:
    """CPU the API and the database's backends use over one side's turns, per batch sent."""

    def __init__(self, cloud: Cloud, url: str) -> None:
        self.cloud, self.url = cloud, url
        self.api, self.pg = 0.0, 0.0
        self.pg_known = True

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        api, pg = self.cloud.cpu_seconds(), postgres_cpu(self.url)
        yield
        after = postgres_cpu(self.url)
        self.api += self.cloud.cpu_seconds() - api
        if pg is None or after is None:
            self.pg_known = False
        else:
            self.pg += after - pg

    def per_batch(self, batches: int) -> tuple[float, float | None]:
        pg_ms = self.pg * 1000 / batches if self.pg_known else None
        return self.api * 1000 / batches, pg_ms


def alarm_ingest(sizes: Sizes, logs: Path) -> Row:
    # Twice the rounds of the other ingest rows, each of half their readings, for the same
    # readings in all; within a round the sides take turns (:data:`TURN`).
    rounds, n = 2 * sizes.ingest_rounds, sizes.ingest_readings // 2
    per = n // SENSORS
    with pg_database() as url, Cloud(url, sizes.cloud_workers, logs / "cloud-alarms.log") as cloud:
        start = datetime.now(UTC) - timedelta(hours=3)
        plain = _setup(url, cloud.url, 1, False, start)
        ruled = _setup(url, cloud.url, 1, True, start)
        plain8 = _setup(url, cloud.url, SENSORS, False, start)
        ruled8 = _setup(url, cloud.url, SENSORS, True, start)
        assert cloud.rss is not None
        cloud.rss.reset()
        one, eight = _Rates(), _Rates()
        sides = {"without": plain8, "with_rules": ruled8}
        for k in range(rounds):
            _round_in_turns(cloud, url, sides, per, start, k, eight)
        # The worst case in rounds of its own, after the figure's: interleaved with them, its
        # bursts on one sensor slowed the figure's round that followed, more on one side
        # than the other (bench/README.md).
        singles = {"without": plain[0], "with_rules": ruled[0]}
        for k in range(rounds):
            _worst_round(cloud, url, singles, n, start, k, sizes.ingest_clients, one)
        raised_one, raised_eight = _alarms(url, ruled), _alarms(url, ruled8)
        assert raised_eight > 0, "the rules raised nothing: the row would measure no evaluation"
        return _row(sizes, n, per, one, eight, (raised_one, raised_eight), cloud.rss.mb)


def _row(
    sizes: Sizes, n: int, per: int, one: _Rates, eight: _Rates, raised: tuple[int, int],
    rss_mb: float,
) -> Row:  # fmt: skip
    rate, ceiling = statistics.median(eight.with_rules), statistics.median(eight.without)
    worst = {
        "workload": f"1 sensor, its batches from {sizes.ingest_clients} concurrent clients"
        " (reach the cloud out of timestamp order)",
        "readings_per_round": n,
        "with_rules": round(statistics.median(one.with_rules)),
        "without": round(statistics.median(one.without)),
        "ratio": round(one.ratio(), 3),
        "alarms_raised": raised[0],
        "with_rules_rounds": [round(r) for r in one.with_rules],
        "without_rounds": [round(r) for r in one.without],
    }
    cpu = eight.cpu_per_batch()
    print(
        f"alarm_ingest: {SENSORS} sensors in order {rate:,.0f} vs {ceiling:,.0f} readings/s"
        f" = {eight.ratio():.1%} ({raised[1]} alarms; CPU ms per batch with vs without rules:"
        f" API {cpu['with_rules']['api_ms']} vs {cpu['without']['api_ms']}, PostgreSQL"
        f" {cpu['with_rules']['postgres_ms']} vs {cpu['without']['postgres_ms']}); worst case,"
        f" 1 sensor from {sizes.ingest_clients} concurrent clients {worst['with_rules']:,} vs"
        f" {worst['without']:,} = {one.ratio():.1%} ({raised[0]} alarms)",
        flush=True,
    )
    return Row(
        name="alarm_ingest",
        what=f"telemetry ingest with 5 alarm rules per sensor, {SENSORS} sensors each sent"
        " in order, readings/s",
        figure=rate,
        unit="readings/s",
        ceiling=ceiling,
        ceiling_what=f"the same ingest, {SENSORS} sensors without rules, same run",
        target=">= 90% of ceiling",
        passed=rate >= 0.9 * ceiling,
        rss_mb={"cloud": rss_mb},
        extra={
            "readings_per_round": per * SENSORS,
            "sensors": SENSORS,
            "rules": len(RULES),
            "alarms_raised": raised[1],
            "with_rules_rounds": [round(r) for r in eight.with_rules],
            "without_rounds": [round(r) for r in eight.without],
            "cpu_ms_per_batch": cpu,
            "worst_case": worst,
        },
    )
