"""The evaluator on arrays (common.alarm_fast) against the reading-by-reading walk of
common.alarm_eval, on random series long enough to take the arrays' path: the same rates
(to the bit), the same conditions, the same raises and clears at the same readings, and the
same state carried to the next batch, for every kind, hold time, hysteresis and starting
state, with batches flapping often enough that the walk finishes some of them."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from common import alarm_eval, alarm_fast
from common.alarm_eval import Spec, State

S = 1_000_000
KINDS = ["above", "below", "outside", "rate", "fault"]


def _series(rng: random.Random, n: int) -> tuple[list[int], list[float], list[Any]]:
    ts, t = [], rng.randint(0, 10**12)
    for _ in range(n):
        t += rng.choice([100, 100, 250, 100_000, 1_000_000, 3_000_000])
        ts.append(t)
    vs, v = [], rng.uniform(-4, 4)
    step = rng.choice([0.05, 0.5, 1.5])  # slow waves, noise, and flapping around the limits
    for _ in range(n):
        v = max(-6.0, min(6.0, v + rng.uniform(-step, step)))
        vs.append(round(v, 3))
    metas = [
        {"fault": "open_circuit"} if rng.random() < 0.3 else rng.choice([None, {}, {"g": 2}])
        for _ in range(n)
    ]
    return ts, vs, metas


def _spec(kind: str, rng: random.Random) -> Spec:
    for_s = rng.choice([0.0, 0.0, 0.0005, 1.0, 5.0])
    h = rng.choice([0.0, 0.3, 2.0])
    if kind in ("above", "below"):
        return Spec(kind, threshold=rng.uniform(-2, 2), for_s=for_s, hysteresis=h)
    if kind == "outside":
        return Spec(kind, low=-1.5, high=1.5, for_s=for_s, hysteresis=rng.choice([0.0, 0.3]))
    if kind == "rate":
        return Spec(kind, threshold=rng.choice([0.5, 3.0, 500.0]),
                    window_s=rng.choice([0.0005, 0.5, 4.0]), for_s=for_s,
                    hysteresis=rng.choice([0.0, 0.5]))  # fmt: skip
    return Spec(kind, for_s=for_s)


def _state(rng: random.Random, first_ts: int) -> State:
    """Any state a rule can carry into a batch: idle, holding since before it, or open."""
    since = first_ts - rng.choice([1, 500_000, 4_000_000])
    return rng.choice([State(), State(holding_since_us=since), State(open=True)])


def _walk(spec: Spec, state: State, ts: list[int], vs: list[float], metas: list[Any],
          history: tuple[list[int], list[float]]) -> list[alarm_eval.Change]:  # fmt: skip
    if spec.kind == "rate":
        assert spec.window_s is not None
        at = alarm_eval.rates(history[0] + ts, history[1] + vs, spec.window_s, len(history[0]))
        return alarm_eval.step(spec, state, ts, *alarm_eval.conditions(spec, at, metas))
    return alarm_eval.step(spec, state, ts, *alarm_eval.conditions(spec, vs, metas))


@pytest.mark.parametrize("kind", KINDS)
def test_arrays_decide_as_the_walk(kind: str) -> None:
    rng = random.Random(f"fast-{kind}")
    transitions = walked = 0
    for _ in range(150):
        spec = _spec(kind, rng)
        ts, vs, metas = _series(rng, rng.randint(1, 400))
        cut = rng.randint(0, len(ts) - 1)  # readings before it are the rate's history
        history = (ts[:cut], vs[:cut]) if kind == "rate" else ([], [])
        ts, vs, metas = ts[cut:], vs[cut:], metas[cut:]
        slow = _state(rng, ts[0])
        fast = State(slow.last_ts_us, slow.holding_since_us, slow.open)
        want = _walk(spec, slow, ts, vs, metas, history)
        given = history
        if cut % 2:  # as the cloud's store gives them (the edge keeps lists)
            given = (np.array(history[0], dtype=np.int64), np.array(history[1], dtype=np.float64))
        got = alarm_fast.evaluate_arrays(spec, fast, ts, vs, metas, given)
        assert got == want, (spec, ts, vs, metas)
        assert fast == slow, (spec, ts, vs, metas)
        transitions += len(want)
        walked += len(want) > alarm_fast.MAX_SEGMENTS
    assert transitions > 200  # the series do raise and clear, many times
    assert walked > 0  # and some batches flap enough for the walk to finish them


def test_rates_are_the_same_floats() -> None:
    rng = random.Random("fast-rates")
    for _ in range(100):
        ts, vs, _ = _series(rng, rng.randint(1, 300))
        window_s = rng.choice([0.0001, 0.0005, 0.3, 4.0])
        before = rng.randint(0, len(ts) - 1)
        want = alarm_eval.rates(ts, vs, window_s, before)
        got = alarm_fast.rates(np.array(ts), np.array(vs), window_s, before)
        assert [None if np.isnan(r) else float(r) for r in got] == want


def test_the_bench_wave_takes_the_arrays_path_and_raises_as_the_walk() -> None:
    """Batches of 1000 readings at 10 kHz, the state carried from one to the next, as ingest
    runs them: the evaluator (arrays) and the walk raise and clear at the same readings."""
    spec = Spec("rate", threshold=1.4, window_s=0.1, hysteresis=0.2)
    n = 1000
    wave = [round(20 + 5 * np.sin(2 * np.pi * i / 200_000), 4) for i in range(200_000)]
    stamps = [10**15 + 100 * i for i in range(200_000)]
    fast, slow, changes = State(), State(), 0
    for lo in range(0, len(stamps), n):
        ts, vs = stamps[lo : lo + n], wave[lo : lo + n]
        history = (stamps[max(0, lo - n) : lo], wave[max(0, lo - n) : lo])
        got = alarm_eval.evaluate(spec, fast, ts, vs, [None] * n, history)
        assert got == _walk(spec, slow, ts, vs, [None] * n, history)
        assert fast == slow
        changes += len(got)
    assert changes >= 4
    assert n >= alarm_eval.ARRAYS_FROM
