"""The SQLite buffer on real files: group commit, sealing, bindings, budget, retention."""

from __future__ import annotations

import json
import os
import stat
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.buffer import (
    DEAD,
    PENDING,
    SYNCED,
    Buffer,
    BufferFull,
    Delivery,
    NewReading,
    Write,
    batches,
    message_digest,
    ts_text,
)
from edge.sync import encode

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def readings(sid: str, n: int, start: int = 0) -> list[NewReading]:
    return [
        NewReading(sid, T0 + timedelta(seconds=i), float(i), {"seq": i})
        for i in range(start, start + n)
    ]


def test_file_mode_is_private_and_wal(tmp_path: Path) -> None:
    buf = Buffer(tmp_path / "sub" / "b.db")
    try:
        assert stat.S_IMODE(os.stat(tmp_path / "sub" / "b.db").st_mode) == 0o600
        assert buf.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert buf.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        buf.close()


def test_group_commit_and_seal_keep_arrival_order(buffer: Buffer, sensor: str) -> None:
    res = buffer.commit([Write(readings(sensor, 5)), Write(readings(sensor, 5, start=5))])
    assert [r.committed for r in res] == [5, 5]  # type: ignore[union-attr]
    assert buffer.seal(sensor, 4) == 3
    seqs = []
    while (b := buffer.next_batch(sensor)) is not None:
        body = buffer.batch_body(b.id)
        seqs.append([r["meta"]["seq"] for r in body["readings"]])
        buffer.mark_synced(b.id, b.count, 0)
    assert seqs == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_seal_waits_for_a_young_partial_batch(buffer: Buffer, sensor: str) -> None:
    buffer.commit([Write(readings(sensor, 3))])
    assert buffer.seal(sensor, 2, older_than=0.0) == 1  # the full batch only
    assert buffer.seal(sensor, 2) == 1


def test_sealed_batch_is_stable(buffer: Buffer, sensor: str, tmp_path: Path) -> None:
    buffer.commit([Write(readings(sensor, 3))])
    buffer.seal(sensor, 10)
    b = buffer.next_batch(sensor)
    assert b is not None
    buffer.mark_inflight(b.id)
    body = buffer.batch_body(b.id)
    buffer.commit([Write(readings(sensor, 3, start=3))])
    # a "crash": reopen the file; the inflight batch comes back with the same id and body
    again = Buffer(buffer.path)
    try:
        assert again.seal(sensor, 10) == 1
        b2 = again.next_batch(sensor)
        assert b2 is not None and b2.id == b.id and b2.attempts == 1
        assert again.batch_body(b.id) == body
    finally:
        again.close()


def test_bind_changes_following_readings_only(buffer: Buffer, sensor: str) -> None:
    buffer.commit([Write(readings(sensor, 2))])
    run2, ses2 = str(uuid.uuid4()), str(uuid.uuid4())
    buffer.bind(sensor, run2, ses2)
    buffer.commit([Write(readings(sensor, 2, start=2))])
    buffer.seal(sensor, 100)
    first = buffer.next_batch(sensor)
    assert first is not None and first.count == 2 and first.run_id != run2
    buffer.mark_synced(first.id, 2, 0)
    second = buffer.next_batch(sensor)
    assert second is not None and (second.run_id, second.capture_session_id) == (run2, ses2)
    with pytest.raises(KeyError):
        buffer.bind(str(uuid.uuid4()), run2, ses2)


def test_config_binding_wins_only_when_the_config_changed(buffer: Buffer, sensor: str) -> None:
    row = buffer.sensors()[0]
    buffer.bind(sensor, "r-cli", "s-cli")
    buffer.upsert_sensor(
        sensor, "new-token", "mqtt", row["config_run_id"], row["config_session_id"]
    )
    row = buffer.sensors()[0]
    assert (row["run_id"], row["token"]) == ("r-cli", "new-token")
    buffer.upsert_sensor(sensor, "new-token", "mqtt", "r-cfg", "s-cfg")
    assert buffer.sensors()[0]["run_id"] == "r-cfg"


