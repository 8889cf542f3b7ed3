"""Conversion profiles: how a sensor's ``raw_value`` becomes ``value`` in its display unit.

A profile is ``{version, kind, payload}``. :func:`build_converter` validates the payload of a
kind and returns a :class:`Converter`; an invalid payload raises :class:`ProfileError` naming
the field and the reason, so the API can answer with a precise 422.

Kinds register themselves in :data:`KINDS`; ``linear``, ``polynomial`` and ``lookup_table``
live in :mod:`common.profiles.basic`, ``thermocouple`` in :mod:`common.profiles.thermocouple`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError


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


class Converter(Protocol):
    def convert(self, raw: float, meta: Mapping[str, Any] | None = None) -> float:
        """Return the value in the sensor's display unit, or raise ConversionError."""
        ...


ConverterFactory = Callable[[Mapping[str, Any], str | None], Converter]

#: kind name -> factory(payload, display_unit) -> Converter
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
    kind: str, payload: Mapping[str, Any], display_unit: str | None = None
) -> Converter:
    """Validate a profile and return its converter; raises ProfileError."""
    factory = KINDS.get(kind)
    if factory is None:
        raise ProfileError([("kind", f"unknown kind {kind!r}; one of {sorted(KINDS)}")])
    if not isinstance(payload, Mapping):
        raise ProfileError([("", "payload must be a JSON object")])
    return factory(payload, display_unit)


# Registration happens on import of the modules that define the kinds.
from common.profiles import basic as _basic  # noqa: E402, F401
from common.profiles import thermocouple as _thermocouple  # noqa: E402, F401
