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
