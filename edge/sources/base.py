"""The seam between the daemon and its sources: what a source is, and the registry of kinds.

A *kind* of source (``serial``, ``mqtt``, ...) is a :class:`SourceKind`: its name (the
``source`` value of a ``[[sensors]]`` table), the pydantic model of such a sensor's table, and
a function that turns the configured sensors of that kind into running :class:`Source` s. A
module registers its kind with :func:`register` when it is imported; :mod:`edge.sources` says
which modules are imported.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, get_args

from edge.config import SensorConfig

if TYPE_CHECKING:
    from edge.config import EdgeConfig
    from edge.instance import Refused
    from edge.metrics import EdgeMetrics
    from edge.writer import Writer


class Source(Protocol):
    async def run(self) -> None:
        """Read until cancelled, handing readings to :attr:`SourceContext.writer`. A device
        or network error is logged, counted and retried here: an exception out of ``run``
        stops the daemon (its TaskGroup)."""
        ...


@dataclass(frozen=True)
class SourceContext:
    """What the daemon gives its sources."""

    writer: Writer
    metrics: EdgeMetrics
    #: the whole configuration (``[sync]`` backoff, ``[mqtt]`` broker, ...)
    config: EdgeConfig
    #: the buffer's own id (stable for the buffer's life)
    edge_id: str
    #: stop the daemon as on SIGTERM, then exit with this reason (a source that must not go on)
    refuse: Callable[[Refused], None]
    #: the edge's clock, seconds since 1970 (the daemon's time source: tests shift it)
    now: Callable[[], float] = time.time
    #: the correction (ms) to add to a timestamp the edge gives a reading itself: the clock
    #: estimate's offset with ``[clock] correct = true`` and an estimate, else None
    correction: Callable[[], float | None] = lambda: None


S = TypeVar("S", bound=SensorConfig)


def _no_check(sensors: Sequence[Any]) -> None:
    return None


@dataclass(frozen=True)
class SourceKind(Generic[S]):
    #: the ``source`` value of its sensors' tables
    name: str
    #: the model of one of its sensors' tables; its ``source`` field is ``Literal[name]``
    config: type[S]
    #: the sources that read these sensors (all of this kind), by task name
    start: Callable[[Sequence[S], SourceContext], Mapping[str, Source]]
    #: refuses (ValueError, one line) a set of sensors that cannot work together
    check: Callable[[Sequence[S]], None] = _no_check


_KINDS: dict[str, SourceKind[Any]] = {}


def register(kind: SourceKind[S]) -> SourceKind[S]:
    """Make ``kind`` known under its name; a name taken by another module is a ValueError."""
    field = kind.config.model_fields.get("source")
    if field is None or get_args(field.annotation) != (kind.name,):
        raise TypeError(f"{kind.config.__qualname__}.source must be Literal[{kind.name!r}]")
    known = _KINDS.get(kind.name)
    if known is not None and known.config.__module__ != kind.config.__module__:
        raise ValueError(
            f"source {kind.name!r} of {kind.config.__module__} is taken by"
            f" {known.config.__module__}"
        )
    _KINDS[kind.name] = kind
    return kind


def registered() -> dict[str, SourceKind[Any]]:
    """The kinds registered so far (see :func:`edge.sources.kinds` for all of them)."""
    return dict(_KINDS)