def test_unknown_sensor_reading_is_dead_lettered(buffer: Buffer) -> None:
    (res,) = buffer.commit([Write(readings(str(uuid.uuid4()), 1))])
    assert not isinstance(res, BufferFull) and res.committed == 0 and res.dead == 1
    assert buffer.dead_letters()[0]["reason"] == "unknown sensor"


def test_mqtt_redelivery_is_stored_once(buffer: Buffer, sensor: str) -> None:
    digest = message_digest("t", b"1.5")
    w = Write(readings(sensor, 1), delivery=Delivery((7, digest)))
    buffer.commit([w])
    dup = Write(readings(sensor, 1), delivery=Delivery((7, digest), redelivered=True))
    (res,) = buffer.commit([dup])
    assert not isinstance(res, BufferFull) and res.duplicate and res.committed == 0
    # the same bytes without DUP are a new message that reuses the packet id
    (res,) = buffer.commit([Write(readings(sensor, 1), delivery=Delivery((7, digest)))])
    assert not isinstance(res, BufferFull) and res.committed == 1
    # DUP with another payload is not the same message
    other = Delivery((7, "other"), redelivered=True)
    (res,) = buffer.commit([Write(readings(sensor, 1), delivery=other)])
    assert not isinstance(res, BufferFull) and res.committed == 1


def test_budget_refuses_loudly_and_prunes_synced_first(tmp_path: Path, sensor: str) -> None:
    buf = Buffer(tmp_path / "small.db", max_bytes=1)
    try:
        buf.upsert_sensor(sensor, "t", "mqtt", "r", "s")
        buf.max_bytes = buf.used_bytes() + 40_000
        results = [buf.commit([Write(readings(sensor, 200, start=i * 200))])[0] for i in range(20)]
        refused = [r for r in results if isinstance(r, BufferFull)]
        assert refused, "the budget must refuse once reached"
        stored = buf.conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0]
        assert stored == 200 * (20 - len(refused))
        # syncing everything makes room again: synced rows go before new ones are refused
        buf.seal(sensor, 1000)
        while (b := buf.next_batch(sensor)) is not None:
            buf.mark_synced(b.id, b.count, 0)
        (res,) = buf.commit([Write(readings(sensor, 10, start=10_000))])
        assert not isinstance(res, BufferFull) and res.committed == 10
    finally:
        buf.close()


def test_retention_prunes_only_synced(buffer: Buffer, sensor: str) -> None:
    buffer.commit([Write(readings(sensor, 4))])
    buffer.seal(sensor, 2)
    b = buffer.next_batch(sensor)
    assert b is not None
    buffer.mark_synced(b.id, 2, 0)
    assert buffer.prune(retention_s=3600) == 0
    assert buffer.prune(retention_s=0) == 1
    assert buffer.conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0] == 2


def test_dead_letter_retry_and_replay_requeue(buffer: Buffer, sensor: str) -> None:
    buffer.commit([Write(readings(sensor, 4))])
    buffer.seal(sensor, 2)
    b1 = buffer.next_batch(sensor)
    assert b1 is not None
    buffer.mark_dead(b1.id, "401 Unauthorized")
    b2 = buffer.next_batch(sensor)
    assert b2 is not None and b2.id != b1.id  # a dead batch does not block the next
    buffer.mark_synced(b2.id, 2, 0)
    assert buffer.status()["sensors"][sensor]["dead"] == 2
    assert buffer.retry_dead().batches == 1
    assert buffer.retry_dead().batches == 0
    again = buffer.next_batch(sensor)
    assert again is not None and again.id == b1.id and again.state == PENDING
    buffer.mark_synced(b1.id, 2, 0)
    n = buffer.requeue_range(ts_text(T0 + timedelta(seconds=2)), ts_text(T0 + timedelta(hours=1)))
    assert n == 1
    nb = buffer.next_batch(sensor)
    assert nb is not None and nb.id == b2.id
    states = dict(buffer.conn.execute("SELECT id, state FROM batches").fetchall())
    assert states == {b1.id: SYNCED, b2.id: PENDING}
    assert DEAD not in states.values()


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 30), min_size=1, max_size=8),
    batch_size=st.integers(1, 17),
    rebind_after=st.integers(0, 8),
)
def test_sealing_partitions_every_reading_once_in_order(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], batch_size: int, rebind_after: int
) -> None:
    # Two sensors whose readings interleave in the table, as several sources write at once:
    # sealing one sensor must take exactly its own oldest readings.
    buf = Buffer(tmp_path_factory.mktemp("h") / "b.db")
    try:
        sid, other = str(uuid.uuid4()), str(uuid.uuid4())
        buf.upsert_sensor(sid, "t", "mqtt", "r0", "s0")
        buf.upsert_sensor(other, "u", "mqtt", "r0", "s0")
        start = 0
        for i, n in enumerate(sizes):
            if i == rebind_after:
                buf.bind(sid, "r1", "s1")
            buf.commit([Write(readings(sid, n, start)), Write(readings(other, i % 3 + 1, 0))])
            start += n
            buf.seal(sid, batch_size, older_than=0.0 if i % 2 else None)
        buf.seal(sid, batch_size)
        seen: list[int] = []
        while (b := buf.next_batch(sid)) is not None:
            body = buf.batch_body(b.id)
            assert 1 <= len(body["readings"]) <= batch_size
            assert body["sensor_id"] == sid
            seen += [r["meta"]["seq"] for r in body["readings"]]
            buf.mark_synced(b.id, b.count, 0)
        assert seen == list(range(start))
        assert buf.next_batch(other) is None  # never sealed: none of its readings were taken
        assert buf.seal(other, 1000) == 1
    finally:
        buf.close()


