"""The ``thermocouple`` kind: raw emf (or a MAX31855 reading) to a temperature.

Payload::

    {"type": "K",                 # B E J K N R S T
     "cold_junction_c": 24.5,     # optional; else each reading's meta["cold_junction_c"]
     "display": "C",              # C F K; optional: the sensor's display unit says it,
                                  # and must agree with this if both are given
     "input": "mV"}               # "mV": raw is the emf (a voltage: the sensor's input
                                  # unit, V, mV or µV, is converted to mV first);
                                  # "max31855": raw is the chip's hot-junction
                                  # temperature, corrected with NIST

A payload ``cold_junction_c`` wins over the reading's meta: it is the operator's statement of
where the reference junction is (an ice bath, a thermostatted block).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from common.profiles import ConversionError, Core, parse_payload, register
from hardware.thermocouple import (
    MAX31855_MV_PER_C,
    TYPES,
    ThermocoupleRangeError,
    ThermocoupleType,
    get_type,
)

DisplayUnit = Literal["C", "F", "K"]
InputKind = Literal["mV", "max31855"]

#: The unit raw values must be in, by ``input``: the emf, or the chip's hot-junction reading.
#: A sensor's input unit of the same dimension in another scale (V, µV) is converted first.
_EXPECTS: dict[InputKind, str] = {"mV": "mV", "max31855": "degC"}


class ThermocouplePayload(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    type: str
    cold_junction_c: float | None = None
    display: DisplayUnit | None = None
    input: InputKind = "mV"

    @field_validator("type", mode="before")
    @classmethod
    def _known_type(cls, value: object) -> str:
        if isinstance(value, str) and value.strip().upper() in TYPES:
            return value.strip().upper()
        raise ValueError(f"unknown thermocouple type {value!r}; one of {', '.join(TYPES)}")

    @field_validator("cold_junction_c")
    @classmethod
    def _cold_junction_in_range(cls, cj: float | None, info: ValidationInfo) -> float | None:
        type_name = info.data.get("type")
        if cj is None or type_name is None:  # an invalid type is reported on its own
            return cj
        tc = get_type(type_name)
        if not (tc.t_min <= cj <= tc.t_max):
            raise ValueError(
                f"{cj} °C is outside type {type_name}'s range {tc.t_min:g} to {tc.t_max:g} °C"
            )
        return cj


@dataclass(frozen=True)
class Thermocouple:
    """Raw emf in mV (or a MAX31855 reading in °C) to °C; other units are the caller's
    (:func:`common.profiles.build_converter` folds them in)."""

    type: str
    cold_junction_c: float | None
    input: InputKind
    _tc: ThermocoupleType = field(init=False, repr=False, compare=False)
    #: E(cold_junction_c) of a payload's fixed cold junction, worked out once: the exact
    #: inverse costs a Newton step per reading, this saves a forward evaluation of as much.
    _cold_emf: float | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        tc = get_type(self.type)
        cj = self.cold_junction_c
        object.__setattr__(self, "_tc", tc)
        object.__setattr__(self, "_cold_emf", None if cj is None else tc.emf_mv(cj))

    def _cold_junction(self, meta: Mapping[str, Any] | None) -> float:
        if self.cold_junction_c is not None:
            return self.cold_junction_c
        if meta is None or "cold_junction_c" not in meta:
            raise ConversionError(
                "cold_junction_c is required: the profile sets none, so the reading's "
                'meta must carry it (meta["cold_junction_c"])'
            )
        value = meta["cold_junction_c"]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConversionError(f'meta["cold_junction_c"] must be a number, not {value!r}')
        try:
            cold = float(value)  # a JSON integer can be too large for a float
        except OverflowError:
            raise ConversionError('meta["cold_junction_c"] is out of range') from None
        if not math.isfinite(cold):
            raise ConversionError(f'meta["cold_junction_c"] must be finite, not {value}')
        return cold

    def convert(self, raw: float, meta: Mapping[str, Any] | None = None) -> float:
        if not math.isfinite(raw):
            raise ConversionError(f"raw value must be finite, not {raw}")
        cj = self._cold_junction(meta)
        tc = self._tc
        try:
            cold_emf = tc.emf_mv(cj) if self._cold_emf is None else self._cold_emf
            # The MAX31855 reports cj + V/S with a fixed Seebeck coefficient S: V is the emf.
            measured_mv = raw if self.input == "mV" else (raw - cj) * MAX31855_MV_PER_C
            return tc.temperature_c(measured_mv + cold_emf)
        except ThermocoupleRangeError as exc:
            raise ConversionError(str(exc)) from None


@register("thermocouple")
def _thermocouple(payload: Mapping[str, Any]) -> Core:
    p = parse_payload(ThermocouplePayload, payload)
    return Core(
        Thermocouple(p.type, p.cold_junction_c, p.input),
        expects=_EXPECTS[p.input],
        produces="degC",
        display=p.display,
    )
