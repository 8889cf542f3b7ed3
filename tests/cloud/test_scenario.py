"""Every request of the demo scenario, sent the way its curl lines send them.

`curl -d '{...}'` with no Content-Type sends application/x-www-form-urlencoded: the API must
still read the JSON. Steps 2, 3, 4, 5 and 7 of the scenario, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from tests.cloud.conftest import FORM, Api


def test_demo_scenario_as_curl_sends_it(api: Api) -> None:
    owner = api.project("demo_project")
    h = {**owner.headers(), **FORM}

    # 2. Register a sensor with a profile (exact body of the scenario, Idempotency-Key).
    sensor_body = (
        '{\n        "project_id":"%s",\n        "name":"temperature_raw",\n'
        '        "type":"thermocouple",\n        "input_unit":"mV",\n        "display_unit":"C",\n'
        '        "conversion_profile":{\n          "version":"v1",\n          "kind":"linear",\n'
        '          "payload":{"a":1.23,"b":0.2}\n        }\n      }' % owner.project_id
    )
    r = api.c.post(
        "/api/v1/sensors", content=sensor_body, headers={**h, "Idempotency-Key": "demo-sensor-1"}
    )
    assert r.status_code == 201, r.text
    sensor, token = r.json()["sensor"], r.json()["token"]
    assert len(token) >= 43 and sensor["token_preview"] and token not in sensor["token_preview"]
    assert sensor["conversion_profile"] == {
        "version": "v1",
        "kind": "linear",
        "payload": {"a": 1.23, "b": 0.2},
        "input_unit": "mV",
        "display_unit": "°C",  # the scenario's "C", in its one spelling
        "created_at": sensor["conversion_profile"]["created_at"],
        "effective_from": "1970-01-01T00:00:00Z",  # a first version converts every reading
        "created_by": h["X-User-Id"],
    }
    assert (sensor["input_unit"], sensor["display_unit"]) == ("mV", "°C")
    again = api.c.post(
        "/api/v1/sensors", content=sensor_body, headers={**h, "Idempotency-Key": "demo-sensor-1"}
    )
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    # The replay is the same answer except the one-time token, which is not kept anywhere.
    assert again.json()["sensor"] == r.json()["sensor"]
    assert again.json()["token"] is None and "rotate" in again.json()["token_redacted"]
    assert r.headers["cache-control"] == "no-store"
    assert len(api.get("/api/v1/sensors", headers=owner.headers()).json()["items"]) == 1

    # 3. Experiment -> run (no body) -> capture session (ordinal 1, running).
    r = api.c.post(
        "/api/v1/experiments",
        content='{"project_id":"%s","name":"demo","tags":["demo","furnace"]}' % owner.project_id,
        headers=h,
    )
    assert r.status_code == 201, r.text
    experiment_id = r.json()["experiment_id"]
    r = api.c.post(f"/api/v1/experiments/{experiment_id}/runs", headers=h)
    assert r.status_code == 201, r.text
    run_id = r.json()["run_id"]
    assert r.json()["status"] == "running"
    r = api.c.post(
        f"/api/v1/runs/{run_id}/capture-sessions",
        content='{"ordinal_number":1,"status":"running"}',
        headers=h,
    )
    assert r.status_code == 201, r.text
    session_id = r.json()["capture_session_id"]
    listed = api.get("/api/v1/capture-sessions", headers=owner.headers()).json()["items"]
    assert [(s["id"], s["status"]) for s in listed] == [(session_id, "running")]

    # 4. Telemetry exactly as the scenario's curl line (a fixed 2025 timestamp: a session
    # takes no reading from before its start, so this one has been capturing since then).
    api.backdate(session_id, datetime(2025, 12, 5, tzinfo=UTC))
    r = api.c.post(
        "/api/v1/telemetry",
        content=(
            '{\n        "sensor_id":"%s",\n        "run_id":"%s",\n        "capture_session_id":"%s",'
            '\n        "readings":[\n          {"timestamp":"2025-12-05T12:00:00Z","raw_value":1.23,'
            '"meta":{"step":1}}\n        ]\n      }' % (sensor["id"], run_id, session_id)
        ),
        headers={"Authorization": f"Bearer {token}", **FORM},
    )
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 1 and r.json()["late"] == 0
    stored = api.readings(owner, run_id=run_id)
    assert len(stored) == 1
    assert stored[0]["raw_value"] == 1.23
    assert abs(stored[0]["value"] - (1.23 * 1.23 + 0.2)) < 1e-12
    assert stored[0]["profile_version"] == "v1" and stored[0]["meta"] == {"step": 1}

    # 5. Stop the session (succeeded, stopped_at now), log metrics, read them back.
    now = datetime.now(UTC).isoformat()
    r = api.c.post(
        f"/api/v1/runs/{run_id}/capture-sessions/{session_id}/stop",
        content='{"status":"succeeded","stopped_at":"%s"}' % now,
        headers=h,
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "succeeded" and r.json()["stopped_at"]
    r = api.c.post(
        f"/api/v1/runs/{run_id}/metrics",
        content=(
            '{\n        "metrics":[\n'
            '          {"name":"loss","step":1,"value":0.42,"timestamp":"2025-12-05T12:00:00Z"},\n'
            '          {"name":"loss","step":2,"value":0.31,"timestamp":"2025-12-05T12:01:00Z"}\n'
            "        ]\n      }"
        ),
        headers=h,
    )
    assert r.status_code == 201, r.text
    r = api.get(f"/api/v1/runs/{run_id}/metrics?name=loss", headers=owner.headers())
    assert r.status_code == 200
    assert [(p["step"], p["value"]) for p in r.json()["points"]] == [(1, 0.42), (2, 0.31)]

    # 7. Run succeeded, experiment archived, batch status.
    r = api.c.patch(f"/api/v1/runs/{run_id}", content='{"status":"succeeded"}', headers=h)
    assert r.status_code == 200 and r.json()["status"] == "succeeded"
    r = api.c.post(f"/api/v1/experiments/{experiment_id}/archive", headers=h)
    assert r.status_code == 200 and r.json()["status"] == "archived"
    other_exp = api.experiment(owner, "second")
    runs = [api.run(owner, other_exp) for _ in range(2)]
    r = api.c.post(
        "/api/v1/runs:batch-status",
        content='{"run_ids":["%s","%s","%s"],"status":"cancelled"}' % (*runs, run_id),
        headers=h,
    )
    assert r.status_code == 200, r.text
    results = {x["run_id"]: x for x in r.json()["results"]}
    assert all(results[x]["ok"] and results[x]["status"] == "cancelled" for x in runs)
    assert results[run_id]["ok"] is False and results[run_id]["error"]["status"] == 409
    assert r.json()["succeeded"] == 2 and r.json()["failed"] == 1

    # The journal tells the whole story.
    kinds = [
        e["kind"]
        for e in api.get(f"/api/v1/runs/{run_id}/events", headers=owner.headers()).json()["items"]
    ]
    for kind in (
        "run.created",
        "capture_session.started",
        "telemetry.ingested",
        "capture_session.stopped",
        "metrics.logged",
        "run.status_changed",
    ):
        assert kind in kinds
    exp_kinds = [
        e["kind"]
        for e in api.get(
            f"/api/v1/experiments/{experiment_id}/events", headers=owner.headers()
        ).json()["items"]
    ]
    assert "experiment.archived" in exp_kinds and "experiment.created" in exp_kinds
    assert uuid.UUID(sensor["id"])
