"""Jittered, capped exponential backoff and ``Retry-After`` parsing."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


class Backoff:
    """Capped exponential backoff, jittered above a floor: the n-th delay (from 0) is uniform
    in [min(initial/2, high), high] with high = min(cap, initial * 2**n).

    Not AWS's "full jitter" (uniform in [0, high]): the floor keeps a burst of failures from
    retrying in a tight loop; the jitter keeps many benches that lost the cloud at the same
    moment from coming back in lockstep. The one backoff of the edge's sources, its sync
    loops and the demo's sensor."""

    def __init__(self, initial: float, cap: float, rng: random.Random | None = None) -> None:
        self.initial, self.cap = initial, cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        high = min(self.cap, self.initial * 2**self.attempt)
        self.attempt = min(self.attempt + 1, 62)
        return self._rng.uniform(min(self.initial / 2, high), high)

    def reset(self) -> None:
        self.attempt = 0


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
