"""A heartbeat over its size limit is cut at the edge (edge.heartbeat_size): it fits, it is
still a valid heartbeat, it says what it left out, and what it keeps never makes the cloud's
accounting hide a loss (sessions whole, left-out dead ranges counted)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from common.heartbeat import Heartbeat
from edge.heartbeat_size import fit

EPOCH = str(uuid.uuid4())
RUN = str(uuid.uuid4())


def sensor_state(sessions: list[str], pattern: list[int], dead: int, reason_len: int) -> Any:
    """A sensor whose numbers 1..n went to ``sessions[pattern[i]]`` (one segment each, joined
    when neighbours share a session) and whose first ``dead`` numbers were dead-lettered."""
    segments: list[dict[str, Any]] = []
    for n, which in enumerate(pattern, start=1):
        sid = sessions[which]
        if segments and segments[-1]["capture_session_id"] == sid:
            segments[-1]["last"] = n
        else:
            segments.append({"run_id": RUN, "capture_session_id": sid, "first": n, "last": n})
    return {
        "source": "mqtt",
        "source_state": "connected",
        "run_id": RUN,
        "capture_session_id": sessions[pattern[-1]] if pattern else sessions[0],
        "waiting": 0,
        "pending": 0,
        "inflight": 0,
        "synced": 0,
        "dead": dead,
        "rate_per_s": 0.0,
        "last_reading_age_s": float(len(pattern)),
        "sequence": {
            "epoch": EPOCH,
            "captured_upto": len(pattern),
            "sessions": segments[-200:],
            "waiting": [[2 * k + 1, 2 * k + 1] for k in range(min(len(pattern) // 2, 200))],
            "dead": [
                {"first": k, "last": k, "reason": f"#{k} " + "x" * reason_len}
                for k in range(1, min(dead, len(pattern)) + 1)
            ][-200:],
        },
    }


def heartbeat(sensors: dict[str, Any]) -> Heartbeat:
    return Heartbeat.model_validate(
        {
            "version": "1",
            "host": "bench",
            "sent_at": datetime(2026, 1, 1, tzinfo=UTC),
            "heartbeat_s": 30,
            "buffer": {"id": "b", "path": "/b", "used_bytes": 1, "max_bytes": 2},
            "dead_letters": 0,
            "sensors": sensors,
        }
    )


@settings(max_examples=40, deadline=None)
@given(
    n_sensors=st.integers(1, 6),
    n_sessions=st.integers(1, 40),
    captured=st.integers(1, 400),
    dead=st.integers(0, 400),
    reason_len=st.integers(0, 480),
    limit=st.sampled_from([2_000, 8_000, 30_000, 120_000, 1_000_000]),
    seed=st.randoms(use_true_random=False),
)
def test_a_cut_heartbeat_fits_says_what_it_left_out_and_keeps_sessions_whole(
    n_sensors: int,
    n_sessions: int,
    captured: int,
    dead: int,
    reason_len: int,
    limit: int,
    seed: Any,
) -> None:
    sessions = [str(uuid.uuid4()) for _ in range(n_sessions)]
    states = {
        str(uuid.uuid4()): sensor_state(
            sessions,
            [seed.randrange(n_sessions) for _ in range(captured)],
            dead,
            reason_len,
        )
        for _ in range(n_sensors)
    }
    beat = heartbeat(states)
    whole = beat.model_dump_json(exclude_none=True).encode()
    body = fit(beat, limit)
    cut = Heartbeat.model_validate_json(body)  # still the heartbeat's schema
    if len(whole) <= limit:
        assert body == whole and cut.truncated is None
        return
    assert len(body) <= limit or not cut.sensors  # only a bare document may stay over
    assert cut.truncated is not None and cut.truncated.full_bytes == len(whole)
    for sid, state in cut.sensors.items():
        if state.sequence is None:
            continue
        before = states[sid]["sequence"]
        seq = state.sequence
        listed = {str(s.capture_session_id) for s in seq.sessions}
        # every session listed is listed whole: the same segments as before the cut
        assert [s.model_dump(mode="json") for s in seq.sessions] == [
            s for s in before["sessions"] if s["capture_session_id"] in listed
        ]
        gone = {s["capture_session_id"] for s in before["sessions"]} - listed
        left = seq.left_out
        assert (left.sessions if left else 0) == len(gone)
        dead_gone = len(before["dead"]) - len(seq.dead)
        assert (left.dead if left else 0) == dead_gone
        # waiting ranges may be joined, never shrunk
        for a, b in before["waiting"]:
            assert any(x <= a and b <= y for x, y in seq.waiting)
    assert json.loads(body).get("truncated") is not None
