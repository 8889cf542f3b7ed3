"""The alarm evaluator against a brute-force reference: random sequences of readings, fed in
random batches (the state carried from one to the next as the rule's row carries it), raise
and clear at exactly the readings the reference names, for every kind, hold time and
hysteresis; batches decided from their least and greatest values alone among them."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from common.alarm_eval import Spec, State, conditions, evaluate, quiet, step

S = 1_000_000


def reference_rates(ts: list[int], vs: list[float], window_s: float) -> list[float | None]:
    """Rate at each reading from the oldest one within the window, by looking at them all."""
    out: list[float | None] = []
    for i, t in enumerate(ts):
        inside = [j for j in range(i) if ts[j] >= t - window_s * S]
        out.append((vs[i] - vs[inside[0]]) * S / (t - ts[inside[0]]) if inside else None)
    return out


def holds(spec: Spec, v: Any, meta: dict[str, Any] | None) -> bool:
    if spec.kind == "above":
        return bool(v > spec.threshold)
    if spec.kind == "below":
        return bool(v < spec.threshold)
    if spec.kind == "outside":
        return bool(v < spec.low or v > spec.high)
    if spec.kind == "rate":
        return v is not None and abs(v) > spec.threshold
    return bool(meta and meta.get("fault"))


def clears(spec: Spec, v: Any, meta: dict[str, Any] | None) -> bool:
    h = spec.hysteresis
    if spec.kind == "above":
        return bool(v < spec.threshold - h)  # type: ignore[operator]
    if spec.kind == "below":
        return bool(v > spec.threshold + h)  # type: ignore[operator]
    if spec.kind == "outside":
        return bool(spec.low + h < v < spec.high - h)  # type: ignore[operator]
    if spec.kind == "rate":
        return v is None or abs(v) < spec.threshold - h  # type: ignore[operator]
    return not (meta and meta.get("fault"))


def reference(
    spec: Spec, ts: list[int], xs: list[Any], metas: list[dict[str, Any] | None]
) -> list[tuple[str, int]]:
    """Raise at the first reading ``e`` that ends a run of readings ``s..e`` all holding the
    condition with ``ts[e] - ts[s] >= for_s`` (every ``s`` tried); clear at the first reading
    after it that clears; start again after that."""
    out: list[tuple[str, int]] = []
    start, n = 0, len(ts)
    while start < n:
        raised = None
        for e in range(start, n):
            if any(
                all(holds(spec, xs[k], metas[k]) for k in range(s, e + 1))
                and ts[e] - ts[s] >= spec.for_s * S
                for s in range(start, e + 1)
            ):
                raised = e
                break
        if raised is None:
            break
        out.append(("raise", raised))
        cleared = next((j for j in range(raised + 1, n) if clears(spec, xs[j], metas[j])), None)
        if cleared is None:
            break
        out.append(("clear", cleared))
        start = cleared + 1
    return out


def incremental(
    spec: Spec, ts: list[int], vs: list[float], metas: list[dict[str, Any] | None],
    rng: random.Random, quiets: list[bool],
) -> list[tuple[str, int]]:  # fmt: skip
    """The evaluator as ingest runs it: random batches, the state carried between them, a
    rate computed from the readings stored before each batch and the batch's own. Whether
    each batch could be decided from its bounds alone goes to ``quiets``."""
    state = State()
    out: list[tuple[str, int]] = []
    i = 0
    while i < len(ts):
        j = min(len(ts), i + rng.randint(1, 7))
        bt, bv, bm = ts[i:j], vs[i:j], metas[i:j]
        history = None
        if spec.kind == "rate":
            assert spec.window_s is not None
            h = [k for k in range(i) if ts[k] >= ts[i] - spec.window_s * S]
            history = ([ts[k] for k in h], [vs[k] for k in h])
            if i % 2:  # as the cloud's store gives them (the edge keeps lists)
                history = (np.array(history[0], dtype=np.int64), np.array(history[1]))
        else:
            quiets.append(quiet(spec, state, (min(bv), max(bv)), bm))
        out += [(c.what, i + c.index) for c in evaluate(spec, state, bt, bv, bm, history)]
        assert state.last_ts_us == bt[-1]
        i = j
    return out


def _spec(kind: str, rng: random.Random) -> Spec:
    for_s = rng.choice([0.0, 0.0, 1.0, 2.5, 5.0])
    h = rng.choice([0.0, 0.5, 2.0])
    if kind in ("above", "below"):
        return Spec(kind, threshold=rng.uniform(-2, 2), for_s=for_s, hysteresis=h)
    if kind == "outside":
        return Spec(kind, low=-3.0, high=3.0, for_s=for_s, hysteresis=h)
    if kind == "rate":
        return Spec(kind, threshold=rng.choice([1.0, 3.0]), window_s=rng.choice([0.5, 2.0, 4.0]),
                    for_s=for_s, hysteresis=rng.choice([0.0, 0.5]))  # fmt: skip
    return Spec(kind, for_s=for_s)


@pytest.mark.parametrize("kind", ["above", "below", "outside", "rate", "fault"])
def test_every_kind_matches_the_reference(kind: str) -> None:
    rng = random.Random(f"alarms-{kind}")
    transitions = 0
    quiets: list[bool] = []
    for _ in range(300):
        spec = _spec(kind, rng)
        n = rng.randint(1, 60)
        ts, t = [], 0
        for _ in range(n):
            t += rng.choice([100_000, 500_000, 1_000_000, 1_000_000, 3_000_000])
            ts.append(t)
        # A random walk near the limits (noise around them is what hysteresis is for).
        vs, v = [], 0.0
        for _ in range(n):
            v = max(-6.0, min(6.0, v + rng.uniform(-1.5, 1.5)))
            vs.append(round(v, 1))
        metas: list[dict[str, Any] | None] = [
            {"fault": "open_circuit"} if rng.random() < 0.4 else rng.choice([None, {}, {"gain": 2}])
            for _ in range(n)
        ]
        xs: list[Any] = reference_rates(ts, vs, spec.window_s or 1) if kind == "rate" else vs
        want = reference(spec, ts, xs, metas)
        got = incremental(spec, ts, vs, metas, rng, quiets)
        assert got == want, (spec, ts, vs, metas)
        transitions += len(want)
    assert transitions > 100  # the sequences do raise and clear, many times
    if kind != "rate":  # batches decided from their bounds, and batches walked, both many
        assert quiets.count(True) > 100 and quiets.count(False) > 100, quiets.count(True)


def test_hold_time_is_reading_time_and_a_break_restarts_it() -> None:
    spec = Spec("above", threshold=850, for_s=5, hysteresis=2)
    ts = [s * S for s in range(12)]
    vs = [851, 852, 853, 849, 851, 852, 853, 854, 855, 856, 849, 847.9]
    cond, clear = conditions(spec, vs, [None] * len(vs))
    changes = step(spec, State(), ts, cond, clear)
    # 849 at 3 s breaks the hold: 4 s..9 s is the first 5 s run; 849 is within hysteresis
    # (not below 848), 847.9 clears.
    assert [(c.what, c.index) for c in changes] == [("raise", 9), ("clear", 11)]