def test_ts_text_is_utc_and_sortable() -> None:
    a = datetime(2026, 1, 1, 13, 0, tzinfo=timezone(timedelta(hours=2)))
    assert ts_text(a) == "2026-01-01T11:00:00.000000+00:00"
    with pytest.raises(ValueError):
        ts_text(datetime(2026, 1, 1))
    assert json.loads(json.dumps(ts_text(T0)))


def test_ts_text_zero_pads_the_year_and_refuses_out_of_range() -> None:
    assert ts_text(datetime(999, 1, 2, tzinfo=UTC)) == "0999-01-02T00:00:00.000000+00:00"
    late = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-14)))
    with pytest.raises(ValueError, match="out of range"):
        ts_text(late)


def test_a_reading_the_cloud_would_refuse_is_dead_lettered_alone(
    buffer: Buffer, sensor: str
) -> None:
    """One bad reading must not fail the group commit (OverflowError) or its whole batch (422)."""
    late = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-14)))
    w = Write(
        [
            NewReading(sensor, T0, 1.0),
            NewReading(sensor, late, 2.0),
            NewReading(sensor, T0, 3.0, {"x": [1, float("nan")]}),
            NewReading(sensor, T0, 4.0, {"n": 10**5000}),
            NewReading(sensor, T0, float("inf")),
            NewReading(sensor, T0, 6.0, {"ok": True, "smile": "\U0001f600"}),
            # a lone surrogate (JSON can spell "\ud800"): it could never be sent, and a batch
            # holding it would block the sensor's queue
            NewReading(sensor, T0, 7.0, {"s": "\ud800"}),
        ]
    )
    (res,) = buffer.commit([w, Write(readings(sensor, 1, start=8))])[:1]
    assert not isinstance(res, BufferFull) and (res.committed, res.dead) == (2, 5)
    values = [r[0] for r in buffer.conn.execute("SELECT raw_value FROM readings ORDER BY id")]
    assert values == [1.0, 6.0, 8.0]
    reasons = [d["reason"] for d in buffer.dead_letters()]
    assert any("out of range" in r for r in reasons) and any("NaN" in r for r in reasons)
    assert any("lone surrogate" in r for r in reasons)
    buffer.seal(sensor, 10)
    b = buffer.next_batch(sensor)
    assert b is not None and json.loads(encode(buffer.batch_body(b.id)))["readings"][1]["meta"] == {
        "ok": True,
        "smile": "\U0001f600",
    }
    assert any("raw_value" in r for r in reasons) and any("meta" in r for r in reasons)


