"""Per-sensor sequence numbers in the edge buffer: given at commit, contiguous, never reused,
carried by batches as ranges, and reported (captured, sessions, waiting, dead-lettered)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.heartbeat import SequenceReport
from edge.buffer import Buffer, NewReading, Write
from edge.buffer.sequence import merge

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
A, B = "aaaaaaaa-0000-0000-0000-000000000001", "bbbbbbbb-0000-0000-0000-000000000002"
RUN = "11111111-0000-0000-0000-000000000001"
S1, S2 = "22222222-0000-0000-0000-000000000001", "22222222-0000-0000-0000-000000000002"


def reading(sid: str, k: int) -> NewReading:
    return NewReading(sid, T0 + timedelta(seconds=k), float(k))


@pytest.fixture
def buf(tmp_path: Path) -> Any:
    b = Buffer(tmp_path / "buffer.db")
    b.upsert_sensor(A, "tok-a", "serial", RUN, S1)
    b.upsert_sensor(B, "tok-b", "mqtt", RUN, S1)
    yield b
    b.close()


def seqs(buf: Buffer, sid: str) -> list[int]:
    rows = buf.conn.execute("SELECT seq FROM readings WHERE sensor_id = ? ORDER BY id", (sid,))
    return [r[0] for r in rows]


def bodies(buf: Buffer, sid: str) -> list[dict[str, Any]]:
    out = []
    after = None
    while (b := buf.next_batch(sid, after)) is not None:
        out.append(buf.batch_body(b.id))
        after = b.seq
    return out


def test_numbers_are_per_sensor_contiguous_and_sent_as_ranges(buf: Buffer) -> None:
    buf.commit([Write([reading(A, 0), reading(B, 0), reading(A, 1)])])
    buf.commit([Write([reading(B, 1), reading(A, 2)]), Write([reading(A, 3)])])
    assert seqs(buf, A) == [1, 2, 3, 4] and seqs(buf, B) == [1, 2]
    assert buf.seal(A, 3) == 2
    got = bodies(buf, A)
    assert [b["seq"] for b in got] == [
        {"epoch": buf.edge_id(), "ranges": [[1, 3]]},
        {"epoch": buf.edge_id(), "ranges": [[4, 4]]},
    ]
    assert [len(b["readings"]) for b in got] == [3, 1]


def test_a_rolled_back_commit_gives_no_number_away(buf: Buffer, tmp_path: Path) -> None:
    """A number is taken in the reading's own transaction: a commit that fails (here a
    reading row that cannot be inserted) leaves the counter where it was."""
    buf.commit([Write([reading(A, 0)])])
    buf.conn.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON readings WHEN NEW.raw_value = 99"
        " BEGIN SELECT RAISE(ABORT, 'disk trouble'); END"
    )
    with pytest.raises(sqlite3.IntegrityError):
        buf.commit([Write([reading(A, 1), NewReading(A, T0, 99.0)])])
    buf.conn.execute("DROP TRIGGER refuse")
    buf.commit([Write([reading(A, 2)])])
    assert seqs(buf, A) == [1, 2]


def test_numbers_survive_pruning_and_reopening(buf: Buffer, tmp_path: Path) -> None:
    buf.commit([Write([reading(A, k) for k in range(5)])])
    buf.seal(A, 10)
    (b,) = [buf.next_batch(A)]
    assert b is not None
    buf.mark_synced(b.id, 5, 0)
    assert buf.prune(retention_s=0) == 1
    buf.close()
    again = Buffer(tmp_path / "buffer.db")
    try:
        again.commit([Write([reading(A, 10)])])
        assert seqs(again, A) == [6]
        assert again.sequence_report()[A]["captured_upto"] == 6
    finally:
        again.close()


def test_a_new_buffer_file_is_a_new_epoch(tmp_path: Path) -> None:
    ids = []
    for name in ("one.db", "two.db"):
        b = Buffer(tmp_path / name)
        b.upsert_sensor(A, "t", "serial", "r", "s")
        b.commit([Write([reading(A, 0)])])
        ids.append((b.edge_id(), seqs(b, A)))
        b.close()
    assert ids[0][0] != ids[1][0] and ids[0][1] == ids[1][1] == [1]


def test_a_split_batch_sends_the_numbers_it_kept_and_reports_the_dead_ones(buf: Buffer) -> None:
    buf.commit([Write([reading(A, k) for k in range(6)])])
    buf.seal(A, 10)
    b = buf.next_batch(A)
    assert b is not None
    new_id = buf.split_batch(b.id, {1: "bad", 2: "bad"}, "422")
    assert new_id is not None
    assert buf.batch_body(new_id)["seq"]["ranges"] == [[1, 1], [4, 6]]
    rep = buf.sequence_report()[A]
    assert rep["waiting"] == [[1, 1], [4, 6]]
    (dead,) = rep["dead"]
    assert (dead["first"], dead["last"]) == (2, 3) and "bad" in dead["reason"]
    SequenceReport.model_validate(rep)  # what the heartbeat sends


def test_the_report_follows_sessions_waiting_and_synced(buf: Buffer) -> None:
    buf.commit([Write([reading(A, k) for k in range(4)])])
    buf.bind(A, RUN, S2)
    buf.commit([Write([reading(A, k) for k in range(4, 7)])])
    buf.bind(A, RUN, S1)
    buf.commit([Write([reading(A, 7)])])
    buf.seal(A, 2, ahead=1)  # readings 1-2 sealed, the rest unsealed
    rep = buf.sequence_report()[A]
    assert rep["captured_upto"] == 8
    assert [(s["capture_session_id"], s["first"], s["last"]) for s in rep["sessions"]] == [
        (S1, 1, 4),
        (S2, 5, 7),
        (S1, 8, 8),
    ]
    assert rep["waiting"] == [[1, 8]]
    b = buf.next_batch(A)
    assert b is not None
    buf.mark_synced(b.id, 2, 0)
    assert buf.sequence_report()[A]["waiting"] == [[3, 8]]
    assert buf.sequence_report()[B] == {
        "epoch": buf.edge_id(),
        "captured_upto": 0,
        "sessions": [],
        "waiting": [],
        "dead": [],
    }


def test_a_dead_batch_is_reported_with_its_reason(buf: Buffer) -> None:
    buf.commit([Write([reading(A, k) for k in range(3)])])
    buf.seal(A, 10)
    b = buf.next_batch(A)
    assert b is not None
    buf.mark_dead(b.id, "403: this token belongs to another sensor")
    rep = buf.sequence_report()[A]
    assert rep["waiting"] == []
    assert rep["dead"] == [
        {"first": 1, "last": 3, "reason": "403: this token belongs to another sensor"}
    ]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 40), st.integers(0, 5)), max_size=12))
def test_merge_joins_touching_ranges(pairs: list[tuple[int, int]]) -> None:
    ranges = [[a, a + n] for a, n in pairs]
    numbers = {k for a, b in ranges for k in range(a, b + 1)}
    merged = merge(ranges)
    assert {k for a, b in merged for k in range(a, b + 1)} == numbers
    assert all(merged[i][1] + 1 < merged[i + 1][0] for i in range(len(merged) - 1))


S3 = "22222222-0000-0000-0000-000000000003"


def test_a_rebound_dead_batch_takes_its_numbers_to_the_new_session(buf: Buffer) -> None:
    """Numbers 4-6 were captured in S1, refused there, and moved to S2 by an operator: the
    report says they went to S2, so S1's completeness no longer expects them."""
    buf.commit([Write([reading(A, k) for k in range(3)])])
    buf.seal(A, 3)
    ok = buf.next_batch(A)
    assert ok is not None
    buf.mark_synced(ok.id, 3, 0)
    buf.commit([Write([reading(A, k) for k in range(3, 9)])])
    buf.seal(A, 3)  # 4-6 and 7-9
    dead = buf.next_batch(A)
    assert dead is not None
    buf.mark_dead(dead.id, "422 capture session ended")
    buf.bind(A, RUN, S2)
    assert buf.retry_dead(sensor_id=A, rebind=True).batches == 1
    rep = buf.sequence_report()[A]
    assert [(s["capture_session_id"], s["first"], s["last"]) for s in rep["sessions"]] == [
        (S1, 1, 3),
        (S2, 4, 6),
        (S1, 7, 9),
    ]
    assert rep["dead"] == [] and rep["waiting"] == [[4, 9]]
    # the sensor's last segment is still S1's: its next reading starts one of S2
    buf.commit([Write([reading(A, 9)])])
    assert buf.sequence_report()[A]["sessions"][-1] == {
        "run_id": RUN,
        "capture_session_id": S2,
        "first": 10,
        "last": 10,
    }


