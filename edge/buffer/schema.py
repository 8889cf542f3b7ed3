"""The buffer's tables and their named migrations.

A buffer's version is ``PRAGMA user_version``: the number of :data:`MIGRATIONS` applied to it.
Opening a buffer applies the missing ones in order, each in a transaction of its own that also
sets the version -- a migration is applied whole or not at all, and one interrupted by a crash
is applied again at the next open. A file of a later version (a newer daemon wrote it) is
refused: reading it as an older version could send readings twice.

Version 0 is every file written before versions were kept; those differ (an ``mqtt_inbox`` table
or not, old indexes), so the migrations look at what is there rather than assume it.
"""

from __future__ import annotations

import logging
import sqlite3
import uuid
from collections.abc import Callable
from typing import NamedTuple

from edge.buffer import faults

log = logging.getLogger("benchlink.edge.buffer")

#: The tables as the first version made them; later migrations change them.
TABLES = """
CREATE TABLE IF NOT EXISTS sensors (
    sensor_id TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    source TEXT NOT NULL,
    run_id TEXT NOT NULL,
    capture_session_id TEXT NOT NULL,
    config_run_id TEXT,
    config_session_id TEXT,
    bound_at REAL
);
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY,
    sensor_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    capture_session_id TEXT NOT NULL,
    ts TEXT NOT NULL,
    raw_value REAL NOT NULL,
    meta TEXT,
    arrived REAL NOT NULL,
    batch_id TEXT
);
CREATE INDEX IF NOT EXISTS readings_sensor ON readings (sensor_id, id);
CREATE INDEX IF NOT EXISTS readings_arrived ON readings (sensor_id, arrived);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    sensor_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    capture_session_id TEXT NOT NULL,
    state TEXT NOT NULL,
    count INTEGER NOT NULL,
    first_ts TEXT NOT NULL,
    last_ts TEXT NOT NULL,
    sealed_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    last_attempt_at REAL,
    synced_at REAL,
    accepted INTEGER,
    late INTEGER
);
CREATE INDEX IF NOT EXISTS batches_queue ON batches (sensor_id, state, seq);
CREATE TABLE IF NOT EXISTS dead_letter (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    sensor_id TEXT,
    batch_id TEXT,
    origin TEXT,
    payload TEXT,
    reason TEXT NOT NULL,
    retried_at REAL
);
CREATE TABLE IF NOT EXISTS mqtt_unacked (
    mid INTEGER PRIMARY KEY,
    digest TEXT NOT NULL,
    conn TEXT NOT NULL,
    at REAL NOT NULL
);
"""

#: The inbox table of the first files, keyed by packet id for ever.
OLD_INBOX = "mqtt_inbox"


def _columns(c: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in c.execute(f"PRAGMA table_info({table})")}


def tables(c: sqlite3.Connection) -> None:
    """(``executescript`` would commit: one statement at a time, inside the migration's.)"""
    for statement in TABLES.split(";"):
        if statement.strip():
            c.execute(statement)


def edge_id(c: sqlite3.Connection) -> None:
    """The buffer's own id, made once: what names this edge (its default MQTT client id) for as
    long as its buffer lives. Run at every open, not as a migration: files of version 2 were
    written before it existed, and a version 3 for it would make an older daemon refuse a file
    it reads perfectly well."""
    c.execute("CREATE TABLE IF NOT EXISTS edge (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    c.execute("INSERT OR IGNORE INTO edge (key, value) VALUES ('edge_id', ?)", (str(uuid.uuid4()),))


def unacked_inbox(c: sqlite3.Connection) -> None:
    """The first files kept every (packet id, digest) for a week, so a new message that reused
    a packet id with an old message's payload was dropped as its copy. Keep only the rows of
    its last few seconds (the only ones that can be committed but unacked); they match a DUP
    copy until the first commit that records the newest packet id, which retires those outside
    the inbox's window (see :mod:`edge.buffer.inbox`)."""
    old = c.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (OLD_INBOX,)
    ).fetchone()
    if old is None:
        return
    c.execute(
        f"INSERT OR REPLACE INTO mqtt_unacked SELECT mid, digest, '', at FROM {OLD_INBOX}"
        f" WHERE at >= (SELECT MAX(at) - 5 FROM {OLD_INBOX})"
    )
    c.execute(f"DROP TABLE {OLD_INBOX}")


def ranged_batches(c: sqlite3.Connection) -> None:
    """Batches as ranges of reading ids (see :mod:`edge.buffer.batches`). The batches sealed
    before stay explicit (their readings carry the batch id); each sensor's ``sealed_upto`` is
    its last sealed reading (sealing always took a sensor's oldest unsealed readings, so every
    reading above it is unsealed); the old indexes give way to the new ones."""
    if "sealed_upto" not in _columns(c, "sensors"):
        c.execute("ALTER TABLE sensors ADD COLUMN sealed_upto INTEGER NOT NULL DEFAULT 0")
        c.execute(
            "UPDATE sensors SET sealed_upto = COALESCE((SELECT MAX(id) FROM readings r"
            " WHERE r.sensor_id = sensors.sensor_id AND r.batch_id IS NOT NULL), 0)"
        )
    if "ranged" not in _columns(c, "batches"):
        c.execute("ALTER TABLE batches ADD COLUMN ranged INTEGER NOT NULL DEFAULT 0")
        c.execute("ALTER TABLE batches ADD COLUMN first_id INTEGER")
        c.execute("ALTER TABLE batches ADD COLUMN last_id INTEGER")
    c.execute("DROP INDEX IF EXISTS readings_unsealed")
    c.execute("DROP INDEX IF EXISTS readings_batch")
    c.execute(
        "CREATE INDEX IF NOT EXISTS readings_explicit ON readings (batch_id)"
        " WHERE batch_id IS NOT NULL"
    )


