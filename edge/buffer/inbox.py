"""The de-duplication inbox of at-least-once deliveries (MQTT QoS 1), in the ``mqtt_unacked`` table.

A crash between the commit and the PUBACK makes the broker deliver the message again, flagged
DUP. So the commit that stores a message's readings also records its key (packet id, digest of
topic+payload); the first commit after its PUBACK deletes the row (:meth:`Inbox.forget`); and a
DUP message whose key is still recorded -- committed, not known to be acked -- is a copy.

Packet ids come back every 65,535 messages: a row that outlived its message would make a new
message with the same id and payload look like a copy. Hence the deletion after the ack, and
the purge of every earlier connection's rows at a connection's first message without DUP
(:attr:`Delivery.fresh`): the broker re-sends a persistent session's unacked messages first,
so the rows no DUP copy matched by then belong to messages whose PUBACK did reach it.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass


def message_digest(topic: str, payload: bytes) -> str:
    return hashlib.sha256(topic.encode() + b"\0" + payload).hexdigest()


@dataclass(slots=True)
class Delivery:
    """How a message reached the edge, for the inbox."""

    #: (packet id, digest); None for a delivery that is never repeated (QoS 0)
    key: tuple[int, str] | None
    #: the connection that delivered it (rows of older connections go stale, see the module)
    conn: str = ""
    #: flagged DUP by the broker: it may be one we committed but could not ack
    redelivered: bool = False
    #: the first message of its connection without DUP (see the module)
    fresh: bool = False


class Inbox:
    """The inbox inside one group commit's transaction. Rows to record are queued and written
    with one statement; they are written before any look-up, since a copy may follow its
    original within the very same group."""

    __slots__ = ("_c", "_queued")

    def __init__(self, c: sqlite3.Connection) -> None:
        self._c = c
        self._queued: list[tuple[int, str, str, float]] = []

    def forget(self, acked: Sequence[tuple[int, str]]) -> None:
        """Delete the rows of messages acknowledged since the last commit."""
        if acked:
            self._c.executemany("DELETE FROM mqtt_unacked WHERE mid = ? AND digest = ?", acked)

    def is_copy(self, d: Delivery) -> bool:
        """Whether the message is a copy of one committed and not yet acked (then it must not
        be stored again); a fresh delivery first purges the rows of earlier connections."""
        if d.fresh:
            self.flush()
            self._c.execute("DELETE FROM mqtt_unacked WHERE conn != ?", (d.conn,))
        if d.key is None or not d.redelivered:
            return False
        self.flush()
        row = self._c.execute("SELECT digest FROM mqtt_unacked WHERE mid = ?", (d.key[0],))
        found = row.fetchone()
        return found is not None and found[0] == d.key[1]

    def record(self, d: Delivery, now: float) -> None:
        """The message is committed in this transaction: remember it until its ack."""
        if d.key is not None:
            self._queued.append((d.key[0], d.key[1], d.conn, now))

    def flush(self) -> None:
        if self._queued:
            sql = "INSERT OR REPLACE INTO mqtt_unacked VALUES (?, ?, ?, ?)"
            self._c.executemany(sql, self._queued)
            self._queued.clear()
