"""The buffer's named migrations: files written by earlier versions open and go on as they were."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from edge.buffer import SCHEME, Buffer, Delivery, NewReading, Write, schema
from tests.edge.test_buffer import T0, V1_SCHEMA

FIXTURES = Path(__file__).parent / "fixtures"
A = "11111111-1111-4111-8111-111111111111"
B = "22222222-2222-4222-8222-222222222222"


def _version(path: Path) -> int:
    c = sqlite3.connect(path)
    try:
        return int(c.execute("PRAGMA user_version").fetchone()[0])
    finally:
        c.close()


def _send_all(buf: Buffer, sensor_id: str) -> list[tuple[str, list[float]]]:
    """(batch id, values) of every batch the sensor has to send, each marked synced."""
    sent = []
    while (b := buf.next_batch(sensor_id)) is not None:
        body = buf.batch_body(b.id)
        sent.append((b.id, [r["raw_value"] for r in body["readings"]]))
        buf.mark_synced(b.id, b.count, 0)
    return sent


def test_a_buffer_written_by_the_previous_release_goes_on_where_it_was(tmp_path: Path) -> None:
    """buffer_scheme2.db was written by the buffer of the release before the package (commit
    ad2f47b): sensor A with a synced batch, two pending ones, a dead part split off by a 422
    and two unsealed readings; sensor B with a dead batch, a committed but unacked MQTT message
    (packet id 7, connection c1) and a dead-lettered payload."""
    path = tmp_path / "buffer.db"
    shutil.copy(FIXTURES / "buffer_scheme2.db", path)
    assert _version(path) == 2 < SCHEME
    buf = Buffer(path)
    try:
        assert buf.edge_id() == "bc620de9-bb47-404c-b0d3-71f29131b683"
        assert buf.token(A) == "tok-a"
        status = buf.status()
        assert status["dead_letters"] == 3
        assert {k: status["sensors"][A][k] for k in ("pending", "synced", "dead")} == {
            "pending": 7,
            "synced": 3,
            "dead": 1,
        }
        # the sealed batches go out under their ids, with the same readings; then the rest
        assert _send_all(buf, A) == [
            ("8e5035ad-b577-47b3-a737-f88a54496352", [3.0, 4.0, 5.0]),
            ("67aefd29-84f3-4ca3-a931-d37e83b0c6b8", [6.0, 8.0]),
        ]
        assert buf.seal(A, 10) == 1
        assert [values for _, values in _send_all(buf, A)] == [[9.0, 10.0]]
        # the unacked message's redelivery is still known as a copy
        dup = Delivery((7, "d" * 64), "c2", redelivered=True)
        (res,) = buf.commit([Write([NewReading(B, T0, 5.0)], delivery=dup)])
        assert not isinstance(res, Exception) and res.duplicate
        assert buf.retry_dead(sensor_id=B).batches == 1
        assert [values for _, values in _send_all(buf, B)] == [[0.0, 1.0]]
        # the readings that were in the file are pre-sequence (sent without numbers); the
        # first one committed after the upgrade is its sensor's number 1
        assert buf.conn.execute(
            "SELECT COUNT(*) FROM readings WHERE seq IS NOT NULL"
        ).fetchone() == (0,)
        buf.commit([Write([NewReading(A, T0, 20.0), NewReading(A, T0, 21.0)])])
        assert buf.seal(A, 10) == 1
        b = buf.next_batch(A)
        assert b is not None
        assert buf.batch_body(b.id)["seq"] == {"epoch": buf.edge_id(), "ranges": [[1, 2]]}
    finally:
        buf.close()
    assert _version(path) == SCHEME


def test_each_migration_is_applied_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file of the first scheme (no version): the second migration fails half-way (after
    its first statement); the file keeps the first migration and nothing of the second, and
    the next open applies the second whole."""
    path = tmp_path / "v0.db"
    c = sqlite3.connect(path)
    c.executescript(V1_SCHEMA)
    c.execute("INSERT INTO sensors VALUES (?, 't', 'mqtt', 'r', 's', 'r', 's', 0)", (A,))
    c.execute("INSERT INTO readings VALUES (1, ?, 'r', 's', 'x', 1.0, NULL, 0, 'old')", (A,))
    c.commit()
    c.close()
    ranged = schema.MIGRATIONS[1]

    def half_way(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE sensors ADD COLUMN sealed_upto INTEGER NOT NULL DEFAULT 0")
        raise OSError("power cut")

    monkeypatch.setattr(
        schema, "MIGRATIONS", (schema.MIGRATIONS[0], ranged._replace(apply=half_way))
    )
    with pytest.raises(OSError, match="power cut"):
        Buffer(path)
    assert _version(path) == 1
    c = sqlite3.connect(path)
    columns = {r[1] for r in c.execute("PRAGMA table_info(sensors)")}
    c.close()
    assert "sealed_upto" not in columns
    monkeypatch.undo()

    buf = Buffer(path)
    try:
        row = buf.conn.execute("SELECT sealed_upto FROM sensors").fetchone()
        assert row == (1,)  # its reading was in a batch: sealed
    finally:
        buf.close()
    assert _version(path) == SCHEME


def test_a_file_of_the_current_version_without_an_edge_id_gets_one(tmp_path: Path) -> None:
    """Files of version 2 were written before the buffer had an id of its own."""
    path = tmp_path / "b.db"
    Buffer(path).close()
    c = sqlite3.connect(path)
    c.execute("DROP TABLE edge")
    c.commit()
    c.close()
    buf = Buffer(path)
    try:
        assert len(buf.edge_id()) == 36
    finally:
        buf.close()


def test_migrations_are_named_and_numbered_in_order() -> None:
    names = [m.name for m in schema.MIGRATIONS]
    assert names == [
        "tables_and_unacked_inbox",
        "ranged_batches",
        "sequence_numbers",
        "sensor_faults",
        "alarm_rules",
    ]
    assert len(set(names)) == len(names) and len(names) == SCHEME
