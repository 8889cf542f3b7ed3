"""Lists that follow the server's cursors lazily: a page is fetched when iteration reaches it."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from benchlink._http import Http

T = TypeVar("T")


class Pages(Generic[T]):
    """Iterate to fetch page after page (``limit`` items each); nothing is fetched before.
    Each iteration starts again from the first page."""

    def __init__(
        self,
        http: Http,
        path: str,
        make: Callable[[dict[str, Any]], T],
        params: Mapping[str, Any] | None = None,
        *,
        limit: int = 100,
    ) -> None:
        self._http, self._path, self._make = http, path, make
        self._params = dict(params or {})
        self._limit = limit

    def __iter__(self) -> Iterator[T]:
        for page in self.pages():
            for item in page:
                yield self._make(item)

    def pages(self) -> Iterator[list[dict[str, Any]]]:
        """The raw pages, one request each."""
        cursor: str | None = None
        while True:
            params = {**self._params, "limit": self._limit, "cursor": cursor}
            body = self._http.request("GET", self._path, params=params)
            yield body["items"]
            cursor = body.get("next_cursor")
            if not cursor:
                return

    def first(self) -> T | None:
        """The first item, from one request of one item."""
        body = self._http.request("GET", self._path, params={**self._params, "limit": 1})
        items = body["items"]
        return self._make(items[0]) if items else None

    def to_list(self) -> list[T]:
        return list(self)