def test_a_batch_stays_below_the_cloud_body_limit(buffer: Buffer, sensor: str) -> None:
    from common.wire import MAX_TELEMETRY_BODY_BYTES

    big = "x" * 1_000_000
    buffer.commit([Write([NewReading(sensor, T0, float(i), {"blob": big}) for i in range(10)])])
    made = buffer.seal(sensor, 1000)
    assert made >= 3
    seen = []
    while (b := buffer.next_batch(sensor)) is not None:
        body = encode(buffer.batch_body(b.id))  # what the sync loop sends
        assert len(body) < MAX_TELEMETRY_BODY_BYTES
        seen += [r["raw_value"] for r in buffer.batch_body(b.id)["readings"]]
        buffer.mark_synced(b.id, b.count, 0)
    assert seen == [float(i) for i in range(10)]


def test_dead_letters_rotate_but_dead_batches_stay(buffer: Buffer, sensor: str) -> None:
    from edge.buffer import DeadLetter

    buffer.commit([Write(readings(sensor, 2))])
    buffer.seal(sensor, 10)
    b = buffer.next_batch(sensor)
    assert b is not None
    buffer.mark_dead(b.id, "401")
    poison = [DeadLetter("mqtt_payload", "not JSON", payload=f"#{i}") for i in range(250)]
    buffer.commit([Write(dead=poison)])
    assert buffer.rotate_dead_letters(keep=100) == 150
    left = buffer.dead_letters(limit=1000)
    assert len(left) == 101 and any(d["batch_id"] == b.id for d in left)
    assert left[0]["payload"] == "#249"  # the newest are kept
    assert buffer.status()["sensors"][sensor]["dead"] == 2


def test_budget_counts_the_wal_and_gauges_are_cheap(buffer: Buffer, sensor: str) -> None:
    buffer.commit([Write(readings(sensor, 500))])
    wal = os.path.getsize(f"{buffer.path}-wal")
    c = buffer.conn
    pages = (
        c.execute("PRAGMA page_count").fetchone()[0] * c.execute("PRAGMA page_size").fetchone()[0]
    )
    assert wal > 0 and buffer.used_bytes() >= pages - 100_000 + wal
    buffer.seal(sensor, 100, older_than=0.0)
    buffer.commit([Write(readings(sensor, 7, start=500))])
    assert buffer.gauges()[1] == 507
    plan = " ".join(
        str(r[-1])
        for r in c.execute(
            "EXPLAIN QUERY PLAN SELECT COUNT(*) FROM readings WHERE sensor_id = ? AND arrived >= ?",
            (sensor, 0.0),
        )
    )
    assert "readings_arrived" in plan  # status's rate is a range scan, not a full scan


def test_the_old_inbox_keeps_only_its_last_seconds(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    c = sqlite3.connect(path)
    c.execute("CREATE TABLE mqtt_inbox (mid INTEGER PRIMARY KEY, digest TEXT NOT NULL, at REAL)")
    c.executemany("INSERT INTO mqtt_inbox VALUES (?, ?, ?)", [(1, "a", 100.0), (2, "b", 1000.0)])
    c.commit()
    c.close()
    buf = Buffer(path)
    try:
        rows = buf.conn.execute("SELECT mid, digest, conn FROM mqtt_unacked").fetchall()
        assert rows == [(2, "b", "")]
        gone = buf.conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'mqtt_inbox'")
        assert gone.fetchone() is None
    finally:
        buf.close()


def test_sealing_ahead_cuts_only_until_that_many_batches_wait(buffer: Buffer, sensor: str) -> None:
    """The sync loop seals a few batches ahead of what it sends, not a whole backlog at once;
    the batches are the same as sealing everything would cut, in the same order."""
    buffer.commit([Write([NewReading(sensor, T0, float(i)) for i in range(10)])])
    assert buffer.seal(sensor, 2, ahead=3) == 3
    assert buffer.seal(sensor, 2, ahead=3) == 0  # three wait already
    first = buffer.next_batch(sensor)
    assert first is not None
    buffer.mark_synced(first.id, 2, 0)
    assert buffer.seal(sensor, 2, ahead=3) == 1
    assert buffer.seal(sensor, 2) == 1  # the rest
    values = []
    while (b := buffer.next_batch(sensor)) is not None:
        values += [r["raw_value"] for r in buffer.batch_body(b.id)["readings"]]
        buffer.mark_synced(b.id, b.count, 0)
    assert values == [float(i) for i in range(2, 10)]


def _values(buf: Buffer, batch_id: str) -> list[float]:
    return [r["raw_value"] for r in buf.batch_body(batch_id)["readings"]]


def _send_all(buf: Buffer, sensor: str) -> list[list[float]]:
    sent = []
    while (b := buf.next_batch(sensor)) is not None:
        sent.append(_values(buf, b.id))
        buf.mark_synced(b.id, b.count, 0)
    return sent


def test_new_readings_after_a_full_prune_are_still_sent(buffer: Buffer, sensor: str) -> None:
    """Sealing is a range of reading ids up to the sensor's ``sealed_upto``: a reading that got
    an id at or below it (SQLite reuses the ids of the newest rows once they are deleted) would
    never be sent."""
    buffer.commit([Write([NewReading(sensor, T0, float(i)) for i in range(5)])])
    buffer.seal(sensor, 10)
    assert _send_all(buffer, sensor) == [[0.0, 1.0, 2.0, 3.0, 4.0]]
    assert buffer.prune(retention_s=0) == 1
    assert buffer.conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0] == 0
    buffer.commit([Write([NewReading(sensor, T0, 9.0)])])
    assert buffer.gauges()[1] == 1 and buffer.status()["sensors"][sensor]["pending"] == 1
    assert buffer.seal(sensor, 10) == 1
    assert _send_all(buffer, sensor) == [[9.0]]


