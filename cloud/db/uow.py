"""One transaction per request, opened and committed here and nowhere else.

Routes take a :data:`cloud.deps.DbSession`; the dependency commits after the route returned
(before the response is sent, so a failed commit is an error response, not a lie) and rolls
back on any exception. Work that must only happen once the data is durable (live fan-out)
is registered with :func:`after_commit`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger("benchlink.cloud")

_HOOKS = "benchlink_after_commit"


def after_commit(session: Session, fn: Callable[[], None]) -> None:
    session.info.setdefault(_HOOKS, []).append(fn)


def one_snapshot(session: Session) -> None:
    """Make the session's transaction, not begun yet, read one snapshot throughout: what one
    statement sees, the next sees too, and nothing committed in between (PostgreSQL's
    REPEATABLE READ; a SQLite transaction in WAL mode is one snapshot already)."""
    if session.get_bind().dialect.name == "postgresql":
        if session.in_transaction():
            raise RuntimeError("one_snapshot() must come before the transaction's first statement")
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        hooks = session.info.pop(_HOOKS, [])
        session.close()
    for fn in hooks:
        try:
            fn()
        except Exception:  # a live subscriber must never fail a committed request
            log.exception("after-commit hook failed")