def test_a_rebound_split_batch_moves_only_the_refused_numbers(buf: Buffer) -> None:
    buf.commit([Write([reading(A, k) for k in range(6)])])
    buf.seal(A, 10)
    b = buf.next_batch(A)
    assert b is not None
    assert buf.split_batch(b.id, {1: "bad", 3: "bad"}, "422") is not None
    buf.bind(A, RUN, S3)
    assert buf.retry_dead(sensor_id=A, rebind=True).batches == 1
    sessions = buf.sequence_report()[A]["sessions"]
    assert [(s["capture_session_id"], s["first"], s["last"]) for s in sessions] == [
        (S1, 1, 1),
        (S3, 2, 2),
        (S1, 3, 3),
        (S3, 4, 4),
        (S1, 5, 6),
    ]


def test_moving_numbers_back_joins_the_segments_again(buf: Buffer) -> None:
    buf.commit([Write([reading(A, k) for k in range(6)])])
    buf.seal(A, 2)
    first = buf.next_batch(A)
    assert first is not None
    second = buf.next_batch(A, first.seq)
    assert second is not None
    buf.mark_dead(second.id, "404 run deleted")
    buf.bind(A, RUN, S2)
    buf.retry_dead(sensor_id=A, rebind=True)
    again = buf.next_batch(A, first.seq)  # the same batch, under a new id
    assert again is not None and again.id != second.id
    buf.mark_dead(again.id, "404 session deleted")
    buf.bind(A, RUN, S1)
    buf.retry_dead(sensor_id=A, rebind=True)
    sessions = buf.sequence_report()[A]["sessions"]
    assert [(s["capture_session_id"], s["first"], s["last"]) for s in sessions] == [(S1, 1, 6)]
