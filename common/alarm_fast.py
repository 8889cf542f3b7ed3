"""The alarm evaluator's decisions on whole arrays (numpy), for batches long enough to pay
for the conversion: the same answers as the reading-by-reading walk of
:mod:`common.alarm_eval` (``rates``, ``conditions``, ``step``), which stays the reference
(``tests/cloud/test_alarm_fast.py`` compares the two on random series).

The walk's cost follows the readings; this one follows the transitions: a rate is a
``searchsorted`` for the oldest reading of each window, the conditions are comparisons, and
the hold time is found from where each run of readings meeting the condition began. Between
two transitions nothing is looked at one by one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from common.alarm_eval import Change, History, Metas, Spec, State, conditions, step

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]

#: Transitions worked out on arrays in one batch; past that (a rule flapping on nearly every
#: reading, each transition a pass over the rest of the batch) the walk finishes the batch.
MAX_SEGMENTS = 16


def rates(stamps_us: Ints, values: Floats, window_s: float, before: int = 0) -> Floats:
    """:func:`common.alarm_eval.rates` on arrays, NaN where that gives None (no other reading
    in the window). The same operations in the same order: the same floats."""
    window = int(window_s * 1_000_000)
    ts = stamps_us[before:]
    oldest = np.searchsorted(stamps_us, ts - window, side="left")
    alone = oldest == np.arange(before, len(stamps_us))
    span = (ts - stamps_us[oldest]).astype(np.float64)
    span[alone] = 1.0  # no division by zero; these are NaN below
    out: Floats = (values[before:] - values[oldest]) * 1e6 / span
    out[alone] = np.nan
    return out


def decisions(spec: Spec, xs: Floats, metas: Metas) -> tuple[Bools, Bools]:
    """:func:`common.alarm_eval.conditions` on arrays: whether each reading holds the
    condition, and whether it clears an open alarm. ``xs``: the values, or the rates (NaN
    for none) of a ``rate`` rule."""
    k, h = spec.kind, spec.hysteresis
    if k == "rate":
        assert spec.threshold is not None
        mags = np.abs(xs)
        return mags > spec.threshold, np.isnan(mags) | (mags < spec.threshold - h)
    if k in ("above", "below"):
        assert spec.threshold is not None
        thr = spec.threshold
        if k == "above":
            return xs > thr, xs < thr - h
        return xs < thr, xs > thr + h
    if k == "outside":
        assert spec.low is not None and spec.high is not None
        lo, hi = spec.low, spec.high
        return (xs < lo) | (xs > hi), (lo + h < xs) & (xs < hi - h)
    cond, clear = conditions(spec, [], metas)  # fault: from the metas, one by one
    return np.array(cond, dtype=np.bool_), np.array(clear, dtype=np.bool_)


def step_arrays(
    spec: Spec, state: State, stamps_us: Ints, cond: Bools, clear: Bools
) -> list[Change]:
    """:func:`common.alarm_eval.step` on arrays; ``state`` is updated in place."""
    n = len(stamps_us)
    if n == 0:
        return []
    state.last_ts_us = int(stamps_us[-1])
    if not state.open and state.holding_since_us is None and not cond.any():
        return []
    hold = int(spec.for_s * 1_000_000)
    # The last reading at or before each one that does not meet the condition (-1: none):
    # a run meeting it, seen from any of its readings, began just after that one.
    last_miss = np.maximum.accumulate(np.where(cond, -1, np.arange(n)))
    changes: list[Change] = []
    at, since, is_open = 0, state.holding_since_us, state.open
    for _ in range(MAX_SEGMENTS):
        if at >= n:
            break
        if is_open:
            k = _first(clear, at)
            if k < 0:
                break
            changes.append(Change("clear", k))
            at, since, is_open = k + 1, None, False
            continue
        k, since = _first_raise(stamps_us, cond, last_miss, at, since, hold)
        if k < 0:
            break
        changes.append(Change("raise", k))
        at, since, is_open = k + 1, None, True
    else:
        if at < n:  # still transitions to find: the walk takes the rest
            return changes + _walk(spec, state, stamps_us, cond, clear, at, (since, is_open))
    state.holding_since_us, state.open = (None if is_open else since), is_open
    return changes


def _first(mask: Bools, at: int) -> int:
    """The index of the first true from ``at`` on, -1 if none."""
    k = at + int(np.argmax(mask[at:]))
    return k if mask[k] else -1


def _first_raise(
    stamps_us: Ints, cond: Bools, last_miss: Ints, at: int, since: int | None, hold: int
) -> tuple[int, int | None]:
    """No alarm open from reading ``at`` on (``since``: the hold begun before it): the
    reading that raises (-1: none) and, if none does, the hold still running at the end."""
    began = np.maximum(last_miss[at:] + 1, at)  # where each reading's run began
    # (one past the end for a last reading that misses: clipped, it is not ready anyway)
    start = stamps_us[np.minimum(began, len(stamps_us) - 1)]
    if since is not None:  # the run going on at ``at`` began before it
        start = np.where(began == at, since, start)
    ready = cond[at:] & (stamps_us[at:] - start >= hold)
    k = _first(ready, 0)
    if k >= 0:
        return at + k, None
    return -1, (int(start[-1]) if cond[-1] else None)


def _walk(
    spec: Spec,
    state: State,
    stamps_us: Ints,
    cond: Bools,
    clear: Bools,
    at: int,
    carried: tuple[int | None, bool],
) -> list[Change]:
    """The rest of the batch from ``at``, one reading at a time."""
    state.holding_since_us, state.open = carried
    rest = step(spec, state, stamps_us[at:].tolist(), cond[at:].tolist(), clear[at:].tolist())
    return [Change(c.what, at + c.index) for c in rest]


def evaluate_arrays(
    spec: Spec,
    state: State,
    stamps_us: Sequence[int],
    values: Sequence[float],
    metas: Metas,
    history: History | None = None,
) -> list[Change]:
    """:func:`common.alarm_eval.evaluate`'s decisions for a batch it did not settle from its
    bounds, on arrays (same arguments)."""
    ts = np.array(stamps_us, dtype=np.int64)
    if spec.kind == "rate":
        assert spec.window_s is not None
        vs = np.asarray(values, dtype=np.float64)
        if history is not None and len(history[0]):
            all_ts = np.concatenate((np.asarray(history[0], dtype=np.int64), ts))
            all_vs = np.concatenate((np.asarray(history[1], dtype=np.float64), vs))
        else:
            all_ts, all_vs = ts, vs
        before = len(all_ts) - len(ts)
        xs = rates(all_ts, all_vs, spec.window_s, before)
    else:
        xs = np.array(values, dtype=np.float64)
    cond, clear = decisions(spec, xs, metas)
    return step_arrays(spec, state, ts, cond, clear)