def test_a_split_ranged_batch_keeps_its_place_and_its_refused_reading_stays_out(
    buffer: Buffer, sensor: str
) -> None:
    buffer.commit([Write([NewReading(sensor, T0, float(i)) for i in range(6)])])
    assert buffer.seal(sensor, 3) == 2
    first = buffer.next_batch(sensor)
    assert first is not None
    new_id = buffer.split_batch(first.id, {1: "value: out of range"}, "422")
    assert new_id is not None and new_id != first.id
    (dead,) = [d for d in buffer.dead_letters() if d["kind"] == "batch"]
    assert _values(buffer, dead["batch_id"]) == [1.0]
    buffer.commit([Write([NewReading(sensor, T0, 6.0)])])
    buffer.seal(sensor, 3)
    assert _send_all(buffer, sensor) == [[0.0, 2.0], [3.0, 4.0, 5.0], [6.0]]
    # the refused reading goes again on its own when an operator retries it
    assert buffer.retry_dead(rebind=True).batches == 1
    assert _send_all(buffer, sensor) == [[1.0]]
    assert buffer.prune(retention_s=0) == 4
    assert buffer.conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0] == 0


V1_SCHEMA = """
CREATE TABLE sensors (sensor_id TEXT PRIMARY KEY, token TEXT NOT NULL, source TEXT NOT NULL,
    run_id TEXT NOT NULL, capture_session_id TEXT NOT NULL, config_run_id TEXT,
    config_session_id TEXT, bound_at REAL);
CREATE TABLE readings (id INTEGER PRIMARY KEY, sensor_id TEXT NOT NULL, run_id TEXT NOT NULL,
    capture_session_id TEXT NOT NULL, ts TEXT NOT NULL, raw_value REAL NOT NULL, meta TEXT,
    arrived REAL NOT NULL, batch_id TEXT);
CREATE INDEX readings_unsealed ON readings (sensor_id, id) WHERE batch_id IS NULL;
CREATE INDEX readings_batch ON readings (batch_id);
CREATE INDEX readings_arrived ON readings (sensor_id, arrived);
CREATE TABLE batches (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    sensor_id TEXT NOT NULL, run_id TEXT NOT NULL, capture_session_id TEXT NOT NULL,
    state TEXT NOT NULL, count INTEGER NOT NULL, first_ts TEXT NOT NULL, last_ts TEXT NOT NULL,
    sealed_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT,
    last_attempt_at REAL, synced_at REAL, accepted INTEGER, late INTEGER);
"""


