"""The demo sensor's signal: a furnace's temperature over time, with measurement noise,
as the raw values a sensor reports (a thermocouple's emf in mV, or plain numbers for a
linear profile), and readings of it as ``POST /api/v1/telemetry`` takes them."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hardware.thermocouple import emf_mv


def heat_profile(t: float, *, ambient_c: float = 25.0, setpoint_c: float = 420.0) -> float:
    """A furnace heating up under a PID controller: an underdamped second-order step
    (damping 0.7, so ~4.6 % overshoot near t = 88 s, settled after about two minutes)."""
    zeta, omega = 0.7, 0.05
    damped = omega * math.sqrt(1 - zeta**2)
    envelope = math.exp(-zeta * omega * t)
    shape = math.cos(damped * t) + zeta / math.sqrt(1 - zeta**2) * math.sin(damped * t)
    return ambient_c + (setpoint_c - ambient_c) * (1.0 - envelope * shape)


def cycle_profile(t: float, *, low_c: float = 120.0, high_c: float = 320.0) -> float:
    """Thermal cycling: a slow sine between two plateaus (period two minutes)."""
    mid, amp = (high_c + low_c) / 2, (high_c - low_c) / 2
    return mid + amp * math.sin(2 * math.pi * t / 120.0)


PROFILES: dict[str, Callable[[float], float]] = {"heat": heat_profile, "cycle": cycle_profile}


@dataclass
class Signal:
    """Temperature over time turned into what the sensor reports, with measurement noise."""

    profile: str = "heat"
    thermocouple_type: str | None = None
    cold_junction_c: float = 24.5
    scale: float = 1.0
    offset: float = 0.0
    noise_c: float = 0.4
    rng: random.Random = field(default_factory=random.Random)

    def temperature(self, t: float) -> float:
        return PROFILES[self.profile](t) + self.rng.gauss(0.0, self.noise_c)

    def raw(self, t: float) -> float:
        temp = self.temperature(t)
        if self.thermocouple_type:
            # What a voltmeter across the thermocouple reads: hot junction against the cold one.
            tc = self.thermocouple_type
            return round(emf_mv(tc, temp) - emf_mv(tc, self.cold_junction_c), 5)
        return round((temp - self.offset) / self.scale, 4)

    def meta(self, step: int) -> dict[str, Any]:
        if self.thermocouple_type:
            return {"step": step, "cold_junction_c": self.cold_junction_c}
        return {"step": step}


def reading(signal: Signal, at: datetime, t: float, step: int) -> dict[str, Any]:
    return {
        "timestamp": at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "raw_value": signal.raw(t),
        "meta": signal.meta(step),
    }


def generate(
    signal: Signal, start: datetime, duration_s: float, rate_hz: float, first_step: int = 1
) -> Iterator[dict[str, Any]]:
    """``duration_s`` seconds of readings at ``rate_hz`` from ``start`` (already captured)."""
    count = max(1, int(duration_s * rate_hz))
    for i in range(count):
        t = i / rate_hz
        yield reading(signal, start + timedelta(seconds=t), t, first_step + i)
