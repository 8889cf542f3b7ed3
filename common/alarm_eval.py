"""The alarm evaluator, pure: a rule's readings (one batch, ascending) in, the alarms raised
and cleared at them out, the rule's state carried from one batch to the next.

Hold time: the condition must hold on every reading from one at ``t0`` to one at ``t`` with
``t - t0 >= for_s`` (reading time, not arrival time). Hysteresis: an alarm clears at the
first reading back past the limit by ``hysteresis``. ``rate`` at a reading is the change
from the oldest reading within ``window_s`` before it (the readings before the batch
included, as ``history``), per second; a reading with no other one in its window has no
rate and clears. ``fault``: a reading whose meta has a true ``fault`` holds the condition;
one without clears it.

Most batches change nothing but the rule's newest reading: no alarm open, nothing holding
and no value past the limit, or an alarm open and no value back past its limit. For the
value kinds that is decided from the batch's least and greatest values alone
(:func:`quiet`), without a pass per reading; ``tests/cloud/test_alarm_evaluator.py`` holds
:func:`evaluate` to a brute-force reference. The others, if long enough, are decided on
arrays (:mod:`common.alarm_fast`), which ``tests/cloud/test_alarm_fast.py`` holds to the walk
here.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


@dataclass(frozen=True)
class Spec:
    """What the evaluator needs of a rule."""

    kind: str
    threshold: float | None = None
    low: float | None = None
    high: float | None = None
    window_s: float | None = None
    for_s: float = 0.0
    hysteresis: float = 0.0


@dataclass
class State:
    last_ts_us: int | None = None
    holding_since_us: int | None = None
    open: bool = False


@dataclass(frozen=True)
class Change:
    """An alarm raised or cleared at a reading (index into the evaluated readings)."""

    what: Literal["raise", "clear"]
    index: int


Metas = Sequence[dict[str, Any] | None]
#: The readings before a batch within a rate's window, ascending: timestamps and values, as
#: lists (the edge keeps them) or arrays (the cloud reads them from its store).
History: TypeAlias = (
    "tuple[list[int], list[float]] | tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]"
)

#: Batches of at least this many readings that their bounds do not settle are decided on
#: arrays (:mod:`common.alarm_fast`, the same answers); shorter ones are walked, where
#: converting them would cost more than it saves.
ARRAYS_FROM = 64


def evaluate(
    spec: Spec,
    state: State,
    stamps_us: list[int],
    values: list[float],
    metas: Metas,
    history: History | None = None,
    bounds: tuple[float, float] | None = None,
) -> list[Change]:
    """Run the readings (ascending, all newer than ``state.last_ts_us``) through the rule;
    ``state`` is updated in place. ``history``: the readings before them within the window
    (``rate`` only); ``bounds``: ``(min(values), max(values))`` if the caller has them."""
    if not stamps_us:
        return []
    if spec.kind != "rate":
        if spec.kind != "fault" and bounds is None:
            bounds = (min(values), max(values))
        if quiet(spec, state, bounds or (0.0, 0.0), metas):
            state.last_ts_us = stamps_us[-1]
            return []
    if len(stamps_us) >= ARRAYS_FROM:
        # Imported here: it imports this module, and numpy only when a batch needs it.
        from common.alarm_fast import evaluate_arrays

        return evaluate_arrays(spec, state, stamps_us, values, metas, history)
    if spec.kind == "rate":
        assert spec.window_s is not None
        hs, hv = _listed(history)
        at = rates(hs + stamps_us, hv + values, spec.window_s, len(hs))
        return step(spec, state, stamps_us, *conditions(spec, at, metas))
    return step(spec, state, stamps_us, *conditions(spec, values, metas))


def _listed(history: History | None) -> tuple[list[int], list[float]]:
    if history is None:
        return [], []
    hs, hv = history
    if isinstance(hs, list) and isinstance(hv, list):
        return hs, hv
    return [int(t) for t in hs], [float(v) for v in hv]


def quiet(spec: Spec, state: State, bounds: tuple[float, float], metas: Metas) -> bool:
    """Whether readings with values within ``bounds`` (least, greatest) certainly change
    nothing but the newest reading: nothing holds and none can meet the condition, or an
    alarm is open and none can clear it. False when that takes a look at each reading.
    (Converted values are finite: no NaN to slip past a comparison.)"""
    if state.holding_since_us is not None:
        return False
    if not state.open:
        return _none_meets(spec, bounds, metas)
    return _none_clears(spec, bounds)


def _none_meets(spec: Spec, bounds: tuple[float, float], metas: Metas) -> bool:
    lo, hi = bounds
    k = spec.kind
    if k == "fault":
        return not any(metas)  # no meta at all, the usual reading: no fault either
    if k == "above":
        return hi <= _f(spec.threshold)
    if k == "below":
        return lo >= _f(spec.threshold)
    if k == "outside":
        return lo >= _f(spec.low) and hi <= _f(spec.high)
    return False


def _none_clears(spec: Spec, bounds: tuple[float, float]) -> bool:
    lo, hi = bounds
    k, h = spec.kind, spec.hysteresis
    if k == "above":
        return lo >= _f(spec.threshold) - h
    if k == "below":
        return hi <= _f(spec.threshold) + h
    if k == "outside":  # clearing takes a value strictly inside (low + h, high - h)
        return hi <= _f(spec.low) + h or lo >= _f(spec.high) - h
    return False


def _f(x: float | None) -> float:
    assert x is not None  # the rule's kind requires it (checked when it was set)
    return x


def rates(
    stamps_us: Sequence[int], values: Sequence[float], window_s: float, before: int = 0
) -> list[float | None]:
    """The rate of change (units per second) at each reading from ``before`` on: from the
    oldest reading within ``window_s`` before it (None: no other one in the window).
    ``stamps_us`` ascending; the first ``before`` readings are history only."""
    window = int(window_s * 1_000_000)
    out: list[float | None] = []
    append = out.append
    j = bisect_left(stamps_us, stamps_us[before] - window, 0, before) if before else 0
    for i in range(before, len(stamps_us)):
        t = stamps_us[i]
        while stamps_us[j] < t - window:
            j += 1
        append(None if j == i else (values[i] - values[j]) * 1e6 / (t - stamps_us[j]))
    return out


def conditions(
    spec: Spec, values: Sequence[float | None], metas: Metas
) -> tuple[list[bool], list[bool]]:
    """For each reading: whether the rule's condition holds, and whether it clears an
    open alarm. ``values`` are the rates for ``rate``."""
    h = spec.hysteresis
    k = spec.kind
    if k == "fault":
        cond = [bool(m and m.get("fault")) for m in metas]
        return cond, [not c for c in cond]
    if k == "above":
        thr = _f(spec.threshold)
        return [v > thr for v in values], [v < thr - h for v in values]  # type: ignore[operator]
    if k == "below":
        thr = _f(spec.threshold)
        return [v < thr for v in values], [v > thr + h for v in values]  # type: ignore[operator]
    if k == "outside":
        lo, hi = _f(spec.low), _f(spec.high)
        return (
            [v < lo or v > hi for v in values],  # type: ignore[operator]
            [lo + h < v < hi - h for v in values],  # type: ignore[operator]
        )
    if k == "rate":
        thr = _f(spec.threshold)
        mags = [None if r is None else abs(r) for r in values]
        return (
            [m is not None and m > thr for m in mags],
            [m is None or m < thr - h for m in mags],
        )
    raise ValueError(f"no reading condition for {k}")


def step(
    spec: Spec, state: State, stamps_us: Sequence[int], cond: list[bool], clear: list[bool]
) -> list[Change]:
    """Run the readings' conditions through the rule's hold time and hysteresis; ``state``
    is updated in place. The common case (no alarm open, nothing holding, the condition
    nowhere) is a single ``any`` over the conditions."""
    if stamps_us:
        state.last_ts_us = stamps_us[-1]
    if not state.open and state.holding_since_us is None and not any(cond):
        return []
    hold = int(spec.for_s * 1_000_000)
    changes: list[Change] = []
    since, is_open = state.holding_since_us, state.open
    for i, t in enumerate(stamps_us):
        if is_open:
            if clear[i]:
                is_open, since = False, None
                changes.append(Change("clear", i))
            continue
        if cond[i]:
            if since is None:
                since = t
            if t - since >= hold:
                is_open = True
                changes.append(Change("raise", i))
        else:
            since = None
    state.holding_since_us, state.open = (None if is_open else since), is_open
    return changes
