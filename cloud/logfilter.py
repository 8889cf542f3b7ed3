"""Keep stream tickets out of the server's logs.

Browsers pass their stream ticket in the URL (``?ticket=``), and uvicorn logs request URLs
with their query: the access log for HTTP (SSE), its error logger for WebSocket handshakes.
A filter on both loggers replaces each ticket with ``[redacted]`` before anything is written.
"""

from __future__ import annotations

import logging
import re

#: The loggers uvicorn writes request URLs to.
URL_LOGGERS = ("uvicorn.access", "uvicorn.error")

_TICKET = re.compile(r"([?&]ticket=)[^&\s\"']*")


def redact(text: str) -> str:
    return _TICKET.sub(r"\1[redacted]", text)


class RedactTickets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and "ticket=" in record.msg:
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple) and any(
            isinstance(a, str) and "ticket=" in a for a in record.args
        ):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def install() -> None:
    """Add the filter to uvicorn's loggers once per process (apps may be created often)."""
    for name in URL_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTickets) for f in logger.filters):
            logger.addFilter(RedactTickets())
