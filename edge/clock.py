"""The edge's clock against the cloud's, estimated NTP-style.

A sample: the edge notes its time ``t0``, asks ``GET /api/v1/time``, which answers when the
request reached it (``t1``) and when it answered (``t2``), and notes ``t3`` when the answer
is back. Then (RFC 5905)::

    offset = ((t1 - t0) + (t2 - t3)) / 2      # the cloud's clock minus the edge's
    delay  = (t3 - t0) - (t2 - t1)            # the round trip, less the server's time

The true offset is within ``delay / 2`` of a sample's (the two legs of the trip may differ).
Of the last few samples the one with the shortest delay is the best (NTP's clock filter: a
sample held up in a queue is off by half the hold-up); the estimate is that one's offset, and
its uncertainty half its delay plus the spread of the others around it.

The time of the edge is whatever :data:`TimeSource` the daemon was given (``time.time`` in
production): a test gives a shifted one and finds the shift, without touching the machine's
clock.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from common.heartbeat import ClockEstimate

log = logging.getLogger("benchlink.edge")

#: seconds since 1970 by the edge's clock (``time.time``)
TimeSource = Callable[[], float]

#: samples kept for the filter (at two a heartbeat: the last four heartbeats)
WINDOW = 8
#: at most one warning about a large offset this often (seconds, monotonic)
WARN_EVERY_S = 600.0


@dataclass(frozen=True)
class Sample:
    offset_s: float
    delay_s: float
    #: when it was taken (monotonic: ages never depend on the clock being measured)
    taken: float


def sample(t0: float, t1: float, t2: float, t3: float) -> Sample:
    """One sample from the four times, all in seconds."""
    delay = max(0.0, (t3 - t0) - (t2 - t1))
    return Sample(((t1 - t0) + (t2 - t3)) / 2, delay, time.monotonic())


class ClockEstimator:
    def __init__(self, max_offset_ms: float, window: int = WINDOW) -> None:
        self.max_offset_ms = max_offset_ms
        self.samples: deque[Sample] = deque(maxlen=window)
        self.count = 0
        self._warned_at = -math.inf

    def add(self, s: Sample) -> None:
        self.samples.append(s)
        self.count += 1
        estimate = self.estimate()
        if (
            estimate is not None
            and abs(estimate.offset_ms) > self.max_offset_ms
            and time.monotonic() - self._warned_at >= WARN_EVERY_S
        ):
            self._warned_at = time.monotonic()
            log.warning(
                "clock: this PC's clock is %.0f ms %s the cloud's (+/- %.0f ms), past"
                " [clock] max_offset_ms = %.0f; check its time sync (timedatectl, chrony)",
                abs(estimate.offset_ms),
                "behind" if estimate.offset_ms > 0 else "ahead of",
                estimate.uncertainty_ms,
                self.max_offset_ms,
            )

    def estimate(self) -> ClockEstimate | None:
        if not self.samples:
            return None
        best = min(self.samples, key=lambda s: s.delay_s)
        spread = math.sqrt(
            sum((s.offset_s - best.offset_s) ** 2 for s in self.samples) / len(self.samples)
        )
        last = self.samples[-1]
        return ClockEstimate(
            offset_ms=round(best.offset_s * 1000, 3),
            uncertainty_ms=round((best.delay_s / 2 + spread) * 1000, 3),
            rtt_ms=round(last.delay_s * 1000, 3),
            samples=self.count,
            max_offset_ms=self.max_offset_ms,
            age_s=round(max(0.0, time.monotonic() - last.taken), 3),
        )
