"""Alarms at an edge cut off from the cloud: the real daemon (a source installed as a plugin,
tests/edge/toy_source.py) and the real cloud. The daemon pulls its sensor's rules while the
cloud answers; restarted while the cloud is away, it evaluates the cached rules on what it
captures, logs the alarm and ``status`` shows it; once the cloud is back and the backlog
synced, the cloud holds that alarm exactly once, late, at the reading's time."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.edge.helpers import Bound, EdgeProcess, RealCloud, running, wait_for, write_config
from tests.edge.test_sources import install_plugin
from tests.support.services import free_port

#: the toy's readings are stamped this long before they are captured: a backlog's age when
#: it reaches the cloud (which marks an alarm late past 30 s) without a test that waits
BEHIND_S = 60.0


def toy_edge(tmp_path: Path, cloud: RealCloud, b: Bound, count: int, env: dict[str, str]) -> Any:
    config = write_config(
        tmp_path / "edge.toml",
        cloud_url=cloud.url,
        buffer=tmp_path / "buffer.db",
        mqtt_url=f"mqtt://127.0.0.1:{free_port()}",  # no broker: no MQTT sensor either
        sensors=[
            {
                "sensor_id": b.sensor_id,
                "token": b.token,
                "run_id": b.run_id,
                "capture_session_id": b.session_id,
                "source": "toy",
                "count": count,
                "every_s": 0.05,
                "behind_s": BEHIND_S,
            }
        ],
    )
    config.chmod(0o600)
    return EdgeProcess(config, tmp_path / "edge.log", env)


def status(edge: EdgeProcess) -> dict[str, Any]:
    out = edge.cli("status", "--json")
    assert out.returncode == 0, out.stderr
    found: dict[str, Any] = json.loads(out.stdout)
    return found


def cloud_alarms(cloud: RealCloud, b: Bound) -> list[dict[str, Any]]:
    with cloud.client(**b.user) as c:
        got = c.get("/api/v1/alarms", params={"sensor_id": b.sensor_id})
        assert got.status_code == 200, got.text
        items: list[dict[str, Any]] = got.json()["items"]
        return items


def test_an_offline_edge_raises_the_alarm_and_the_cloud_records_it_once_late(
    cloud: RealCloud, tmp_path: Path
) -> None:
    (b,) = cloud.bootstrap(1)  # linear a=2, b=1: the toy's n reads 2n + 1 °C
    with cloud.client(**b.user) as c:
        rule = c.post(
            f"/api/v1/sensors/{b.sensor_id}/alarm-rules", json={"kind": "above", "threshold": 20}
        )
        assert rule.status_code == 201, rule.text
    rule_id = rule.json()["id"]
    env = install_plugin(tmp_path / "site", "tests.edge.toy_source")

    # online: the daemon pulls the rule (its one reading, 1 °C, raises nothing)
    edge = toy_edge(tmp_path, cloud, b, 1, env)
    with running(edge):
        wait_for(lambda: b.sensor_id in status(edge)["alarms"]["rules"], 30, "the rules pulled")
        wait_for(lambda: len(cloud.telemetry(b)) == 1, 30, "the first reading in the cloud")
        assert edge.terminate() == 0

    # offline, restarted: the cached rule is evaluated on 2n + 1 for n = 0..14
    cloud.stop()
    edge = toy_edge(tmp_path, cloud, b, 15, env)
    with running(edge):
        wait_for(lambda: status(edge)["alarms"]["in_force"] != [], 30, "the edge's alarm")
        local = status(edge)["alarms"]
        (alarm,) = local["in_force"]
        assert (alarm["rule_id"], alarm["kind"], alarm["value"]) == (rule_id, "above", 21.0)
        assert local["rules"][b.sensor_id]["rules"] == 1
        table = edge.cli("status").stdout
        assert "alarms in force at the edge: 1" in table and "RAISED" in table
        log = edge.log.read_text()
        raised = [line for line in log.splitlines() if "alarm raised at the edge" in line]
        assert len(raised) == 1 and f"rule {rule_id}" in raised[0] and "value 21 " in raised[0]

        # the cloud is back: the backlog goes, the cloud raises the alarm itself, once
        cloud.start()
        wait_for(lambda: len(cloud.telemetry(b)) == 16, 60, "the backlog in the cloud")
        wait_for(lambda: status(edge)["sensors"][b.sensor_id]["waiting"] == 0, 30, "synced")
        assert edge.terminate() == 0

    (recorded,) = cloud_alarms(cloud, b)
    reading = next(i for i in cloud.telemetry(b) if i["raw_value"] == 10.0)
    assert recorded["rule_id"] == rule_id and recorded["late"] is True
    assert recorded["value"] == 21.0
    at = datetime.fromisoformat(reading["timestamp"])
    assert datetime.fromisoformat(recorded["raised_at"]) == at
    assert datetime.fromisoformat(alarm["raised_at"]) == at
    assert "Traceback" not in edge.log.read_text()