def test_a_buffer_of_the_first_scheme_keeps_its_batches_and_seals_the_rest(
    tmp_path: Path,
) -> None:
    """Written before ranged batches: each sealed reading carries its batch id. The batches
    go out as they were (same id, same readings); only the unsealed readings are cut anew."""
    import sqlite3

    path = tmp_path / "v1.db"
    c = sqlite3.connect(path)
    c.executescript(V1_SCHEMA)
    sid, other = str(uuid.uuid4()), str(uuid.uuid4())
    for s in (sid, other):
        c.execute("INSERT INTO sensors VALUES (?, 't', 'mqtt', 'r', 's', 'r', 's', 0)", (s,))
    ts = ts_text(T0)
    owner = {1: "A", 2: "A", 3: None, 4: "B", 5: "A", 6: "B", 7: None, 8: None}
    for i, batch in owner.items():
        s = other if i == 3 else sid  # another sensor's reading in between
        c.execute(
            "INSERT INTO readings VALUES (?, ?, 'r', 's', ?, ?, NULL, 0, ?)", (i, s, ts, i, batch)
        )
    for seq, (bid, state) in enumerate([("A", PENDING), ("B", DEAD)], 1):
        c.execute(
            "INSERT INTO batches (seq, id, sensor_id, run_id, capture_session_id, state, count,"
            " first_ts, last_ts, sealed_at) VALUES (?, ?, ?, 'r', 's', ?, 3, ?, ?, 0)",
            (seq, bid, sid, state, ts, ts),
        )
    c.commit()
    c.close()

    buf = Buffer(path)
    try:
        indexes = {r[0] for r in buf.conn.execute("SELECT name FROM sqlite_master")}
        assert {"readings_explicit", "readings_sensor"} <= indexes
        assert not {"readings_batch", "readings_unsealed"} & indexes
        assert buf.gauges()[1] == 3 + 3  # A; the unsealed 7 and 8, and the other sensor's 3
        a = buf.next_batch(sid)
        assert a is not None and a.id == "A" and _values(buf, "A") == [1.0, 2.0, 5.0]
        assert buf.seal(sid, 10) == 1
        assert _send_all(buf, sid) == [[1.0, 2.0, 5.0], [7.0, 8.0]]
        buf.conn.execute(
            "INSERT INTO dead_letter (at, kind, sensor_id, batch_id, reason)"
            " VALUES (0, 'batch', ?, 'B', '401')",
            (sid,),
        )
        assert buf.retry_dead(rebind=True).batches == 1
        assert _send_all(buf, sid) == [[4.0, 6.0]]
        assert buf.seal(other, 10) == 1 and _send_all(buf, other) == [[3.0]]
        buf.commit([Write([NewReading(sid, T0, 9.0)])])
        assert buf.seal(sid, 10) == 1 and _send_all(buf, sid) == [[9.0]]
        assert buf.prune(retention_s=0) == 5
        assert buf.conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0] == 0
    finally:
        buf.close()


def test_a_buffer_of_a_later_scheme_is_refused(tmp_path: Path) -> None:
    import sqlite3

    from edge.buffer import SCHEME

    Buffer(tmp_path / "b.db").close()
    c = sqlite3.connect(tmp_path / "b.db")
    assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEME
    c.execute(f"PRAGMA user_version = {SCHEME + 1}")
    c.commit()
    c.close()
    with pytest.raises(RuntimeError, match="newer benchlink-edge"):
        Buffer(tmp_path / "b.db")


def test_a_body_is_read_as_one_while_another_process_splits_the_batch(
    buffer: Buffer, sensor: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI may split a batch while the daemon reads it: the daemon gets the whole batch
    as it was, or no batch -- never the remaining readings under the old key (they would be
    stored under it, then sent again under the new one)."""
    buffer.commit([Write([NewReading(sensor, T0, float(i)) for i in range(4)])])
    buffer.seal(sensor, 10)
    b = buffer.next_batch(sensor)
    assert b is not None
    other = Buffer(buffer.path)
    members = batches.members

    def split_right_after(c: object, batch_id: str) -> object:
        found = members(c, batch_id)  # type: ignore[arg-type]
        monkeypatch.setattr(batches, "members", members)
        other.split_batch(batch_id, {1: "refused"}, "422")  # the CLI, at this very moment
        return found

    monkeypatch.setattr(batches, "members", split_right_after)
    try:
        assert _values(buffer, b.id) == [0.0, 1.0, 2.0, 3.0]
        with pytest.raises(KeyError):
            buffer.batch_body(b.id)
    finally:
        other.close()
