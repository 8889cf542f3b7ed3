"""An open thermocouple end to end: the simulator on a pty opens its probe -> the daemon
(subprocess) stores the faults as one episode -> the cloud (subprocess) stores it and a
``fault`` rule raises its alarm at the fault's time; the probe reads again -> the alarm
clears. Offline: the episode waits in the buffer and arrives once, also when it is sent
again after an answer the edge never recorded."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tests.edge.helpers import (
    Bound,
    EdgeProcess,
    RealCloud,
    running,
    serial_sensor,
    simulator,
    wait_for,
    write_config,
)

RATE = 20
#: the simulator's probe is open from OPEN_AT to OPEN_AT + OPEN_FOR seconds after it starts:
#: OPEN_FOR * RATE fault lines
OPEN_AT, OPEN_FOR = 6, 3
HOLD_S = 1.0


def _get(cloud: RealCloud, b: Bound, path: str) -> Any:
    with cloud.client(**b.user) as c:
        r = c.get(path)
        assert r.status_code == 200, r.text
        return r.json()


def _fault_rule(cloud: RealCloud, b: Bound) -> None:
    with cloud.client(**b.user) as c:
        r = c.post(
            f"/api/v1/sensors/{b.sensor_id}/alarm-rules", json={"kind": "fault", "for_s": HOLD_S}
        )
        assert r.status_code == 201, r.text


def _alarms(cloud: RealCloud, b: Bound) -> list[dict[str, Any]]:
    return list(_get(cloud, b, f"/api/v1/runs/{b.run_id}/alarms")["items"])


def _cleared(cloud: RealCloud, b: Bound) -> bool:
    alarms = _alarms(cloud, b)
    return bool(alarms) and alarms[0]["state"] == "cleared"


def _buffer_faults(path: Path) -> list[tuple[int, int]]:
    """(count, sent_count) of each episode in the edge's buffer (none before the daemon
    has made it: opened read-only, never created here)."""
    if not path.exists():
        return []
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            return list(conn.execute("SELECT count, sent_count FROM faults ORDER BY id"))
    except sqlite3.OperationalError:  # the daemon is still making its tables
        return []


def _edge(tmp_path: Path, cloud: RealCloud, b: Bound, link: Path) -> EdgeProcess:
    cfg = write_config(
        tmp_path / "edge.toml",
        cloud_url=cloud.url,
        buffer=tmp_path / "buffer.db",
        interval_s=0.2,
        batch_size=20,
        sensors=[serial_sensor(b, link, "max31855-hex")],
    )
    return EdgeProcess(cfg, tmp_path / "edge.log")


def _sim(link: Path) -> Any:
    return simulator(
        link,
        *("--protocol", "max31855-hex", "--rate", str(RATE), "--seed", "5"),
        *("--open-probe-at", str(OPEN_AT), "--open-probe-for", str(OPEN_FOR)),
    )


def _check_the_episode_and_its_alarm(cloud: RealCloud, b: Bound) -> None:
    """One episode of every fault line the simulator wrote, no reading inside it, and one
    alarm: raised at its first fault plus the hold time, cleared by the first reading after."""
    (episode,) = _get(cloud, b, f"/api/v1/sensors/{b.sensor_id}/faults")
    assert episode["kind"] == "open_circuit"
    assert episode["count"] == OPEN_FOR * RATE  # coalesced: one row, every fault counted
    first = datetime.fromisoformat(episode["first_timestamp"])
    last = datetime.fromisoformat(episode["last_timestamp"])
    assert timedelta(seconds=OPEN_FOR - 0.5) < last - first < timedelta(seconds=OPEN_FOR + 0.5)
    stamps = sorted(datetime.fromisoformat(r["timestamp"]) for r in cloud.telemetry(b))
    before = [t for t in stamps if t < first]
    after = [t for t in stamps if t > last]
    assert before, "the edge read nothing before the probe opened: the scenario did not run"
    assert after and len(before) + len(after) == len(stamps)  # nothing read while it was open
    (alarm,) = _alarms(cloud, b)
    assert alarm["kind"] == "fault" and alarm["value"] is None
    assert datetime.fromisoformat(alarm["raised_at"]) == first + timedelta(seconds=HOLD_S)
    assert datetime.fromisoformat(alarm["cleared_at"]) == after[0]
    events = _get(cloud, b, f"/api/v1/runs/{b.run_id}/events")["items"]
    assert [e["payload"]["fault_kind"] for e in events if e["kind"] == "sensor.fault"] == [
        "open_circuit"
    ]


def test_an_open_probe_raises_a_fault_alarm_at_its_time_and_clears_when_it_reads_again(
    cloud: RealCloud, tmp_path: Path
) -> None:
    (b,) = cloud.bootstrap(1)
    _fault_rule(cloud, b)
    link = tmp_path / "ttySIM"
    with _sim(link):
        edge = _edge(tmp_path, cloud, b, link)
        with running(edge):
            wait_for(lambda: _cleared(cloud, b), 60, "the fault alarm raised, then cleared")
            edge.terminate()
    _check_the_episode_and_its_alarm(cloud, b)
    assert _buffer_faults(tmp_path / "buffer.db") == [(OPEN_FOR * RATE, OPEN_FOR * RATE)]


def test_faults_captured_while_the_cloud_is_down_arrive_after_it_is_back_once(
    cloud: RealCloud, tmp_path: Path
) -> None:
    (b,) = cloud.bootstrap(1)
    _fault_rule(cloud, b)
    cloud.stop()
    link = tmp_path / "ttySIM"
    buffer = tmp_path / "buffer.db"
    with _sim(link):
        edge = _edge(tmp_path, cloud, b, link)
        with running(edge):
            # the whole episode captured, and readings after it, with no cloud to send to
            wait_for(
                lambda: _buffer_faults(buffer) == [(OPEN_FOR * RATE, 0)],
                OPEN_AT + OPEN_FOR + 30,
                "the episode in the buffer",
            )
            cloud.start()
            wait_for(lambda: _cleared(cloud, b), 60, "the fault alarm raised, then cleared")
            wait_for(lambda: _buffer_faults(buffer)[0][1] == OPEN_FOR * RATE, 10, "sent")
            edge.terminate()
            _check_the_episode_and_its_alarm(cloud, b)
            # The cloud's answer lost: the edge never recorded it, and sends the episode
            # again when it starts. The cloud has it already: nothing changes.
            with sqlite3.connect(buffer) as conn:
                conn.execute("UPDATE faults SET sent_count = 0")
            edge.start()
            wait_for(lambda: _buffer_faults(buffer)[0][1] == OPEN_FOR * RATE, 30, "sent again")
            edge.terminate()
    _check_the_episode_and_its_alarm(cloud, b)
