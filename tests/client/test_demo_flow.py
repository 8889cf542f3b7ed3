"""The demo's whole scenario (docs/demo.md, section 2) with the client, against a real cloud on
SQLite and PostgreSQL: sensor, experiment, runs, session, readings, metrics, statuses."""

from __future__ import annotations

import pytest

from benchlink import Client, Conflict
from tests.client.conftest import send_readings
from tests.support.cloud import CloudServer


def test_the_demo_flow_in_twenty_lines(cloud: CloudServer, client: Client) -> None:
    new = client.sensors.create(
        "temperature_raw",
        type="thermocouple",
        input_unit="mV",
        display_unit="C",
        profile={"kind": "linear", "payload": {"a": 1.23, "b": 0.2}},
    )
    exp = client.experiments.create("Furnace heat-up", tags=["demo", "furnace"])
    run, warmup = exp.runs.create(), exp.runs.create("warm-up")
    session = run.sessions.create()
    send_readings(cloud.url, new.token, new.sensor.id, session, [1.0, 2.0, 3.0])
    session.stop()
    run.log_metrics({"loss": 0.42}, step=1)
    run.log_metrics({"loss": 0.31}, step=2)
    run.flush()
    frame = run.telemetry(sensor="temperature_raw")
    run.set_status("succeeded")
    changed = client.runs.batch_status([warmup], "cancelled")
    exp.archive()

    assert new.sensor.display_unit == "°C" and new.token
    assert list(frame["raw_value"]) == [1.0, 2.0, 3.0]
    assert list(frame["value"]) == pytest.approx([1.43, 2.66, 3.89])
    assert set(frame["unit"]) == {"°C"} and set(frame["raw_unit"]) == {"mV"}
    assert list(run.metrics("loss")["value"]) == [0.42, 0.31]
    assert [s.status for s in run.sessions] == ["succeeded"]
    assert client.runs.get(run.id).status == "succeeded"
    assert (changed.succeeded, changed.failed) == (1, 0)
    assert client.runs.get(warmup).status == "cancelled"
    archived = client.experiments.list(include_archived=True, tags=["demo"])
    assert [e.status for e in archived] == ["archived"]
    with pytest.raises(Conflict) as refused:
        exp.runs.create()
    assert refused.value.status == 409 and refused.value.detail
