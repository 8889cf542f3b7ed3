"""Units: parsed and converted by pint, spelled one way.

A unit written by a user (``"degC"``, ``"millivolt"``, ``"uV"``) is parsed once, when a sensor
or a metric is registered, and stored in one canonical spelling: pint's short symbol as a lab
writes it (``°C``, ``mV``, ``µV``). Conversions between two units are reduced to ``a*x + b``
once per profile (:func:`affine`); nothing here runs per reading.

Lab spellings pint reads otherwise are mapped first (:data:`LAB_SPELLINGS`): to pint, ``C`` is
the coulomb and ``F`` the farad, but on a bench a unit written ``C`` or ``F`` is a temperature.
A charge or a capacitance is written ``coulomb`` or ``farad`` (or with a prefix: ``pC``, ``nF``).
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from typing import Any

import pint

#: Whole-unit spellings (compared trimmed and case-folded) that mean a temperature on a lab
#: bench but something else, or nothing, to pint. Everything else goes to pint as written.
LAB_SPELLINGS: dict[str, str] = {
    "c": "degC",  # pint: coulomb
    "°c": "degC",
    "℃": "degC",  # pint fails on the one-character sign
    "degc": "degC",
    "deg c": "degC",  # pint: coulomb * degree (of angle)
    "degrees c": "degC",
    "celsius": "degC",
    "f": "degF",  # pint: farad
    "°f": "degF",
    "℉": "degF",
    "degf": "degF",
    "deg f": "degF",
    "degrees f": "degF",
    "fahrenheit": "degF",
    "k": "kelvin",  # pint: no unit (a prefix alone)
    "kelvin": "kelvin",
}

#: Names for the dimensions a bench meets, for messages; others are shown as pint writes them.
_DIMENSION_NAMES = (
    ("voltage", "[electric_potential]"),
    ("temperature", "[temperature]"),
    ("current", "[current]"),
    ("resistance", "[resistance]"),
    ("pressure", "[pressure]"),
    ("charge", "[charge]"),
    ("capacitance", "[capacitance]"),
    ("length", "[length]"),
    ("mass", "[mass]"),
    ("time", "[time]"),
    ("frequency", "[frequency]"),
    ("force", "[force]"),
    ("power", "[power]"),
    ("energy", "[energy]"),
    ("velocity", "[velocity]"),
    ("flow", "[volumetric_flow_rate]"),
    ("dimensionless", "[]"),
)

MAX_LENGTH = 32  # the columns that store a unit


class UnitError(ValueError):
    """A unit that cannot be parsed, or two units that do not convert into each other."""


_REGISTRY: pint.UnitRegistry[Any] | None = None
_REGISTRY_LOCK = threading.Lock()


def registry() -> pint.UnitRegistry[Any]:
    """The one registry, made on first use (loading pint's definitions takes a tenth of a
    second). One only: pint refuses to compare units of two registries, and ingest threads
    may ask for it at the same moment."""
    global _REGISTRY
    if _REGISTRY is None:
        with _REGISTRY_LOCK:
            if _REGISTRY is None:
                _REGISTRY = pint.UnitRegistry()
    return _REGISTRY


@dataclass(frozen=True)
class Unit:
    #: The canonical spelling, e.g. ``°C``, ``mV``; parses back to the same unit.
    symbol: str
    #: What it measures, e.g. ``voltage``, ``temperature``.
    dimension: str
    pint_unit: Any = field(compare=False, repr=False)


@functools.lru_cache(maxsize=1024)
def parse(text: str) -> Unit:
    """The unit ``text`` names; raises UnitError saying why not."""
    if not isinstance(text, str) or not text.strip():
        raise UnitError("a unit is required, e.g. mV, °C, bar")
    spelled = LAB_SPELLINGS.get(" ".join(text.split()).casefold(), text.strip())
    ureg = registry()
    try:
        unit = ureg.Unit(spelled)
    except Exception:  # pint raises several kinds (and AssertionError on some signs)
        raise UnitError(f"{text!r} is not a unit pint knows (e.g. mV, V, °C, K, bar)") from None
    symbol = f"{unit:~P}" or "1"  # dimensionless prints as nothing
    if len(symbol) > MAX_LENGTH:
        raise UnitError(f"{text!r} is longer than {MAX_LENGTH} characters once written out")
    return Unit(symbol, _dimension(unit), unit)


def canonical(text: str) -> str:
    """The canonical spelling of ``text`` (``degC`` -> ``°C``); raises UnitError."""
    return parse(text).symbol


def _dimension(unit: Any) -> str:
    ureg = registry()
    dims = unit.dimensionality
    for name, ref in _DIMENSION_NAMES:
        if ureg.get_dimensionality(ref) == dims:
            return name
    return str(dims)


def affine(source: Unit, target: Unit) -> tuple[float, float]:
    """``(a, b)`` with ``value in target = a * value in source + b``; UnitError if the two
    measure different things. Offsets matter for temperatures (°C -> °F: 1.8, 32)."""
    if source.dimension != target.dimension or not source.pint_unit.is_compatible_with(
        target.pint_unit
    ):
        raise UnitError(
            f"{source.symbol} ({source.dimension}) does not convert to "
            f"{target.symbol} ({target.dimension})"
        )
    if source.pint_unit == target.pint_unit:
        return 1.0, 0.0
    q = registry().Quantity
    b = float(q(0.0, source.pint_unit).to(target.pint_unit).magnitude)
    a = float(q(1.0, source.pint_unit).to(target.pint_unit).magnitude) - b
    return a, b
