"""The arithmetic kinds: ``linear``, ``polynomial`` and ``lookup_table``.

Their payloads may say which units their numbers are in (``input_unit``: raw values,
``output_unit``: results). A kind that says so takes a sensor input of the same dimension in
any scale (the coefficients for V work for a sensor read in mV) and gives any display unit its
output converts to; one that says nothing takes its numbers as the sensor states them."""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from common import units
from common.profiles import ConversionError, Core, ProfileError, parse_payload, register


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=False)

    input_unit: str | None = None
    output_unit: str | None = None

    @field_validator("input_unit", "output_unit")
    @classmethod
    def _a_unit(cls, value: str | None) -> str | None:
        return None if value is None else units.canonical(value)

    def core(self, converter: Any) -> Core:
        return Core(converter, expects=self.input_unit, produces=self.output_unit)


class LinearPayload(_Payload):
    a: float
    b: float = 0.0


class PolynomialPayload(_Payload):
    coefficients: list[float] = Field(min_length=1, max_length=32)


class LookupTablePayload(_Payload):
    points: list[tuple[float, float]] = Field(min_length=2, max_length=10_000)

    @field_validator("points")
    @classmethod
    def _strictly_increasing(cls, pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
        for i in range(1, len(pts)):
            if pts[i][0] <= pts[i - 1][0]:
                raise ValueError(
                    f"raw values must be strictly increasing (point {i}: "
                    f"{pts[i][0]} after {pts[i - 1][0]})"
                )
        return pts


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ConversionError(f"conversion gave a non-finite value ({value})")
    return value


@dataclass(frozen=True)
class Linear:
    a: float
    b: float

    def convert(self, raw: float, meta: Mapping[str, Any] | None = None) -> float:
        return _finite(self.a * raw + self.b)


@dataclass(frozen=True)
class Polynomial:
    coefficients: tuple[float, ...]

    def convert(self, raw: float, meta: Mapping[str, Any] | None = None) -> float:
        # Horner's scheme: c0 + raw*(c1 + raw*(c2 + ...)).
        acc = 0.0
        for c in reversed(self.coefficients):
            acc = acc * raw + c
        return _finite(acc)


@dataclass(frozen=True)
class LookupTable:
    xs: tuple[float, ...]
    ys: tuple[float, ...]

    def convert(self, raw: float, meta: Mapping[str, Any] | None = None) -> float:
        if raw < self.xs[0] or raw > self.xs[-1]:
            raise ConversionError(
                f"raw value {raw} is outside the lookup table [{self.xs[0]}, {self.xs[-1]}]"
            )
        i = bisect.bisect_right(self.xs, raw)
        if i >= len(self.xs):
            return self.ys[-1]
        x0, x1, y0, y1 = self.xs[i - 1], self.xs[i], self.ys[i - 1], self.ys[i]
        return _finite(y0 + (y1 - y0) * (raw - x0) / (x1 - x0))


@register("linear")
def _linear(payload: Mapping[str, Any]) -> Core:
    p = parse_payload(LinearPayload, payload)
    return p.core(Linear(p.a, p.b))


@register("polynomial")
def _polynomial(payload: Mapping[str, Any]) -> Core:
    p = parse_payload(PolynomialPayload, payload)
    return p.core(Polynomial(tuple(p.coefficients)))


@register("lookup_table")
def _lookup(payload: Mapping[str, Any]) -> Core:
    p = parse_payload(LookupTablePayload, payload)
    if not p.points:
        raise ProfileError([("points", "at least two points are needed")])
    return p.core(LookupTable(tuple(x for x, _ in p.points), tuple(y for _, y in p.points)))
