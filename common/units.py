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
import importlib
import math
import sys
import threading
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any


def _pint_without_numpy() -> ModuleType:
    """pint, imported without numpy when numpy is not loaded yet.

    pint imports numpy whenever it is installed (to take arrays as magnitudes), and numpy is
    installed for the cloud's calibration fits: every process that parses a unit (the API,
    the edge) would carry numpy for nothing. Units here are parsed and converted as scalars,
    which pint does the same way without numpy. ``sys.modules["numpy"] = None`` makes
    pint's ``import numpy`` fail for the moment pint is imported (once, when this module
    is); numpy imported later, for a fit, is untouched."""
    if "pint" in sys.modules or "numpy" in sys.modules:
        return importlib.import_module("pint")
    sys.modules["numpy"] = None  # type: ignore[assignment]
    try:
        return importlib.import_module("pint")
    finally:
        del sys.modules["numpy"]


if TYPE_CHECKING:
    import pint
else:
    pint = _pint_without_numpy()

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
#: Longest text handed to pint: its parse time grows with the square of a word's length, and
#: a profile payload's units are only bounded by the request size.
MAX_INPUT = 200


class UnitError(ValueError):
    """A unit that cannot be parsed, or two units that do not convert into each other."""


class _One:
    registry: pint.UnitRegistry[Any] | None = None
    lock = threading.Lock()


def registry() -> pint.UnitRegistry[Any]:
    """The one registry, made on first use (loading pint's definitions takes a tenth of a
    second). One only: pint refuses to compare units of two registries, and ingest threads
    may ask for it at the same moment."""
    if _One.registry is None:
        with _One.lock:
            if _One.registry is None:
                _One.registry = pint.UnitRegistry()
    return _One.registry


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
    if len(text) > MAX_INPUT:
        raise UnitError(f"{text[:20]!r}... is longer than {MAX_INPUT} characters")
    stray = _stray_character(text)
    if stray is not None:
        raise UnitError(
            f"{text!r}: {stray!r} is not part of a unit; write the unit alone (e.g. mV, °C, kg/m^3)"
        )
    unit = _read(text)
    if unit is None:
        raise UnitError(f"{text!r} is not a unit pint knows (e.g. mV, V, °C, K, bar)")
    symbol = _spelling(text, unit)
    if len(symbol) > MAX_LENGTH:
        raise UnitError(f"{text!r} is longer than {MAX_LENGTH} characters once written out")
    return Unit(symbol, _dimension(unit), unit)


#: Characters a unit is written with besides letters, digits and spaces. pint's tokenizer
#: skips others without a word (``mV?`` is mV, ``m#V`` the metre, ``m,V`` mV), so a typo
#: would be stored as some unit instead of being refused.
_UNIT_SIGNS = frozenset("*/^()_·⋅°℃℉%+-⁻")


def _stray_character(text: str) -> str | None:
    """The first character of ``text`` that no unit is written with, or None. A dot only
    inside a number (``m**0.5``)."""
    for i, ch in enumerate(text):
        if ch.isalnum() or ch.isspace() or ch in _UNIT_SIGNS:
            continue
        if ch == "." and text[i - 1 : i].isdigit() and text[i + 1 : i + 2].isdigit():
            continue
        return ch
    return None


def _spelling(text: str, unit: Any) -> str:
    """The short symbol, unless it reads back as another unit (the coulomb's C is °C here,
    the farad's F °F) or as none (mV**0.5 prints as mV⁰⋅⁵): then the name (``coulomb``).
    The spelling is what is stored and read again."""
    short = f"{unit:~P}" or "1"  # dimensionless prints as nothing
    if short == "1" or _read(short) == unit:
        return short
    name = f"{unit:P}"
    if _read(name) == unit:
        return name
    raise UnitError(f"{text!r} has no spelling that reads back ({short}); write it another way")


def _read(text: str) -> Any:
    """pint's unit for ``text`` (lab spellings first), or None."""
    spelled = LAB_SPELLINGS.get(" ".join(text.split()).casefold(), text.strip())
    try:
        return registry().Unit(spelled)
    except Exception:  # pint raises several kinds (and AssertionError on some signs)
        return None


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
    measure different things, or if no scale and offset converts one into the other (an
    absolute temperature and a difference of temperatures, a logarithmic unit such as dBm).
    Offsets matter for temperatures (°C -> °F: 1.8, 32)."""
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
    try:
        b, one, check = (
            float(q(x, source.pint_unit).to(target.pint_unit).magnitude) for x in (0.0, 1.0, 10.0)
        )
    except (pint.PintError, ArithmeticError, ValueError):
        # pint refuses °C -> Δ°C, and a logarithm of 0 W has no value.
        raise UnitError(
            f"{source.symbol} does not convert to {target.symbol} by a scale and an offset "
            "(an absolute temperature and a temperature difference, or a logarithmic unit)"
        ) from None
    a = one - b
    if not math.isclose(10.0 * a + b, check, rel_tol=1e-9, abs_tol=1e-12):
        raise UnitError(
            f"{source.symbol} does not convert to {target.symbol} by a scale and an offset "
            "(a logarithmic unit)"
        )
    return a, b