def sequence_numbers(c: sqlite3.Connection) -> None:
    """Per-sensor sequence numbers (see :mod:`edge.buffer.sequence`). The readings already in
    the file stay without one (``seq`` NULL, "pre-sequence"): some of them may have reached
    the cloud already, unnumbered, and numbering them now would make the cloud's accounting
    count them as missing. They are sent as before and counted by the cloud as arrived
    without edge accounting; every reading committed from here on gets a number, from 1."""
    if "seq" not in _columns(c, "readings"):
        c.execute("ALTER TABLE readings ADD COLUMN seq INTEGER")
    if "seq" not in _columns(c, "sensors"):
        c.execute("ALTER TABLE sensors ADD COLUMN seq INTEGER NOT NULL DEFAULT 0")
    if "seq_first" not in _columns(c, "batches"):
        c.execute("ALTER TABLE batches ADD COLUMN seq_first INTEGER")
        c.execute("ALTER TABLE batches ADD COLUMN seq_last INTEGER")
    c.execute(
        "CREATE TABLE IF NOT EXISTS seq_sessions (sensor_id TEXT NOT NULL,"
        " run_id TEXT NOT NULL, capture_session_id TEXT NOT NULL,"
        " first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,"
        " PRIMARY KEY (sensor_id, first_seq))"
    )


def sensor_faults(c: sqlite3.Connection) -> None:
    """Device faults, as episodes waiting for the cloud (see :mod:`edge.buffer.faults`)."""
    faults.create(c)


def alarm_rules(c: sqlite3.Connection) -> None:
    """Alarm rules pulled from the cloud, their evaluator's state, and the alarms they raised
    at the edge (see :mod:`edge.buffer.alarms`). ``alarm_sensors`` holds each sensor's pulled
    document (rules and conversion profile) as JSON, so a daemon restarted without the cloud
    evaluates the rules it last had."""
    c.execute(
        "CREATE TABLE IF NOT EXISTS alarm_sensors (sensor_id TEXT PRIMARY KEY,"
        " doc TEXT NOT NULL, pulled_at REAL NOT NULL)"
    )
    c.execute(
        "CREATE TABLE IF NOT EXISTS alarm_state (rule_id TEXT PRIMARY KEY,"
        " sensor_id TEXT NOT NULL, rule TEXT NOT NULL, last_ts_us INTEGER,"
        " holding_since_us INTEGER, open_alarm INTEGER)"
    )
    c.execute(
        "CREATE TABLE IF NOT EXISTS edge_alarms (id INTEGER PRIMARY KEY,"
        " sensor_id TEXT NOT NULL, rule_id TEXT NOT NULL, kind TEXT NOT NULL, run_id TEXT,"
        " rule TEXT NOT NULL, raised_at TEXT NOT NULL, value REAL, cleared_at TEXT,"
        " cleared_value REAL, cleared_why TEXT)"
    )
    c.execute("CREATE INDEX IF NOT EXISTS edge_alarms_open ON edge_alarms (cleared_at)")


def tables_and_unacked_inbox(c: sqlite3.Connection) -> None:
    tables(c)
    unacked_inbox(c)


class Migration(NamedTuple):
    name: str
    apply: Callable[[sqlite3.Connection], None]


#: In order, for ever: a new one is appended, none is edited once released. Version 1 is the
#: tables and the trimmed inbox together, since no file was ever written at version 1.
MIGRATIONS: tuple[Migration, ...] = (
    Migration("tables_and_unacked_inbox", tables_and_unacked_inbox),
    Migration("ranged_batches", ranged_batches),
    Migration("sequence_numbers", sequence_numbers),
    Migration("sensor_faults", sensor_faults),
    Migration("alarm_rules", alarm_rules),
)
#: the version this code writes
SCHEME = len(MIGRATIONS)


class NewerScheme(RuntimeError):
    """The file was written by a newer benchlink-edge."""


def migrate(c: sqlite3.Connection, path: object) -> list[str]:
    """Apply the missing migrations (see the module); return the names of those applied."""
    applied: list[str] = []
    # a file with tables is an upgrade, which the log tells; a new one is made silently
    upgrade = c.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] > 0
    while True:
        c.execute("BEGIN IMMEDIATE")
        try:
            version = int(c.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEME:
                raise NewerScheme(
                    f"{path} was written by a newer benchlink-edge (buffer scheme {version};"
                    f" this one knows up to {SCHEME}): run that version, or move the file"
                    " away -- reading it as an older scheme could send readings twice"
                )
            if version == SCHEME:
                edge_id(c)
                c.execute("COMMIT")
                return applied
            step = MIGRATIONS[version]
            step.apply(c)
            c.execute(f"PRAGMA user_version = {version + 1}")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")
        if upgrade:
            log.info("buffer %s: applied migration %d (%s)", path, version + 1, step.name)
        applied.append(step.name)
