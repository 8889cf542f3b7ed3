"""Conversion profiles: how a sensor's ``raw_value`` becomes ``value`` in its display unit.

A profile is ``{version, kind, payload}``. :func:`build_converter` validates the payload of a
kind and returns a :class:`Converter`; an invalid payload raises :class:`ProfileError` naming
the field and the reason, so the API can answer with a precise 422.

Units: a kind says which unit its arithmetic takes raw values in and which unit it gives
(:class:`Core`; ``None`` for either: any, taken as the sensor states it). The sensor's
``input_unit`` must measure the same thing as the first and its ``display_unit`` the same as
the second; a different scale or offset (V for mV, °F for °C) is folded into the converter
when it is built, as ``a*x + b`` on either side, so a reading costs no unit work.

Kinds register themselves in :data:`KINDS`; ``linear``, ``polynomial`` and ``lookup_table``
live in :mod:`common.profiles.basic`, ``thermocouple`` in :mod:`common.profiles.thermocouple`.

Any kind's payload may end with a correction (what a calibration fit proposes)::

    "correction": {"coefficients": [c0, c1, ...], "calibration_id": "..."}

applied to the kind's result in the sensor's display unit: ``c0 + c1·v + c2·v² + ...``.
``calibration_id`` (optional) says which fit it came from.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common import units


class ProfileError(ValueError):
    """A profile payload (or a conversion) that cannot be used.

    ``errors`` is a list of ``(field, reason)`` with ``field`` a dotted path inside the
    payload (empty for the payload as a whole).
    """

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{f or 'payload'}: {r}" for f, r in errors))


class ConversionError(ValueError):
    """A raw value that this profile cannot convert (out of range, missing meta...)."""


class UnitMismatch(ValueError):
    """A sensor unit the profile cannot take: ``field`` is ``input_unit`` or ``display_unit``."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class Converter(Protocol):
    def convert(self, raw: float, meta: Mapping[str, Any] | None = None) -> float:
        """Return the value in the sensor's display unit, or raise ConversionError."""
        ...


@dataclass(frozen=True)
class Core:
    """A kind's arithmetic and the units it works in (pint spellings; None: any)."""

    converter: Converter
    #: The unit raw values must be in for ``converter``; None: any, used as they come.
    expects: str | None = None
    #: The unit ``converter`` gives; None: the sensor's display unit, whatever it is.
    produces: str | None = None
    #: The display unit the payload asks for (thermocouple ``display``), if any.
    display: str | None = None


ConverterFactory = Callable[[Mapping[str, Any]], Core]

#: kind name -> factory(payload) -> Core
KINDS: dict[str, ConverterFactory] = {}


def register(kind: str) -> Callable[[ConverterFactory], ConverterFactory]:
    def deco(factory: ConverterFactory) -> ConverterFactory:
        KINDS[kind] = factory
        return factory

    return deco


M = TypeVar("M", bound=BaseModel)


def parse_payload(model: type[M], payload: Mapping[str, Any]) -> M:
    """Validate ``payload`` against ``model``, turning pydantic's errors into ProfileError."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise ProfileError(
            [(".".join(str(p) for p in err["loc"]), err["msg"]) for err in exc.errors()]
        ) from None


def build_converter(
    kind: str,
    payload: Mapping[str, Any],
    display_unit: str | None = None,
    input_unit: str | None = None,
    *,
    lenient: bool = False,
) -> Converter:
    """Validate a profile for a sensor's units and return its converter.

    Raises ProfileError for the payload, UnitMismatch for a unit the profile cannot take.
    ``lenient`` is for profiles stored before units were checked: a unit that does not parse
    or does not fit is then used as it comes (no conversion), as it always was."""
    factory = KINDS.get(kind)
    if factory is None:
        raise ProfileError([("kind", f"unknown kind {kind!r}; one of {sorted(KINDS)}")])
    if not isinstance(payload, Mapping):
        raise ProfileError([("", "payload must be a JSON object")])
    base, correction = split_correction(payload)
    core = factory(base)
    in_a, in_b = _fit_input(kind, core, input_unit, lenient)
    out_a, out_b = _fit_output(kind, core, display_unit, lenient)
    converter: Converter = core.converter
    if (in_a, in_b, out_a, out_b) != (1.0, 0.0, 1.0, 0.0):
        converter = Scaled(core.converter, in_a, in_b, out_a, out_b)
    if correction is not None:
        converter = Corrected(converter, tuple(correction.coefficients))
    return converter


class Correction(BaseModel):
    """A polynomial applied to a kind's result, in the display unit (a calibration's fit)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    coefficients: list[float] = Field(min_length=1, max_length=32)
    calibration_id: str | None = Field(default=None, max_length=64)


