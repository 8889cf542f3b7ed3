"""What the hub needs from outside it: a store that reads readings back from the database,
and a bus that carries batch headers between the API processes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from cloud.live.events import BatchHeader, Row, StreamFilter

if TYPE_CHECKING:
    from cloud.live.hub import Hub


class Store(Protocol):
    """Reads readings back from the database (blocking; called in a worker thread)."""

    def rows(self, headers: Sequence[BatchHeader]) -> dict[int, list[Row]]: ...
    def headers_after(
        self, flt: StreamFilter, batch_id: int, limit: int
    ) -> list[BatchHeader] | None:
        """Batch ``batch_id`` and the batches ``flt`` matches that committed after it, in
        commit order, until they hold more than ``limit`` readings; None if ``batch_id`` is
        unknown or not matched."""
        ...

    def headers_since(
        self, flt: StreamFilter, position: int, limit: int
    ) -> list[BatchHeader] | None:
        """The batches ``flt`` matches that committed after commit position ``position``, in
        commit order, until they hold more than ``limit`` readings; None if no batch has
        committed at ``position`` yet (not a position of this database)."""
        ...

    def position(self) -> int:
        """The newest commit position (0 before the first batch)."""
        ...


class Bus(Protocol):
    """Carries batch headers to the hubs of every API process."""

    @property
    def listening(self) -> bool: ...
    async def start(self, hub: Hub) -> None: ...
    async def stop(self) -> None: ...
