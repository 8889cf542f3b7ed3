"""Reading sources: a serial port (pyserial + the hardware decoders), an MQTT subscription, and
whatever else is installed.

Every module of this package that registers a :class:`~edge.sources.base.SourceKind` is a
built-in source; a source of another package is named by a ``benchlink.edge_sources`` entry
point (its value: the module that registers it). :func:`kinds` imports both, once, before
the first config is validated.
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points
from typing import Any

from edge.sources.base import SourceKind, registered

ENTRY_POINT_GROUP = "benchlink.edge_sources"

_failed: dict[str, str] = {}


class _Modules:
    #: set before the import: a module that asks for the kinds as it is imported gets those
    #: registered so far, not a second import of every module
    loaded = False


def kinds() -> dict[str, SourceKind[Any]]:
    """Every source kind: the built-ins and those installed under the entry point group."""
    if not _Modules.loaded:
        _Modules.loaded = True
        for module in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{module.name}")
        for point in entry_points(group=ENTRY_POINT_GROUP):
            try:
                point.load()
            except Exception as exc:  # a broken plugin must not stop sensors that do not use it
                _failed[point.name] = f"{point.value}: {type(exc).__name__}: {exc}"
    return registered()


def failed() -> dict[str, str]:
    """Entry points that could not be loaded: name -> why."""
    return dict(_failed)
