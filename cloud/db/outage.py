"""What a periodic background task logs when a round fails: a bug gets its traceback every
time; the database out of reach (down, restarting, refusing connections) gets one line when
the task first meets it and one when it is back, not a traceback every few seconds."""

from __future__ import annotations

import logging

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

#: What SQLAlchemy raises when the database cannot be reached or cannot take the statement
#: now (refused, lost, not accepting connections, pool exhausted, a deadlock): the same work
#: may succeed later (a request answers 503 with Retry-After; a job is resumed).
DATABASE_DOWN: tuple[type[Exception], ...] = (OperationalError, InterfaceError, PoolTimeout)

#: PostgreSQL's "connection exception" class and its shutdown / not-yet-accepting codes.
_UNREACHABLE_STATES = ("57P01", "57P02", "57P03")


def retry_later(exc: BaseException) -> bool:
    """Whether the work that raised ``exc`` may succeed if tried again later: one of
    :data:`DATABASE_DOWN`, or any error on a connection the pool found dead."""
    return isinstance(exc, DATABASE_DOWN) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached, rather than that a statement
    failed: a connection that could not be made or was lost."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    import psycopg  # only PostgreSQL's driver says so (SQLite is a file: always there)

    orig = exc.orig
    if not isinstance(orig, psycopg.OperationalError):
        return False
    state = orig.sqlstate
    return state is None or state.startswith("08") or state in _UNREACHABLE_STATES


class RoundLog:
    """One task's failures (``what``: the task, as a log line names it)."""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self.log, self.what = log, what
        self.away = False

    def failed(self, exc: BaseException, retry: str = "tried again next round") -> None:
        if unreachable(exc):
            if not self.away:
                first = str(exc.orig if isinstance(exc, DBAPIError) else exc).strip()
                self.log.warning(
                    "%s: the database is out of reach (%s); %s",
                    self.what, first.splitlines()[0] if first else type(exc).__name__, retry,
                )  # fmt: skip
                self.away = True
            return
        self.log.error("%s failed; %s", self.what, retry, exc_info=exc)

    def succeeded(self) -> None:
        if self.away:
            self.log.warning("%s: the database is back", self.what)
            self.away = False
