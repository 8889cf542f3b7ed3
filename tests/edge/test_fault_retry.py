"""Device-fault episodes the cloud refused for good go to the dead letters; `dead-letter retry`
queues them again like batches (same episode id; with ``--rebind`` under the sensor's current
run and capture session), and a running daemon sends them without a restart."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge.buffer import Buffer, NewFault, Write

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def fault(buf: Buffer, sid: str) -> str:
    episode = str(uuid.uuid4())
    buf.commit(
        [Write(faults=[NewFault(sid, episode, "open", T0, T0 + timedelta(seconds=2), count=3)])]
    )
    return episode


def test_a_refused_episode_is_queued_again_by_a_retry(buffer: Buffer, sensor: str) -> None:
    episode = fault(buffer, sensor)
    (row,) = buffer.unsent_faults(sensor)
    buffer.mark_fault_dead(episode, "422 capture session stopped")
    assert buffer.unsent_faults(sensor) == []
    kinds = [d["kind"] for d in buffer.dead_letters(10)]
    assert kinds == ["fault"]
    retried = buffer.retry_dead()
    assert (retried.batches, retried.episodes) == (0, 1)
    assert buffer.unsent_faults(sensor) == [row]  # as it was: same id, same binding
    assert buffer.retry_dead().episodes == 0  # retried once


def test_a_rebind_moves_the_episode_to_the_current_session(buffer: Buffer, sensor: str) -> None:
    episode = fault(buffer, sensor)
    buffer.mark_fault_dead(episode, "422 capture session stopped")
    run, session = str(uuid.uuid4()), str(uuid.uuid4())
    buffer.bind(sensor, run, session)
    assert buffer.retry_dead(sensor_id=sensor, rebind=True).episodes == 1
    (row,) = buffer.unsent_faults(sensor)
    assert (row["episode"], row["run_id"], row["capture_session_id"]) == (episode, run, session)


def test_a_running_daemon_sees_episodes_another_process_queued(
    tmp_path: Path, buffer: Buffer, sensor: str
) -> None:
    episode = fault(buffer, sensor)
    buffer.mark_fault_dead(episode, "422 capture session stopped")
    buffer.unsent_faults(sensor)  # the daemon's sync found nothing left to send
    assert sensor not in buffer.fault_sensors and not buffer.recheck_faults(sensor)
    cli = Buffer(tmp_path / "buffer.db")  # `benchlink-edge dead-letter retry`
    try:
        assert cli.retry_dead().episodes == 1
    finally:
        cli.close()
    assert buffer.recheck_faults(sensor) and sensor in buffer.fault_sensors
    assert [r["episode"] for r in buffer.unsent_faults(sensor)] == [episode]
