"""The de-duplication inbox of at-least-once deliveries (MQTT QoS 1), in the ``mqtt_unacked`` table.

The broker sends a message again when it does not know that the daemon took it: after a crash
of the daemon between the commit and the PUBACK, and after a restart of the broker, which comes
back with the state it last saved. A PUBACK the daemon wrote is not a PUBACK the broker
processed: a broker stopped gracefully may save its state without the acks still in its socket,
and a broker killed comes back with the state of its last autosave -- every message the daemon
took since then is sent again (Mosquitto flags all of them DUP; the MQTT standard would allow
those that were only queued at the save to come without the flag).

So the commit that stores a message's readings also records its key (packet id, digest of
topic+payload), and the row stays after the ack: it is replaced when the broker reuses the
packet id for a new message, and deleted once it is :data:`WINDOW` packet ids behind the newest
message committed (the table holds at most that many rows). "Newest" only moves forward (by
less than half the ids): a message committed behind it does not move it back.

Which message is a copy: the broker numbers a session's messages in the order it queues them
(packet id + 1 each, wrapping at 65,535) and sends them in that order, and the daemon commits
them in that order. A copy was committed before, so its packet id is at or behind the newest
one committed (the ``mqtt_last_mid`` entry of the ``edge`` table); a message the daemon has
never seen comes after it. A message is a copy when its key is recorded *and* its packet id
lies less than :data:`WINDOW` ids behind the newest: without that second test, a new message
that reuses an id 65,535 messages later with the same payload (a sensor that sends ``0`` every
second) would look like the copy of the old one. The window bounds what a broker restored from
an old save may send again: fewer than :data:`WINDOW` messages taken between two saves of the
broker.

Which messages are looked up (:attr:`Delivery.suspect`, set by the source): those flagged DUP,
and, at the start of a connection, those whose readings all carry the device's own timestamp.
A broker restored from an old save forgets the packet ids it gave after the save, and gives
them again to new messages: a new message then has the packet id of a message the daemon took
before the broker died, behind the newest one. For a message that carries its own timestamps,
the same topic and payload is the same reading (same sensor, same time, same value: the cloud
keeps one reading per sensor and timestamp anyway), so dropping it loses nothing. A bare number
is stamped by the edge on arrival: the same value twice may be two readings, so such a message
without DUP is never dropped -- a copy of it sent without DUP is stored twice, which is better
than a real reading lost.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass

#: packet ids of MQTT (1..65535; the broker skips 0)
MIDS = 65_535
#: how far behind the newest committed packet id a copy may be (see the module); half the ids,
#: so a new message (just after the newest) is never within it
WINDOW = 32_768
#: the ``edge`` table's entry with the newest committed packet id
LAST_MID = "mqtt_last_mid"


def message_digest(topic: str, payload: bytes) -> str:
    return hashlib.sha256(topic.encode() + b"\0" + payload).hexdigest()


@dataclass(slots=True)
class Delivery:
    """How a message reached the edge, for the inbox."""

    #: (packet id, digest); None for a delivery that is never repeated (QoS 0)
    key: tuple[int, str] | None
    #: the connection that delivered it
    conn: str = ""
    #: flagged DUP by the broker: it may be one we committed but could not ack
    redelivered: bool = False
    #: it may be a copy: look it up (DUP, or self-timestamped at a connection's start)
    suspect: bool = False

    def __post_init__(self) -> None:
        if self.redelivered:
            self.suspect = True


def behind(newest: int, mid: int) -> int:
    """How many packet ids ``mid`` comes before ``newest`` (0: the same)."""
    return (newest - mid) % MIDS


class Inbox:
    """The inbox inside one group commit's transaction. Rows to record are queued and written
    with one statement at the end; a look-up sees the queued ones first, since a copy may follow
    its original within the very same group (two connections' writes in one group)."""

    __slots__ = ("_c", "_last", "_loaded", "_queued", "_start")

    def __init__(self, c: sqlite3.Connection) -> None:
        self._c = c
        self._queued: dict[int, tuple[str, str, float]] = {}
        self._last: int | None = None
        self._loaded = False
        #: the newest packet id before this transaction
        self._start: int | None = None

    def _newest(self) -> int | None:
        if not self._loaded:
            row = self._c.execute("SELECT value FROM edge WHERE key = ?", (LAST_MID,)).fetchone()
            self._last = self._start = int(row[0]) if row else None
            self._loaded = True
        return self._last

    def is_copy(self, d: Delivery) -> bool:
        """Whether the message is a copy of one committed before (then it must not be stored
        again). Only suspects are looked up."""
        if d.key is None or not d.suspect:
            return False
        mid, digest = d.key
        newest = self._newest()
        # No newest id yet: a file written before it was kept, whose rows are only those of
        # messages committed and not known to be acked -- a match is a copy.
        if newest is not None and behind(newest, mid) >= WINDOW:
            return False
        queued = self._queued.get(mid)
        if queued is not None:
            return queued[0] == digest
        row = self._c.execute("SELECT digest FROM mqtt_unacked WHERE mid = ?", (mid,)).fetchone()
        return row is not None and row[0] == digest

    def record(self, d: Delivery, now: float) -> None:
        """The message is committed in this transaction: remember it."""
        if d.key is not None:
            newest = self._newest()
            mid = d.key[0]
            self._queued[mid] = (d.key[1], d.conn, now)
            # The newest only moves forward: a message committed behind it (one a broker
            # restored from an old save numbered again, or a copy that could not be told)
            # must not retire the rows of the copies that may still follow it.
            if newest is None or 0 < (mid - newest) % MIDS <= MIDS - WINDOW:
                self._last = mid

    def flush(self) -> None:
        if not self._queued:
            return
        self._c.executemany(
            "INSERT OR REPLACE INTO mqtt_unacked VALUES (?, ?, ?, ?)",
            [(mid, *rest) for mid, rest in self._queued.items()],
        )
        self._queued.clear()
        last = self._last
        if last is None or last == self._start:
            return
        self._start = last
        self._c.execute("INSERT OR REPLACE INTO edge (key, value) VALUES (?, ?)", (LAST_MID, last))
        # Retire the rows that fell out of the window: ids from newest + 1 to newest + (MIDS -
        # WINDOW), cyclically -- one or two ranges of the primary key, so only rows that just
        # fell out are touched (and a file from before the window loses its unbounded rows).
        lo, n = last + 1, MIDS - WINDOW
        for a, b in _ranges(lo, n):
            self._c.execute("DELETE FROM mqtt_unacked WHERE mid BETWEEN ? AND ?", (a, b))


def _ranges(first: int, n: int) -> list[tuple[int, int]]:
    """``n`` packet ids from ``first`` on, cyclically, as at most two ranges of 1..MIDS."""
    first = (first - 1) % MIDS + 1
    last = first + n - 1
    if last <= MIDS:
        return [(first, last)]
    return [(first, MIDS), (1, last - MIDS)]