def split_correction(payload: Mapping[str, Any]) -> tuple[dict[str, Any], Correction | None]:
    """The kind's own payload, and its correction step if it has one (validated: its errors
    are named ``correction.…``)."""
    base = {k: v for k, v in payload.items() if k != "correction"}
    if "correction" not in payload:
        return base, None
    try:
        return base, Correction.model_validate(payload["correction"])
    except ValidationError as exc:
        raise ProfileError(
            [
                (".".join(("correction", *(str(p) for p in err["loc"]))), err["msg"])
                for err in exc.errors()
            ]
        ) from None


def _fit_input(kind: str, core: Core, input_unit: str | None, lenient: bool) -> tuple[float, float]:
    """``(a, b)`` taking a raw value in the sensor's input unit to the unit ``core`` expects."""
    if core.expects is None or input_unit is None:
        return 1.0, 0.0
    expects = units.parse(core.expects)
    try:
        given = units.parse(input_unit)
    except units.UnitError as exc:
        if lenient:
            return 1.0, 0.0
        raise UnitMismatch("input_unit", str(exc)) from None
    if given.dimension != expects.dimension:
        if lenient:
            return 1.0, 0.0
        raise UnitMismatch(
            "input_unit",
            f"{given.symbol} is a {given.dimension}; a {kind} profile reads a "
            f"{expects.dimension} (e.g. {expects.symbol})",
        )
    return _affine("input_unit", given, expects, lenient)


def _fit_output(
    kind: str, core: Core, display_unit: str | None, lenient: bool
) -> tuple[float, float]:
    """``(a, b)`` taking what ``core`` gives to the sensor's display unit."""
    target_text = display_unit
    if core.display is not None:
        wanted = units.parse(core.display)
        if display_unit is None or lenient:
            target_text = core.display  # the payload's own choice, as it always was
        elif _same_unit(display_unit, wanted) is False:
            raise ProfileError(
                [("display", f"{wanted.symbol} disagrees with display_unit {display_unit!r}")]
            )
    if core.produces is None or target_text is None:
        return 1.0, 0.0
    produces = units.parse(core.produces)
    try:
        target = units.parse(target_text)
    except units.UnitError as exc:
        if lenient:
            return 1.0, 0.0
        raise UnitMismatch("display_unit", str(exc)) from None
    if target.dimension != produces.dimension:
        if lenient:
            return 1.0, 0.0
        raise UnitMismatch(
            "display_unit",
            f"{target.symbol} is a {target.dimension}; a {kind} profile gives a "
            f"{produces.dimension} (e.g. {produces.symbol})",
        )
    return _affine("display_unit", produces, target, lenient)


def _affine(
    field: str, source: units.Unit, target: units.Unit, lenient: bool
) -> tuple[float, float]:
    """:func:`units.affine`, its refusal named by ``field`` (same dimension, yet no scale and
    offset between them: °C and Δ°C, W and dBm)."""
    try:
        return units.affine(source, target)
    except units.UnitError as exc:
        if lenient:
            return 1.0, 0.0
        raise UnitMismatch(field, str(exc)) from None


def _same_unit(text: str, unit: units.Unit) -> bool | None:
    """Whether ``text`` names ``unit``; None if it names no unit at all."""
    try:
        return units.parse(text) == unit
    except units.UnitError:
        return None


@dataclass(frozen=True, slots=True)
class Scaled:
    """A converter with its units' scale and offset folded in on either side."""

    inner: Converter
    in_a: float
    in_b: float
    out_a: float
    out_b: float

    def convert(self, raw: float, meta: Mapping[str, Any] | None = None) -> float:
        return self.out_a * self.inner.convert(self.in_a * raw + self.in_b, meta) + self.out_b


@dataclass(frozen=True, slots=True)
class Corrected:
    """A converter followed by a correction polynomial (Horner's scheme)."""

    inner: Converter
    coefficients: tuple[float, ...]

    def convert(self, raw: float, meta: Mapping[str, Any] | None = None) -> float:
        value = self.inner.convert(raw, meta)
        acc = 0.0
        for c in reversed(self.coefficients):
            acc = acc * value + c
        if not math.isfinite(acc):
            raise ConversionError(f"the correction gave a non-finite value ({acc})")
        return acc


# Registration happens on import of the modules that define the kinds.
from common.profiles import basic as _basic  # noqa: E402, F401
from common.profiles import thermocouple as _thermocouple  # noqa: E402, F401
