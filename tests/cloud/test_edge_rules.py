"""``GET /api/v1/sensors/{id}/edge-rules``: a sensor's live rules and current conversion
profile, for its edge, with the sensor's own token (no identity headers); the profile the
answer gives converts a raw value to the value the cloud stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from common.edge_rules import EdgeRules
from common.profiles import build_converter
from tests.cloud.conftest import Api, assert_problem


def _edge_rules(api: Api, sensor_id: str, token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return api.get(f"/api/v1/sensors/{sensor_id}/edge-rules", headers=headers)


def test_the_edge_gets_its_sensors_rules_and_profile_with_the_sensor_token(api: Api) -> None:
    who = api.project()
    ids = api.stack(who)
    sensor, token = ids["sensor_id"], ids["token"]
    other, other_token = api.sensor(who)
    base = f"/api/v1/sensors/{sensor}/alarm-rules"
    editor = who.headers("editor")
    above = api.post(base, {"kind": "above", "threshold": 850, "for_s": 5, "hysteresis": 2},
                     headers=editor).json()  # fmt: skip
    run_rule = api.post(base, {"kind": "outside", "low": 0, "high": 10, "run_id": ids["run_id"]},
                        headers=editor).json()  # fmt: skip
    gone = api.post(base, {"kind": "fault"}, headers=editor).json()
    assert api.request("DELETE", f"{base}/{gone['id']}", headers=editor).status_code == 204
    before = datetime.now(UTC) - timedelta(milliseconds=1)
    newer = {"version": "v2", "kind": "polynomial", "payload": {"coefficients": [3.0, 0.5, 0.1]}}
    r = api.put(f"/api/v1/sensors/{sensor}/conversion-profile", newer, headers=editor)
    assert r.status_code < 300, r.text

    got = _edge_rules(api, sensor, token)
    assert got.status_code == 200, got.text
    rules = EdgeRules.model_validate(got.json())
    assert str(rules.sensor_id) == sensor
    by_id = {str(r.id): r for r in rules.rules}
    assert set(by_id) == {above["id"], run_rule["id"]}  # the deleted one is not there
    a, o = by_id[above["id"]], by_id[run_rule["id"]]
    assert (a.kind, a.threshold, a.for_s, a.hysteresis, a.run_id) == ("above", 850, 5, 2, None)
    assert (o.kind, o.low, o.high, str(o.run_id)) == ("outside", 0, 10, ids["run_id"])
    assert [p.version for p in rules.profiles] == ["v1", "v2"]
    assert rules.display_unit == "°C"

    # the versions as given convert each reading as the cloud does: by its timestamp
    after = datetime.now(UTC)
    readings = [{"timestamp": t.isoformat(), "raw_value": 7.5} for t in (before, after)]
    sent = api.ingest(ids, readings)
    assert sent.status_code == 202, sent.text
    stored = api.get(
        "/api/v1/telemetry",
        params={"sensor_id": sensor, "run_id": ids["run_id"]},
        headers=who.headers("viewer"),
    ).json()["items"]
    expected = []
    for t in (before, after):
        p = [p for p in rules.profiles if p.effective_from <= t][-1]
        convert = build_converter(p.kind, p.payload, p.display_unit, p.input_unit, lenient=True)
        expected.append(convert.convert(7.5))
    assert expected == [16.0, 3.0 + 0.5 * 7.5 + 0.1 * 7.5**2]
    assert sorted(i["value"] for i in stored) == sorted(expected)

    # a sensor's token answers for that sensor only; none, or a wrong one, for nothing
    assert_problem(_edge_rules(api, sensor, other_token), 403)
    assert_problem(_edge_rules(api, sensor, None), 401)
    assert_problem(_edge_rules(api, sensor, "bls_not-a-token"), 401)
    empty = _edge_rules(api, other, other_token)
    assert empty.status_code == 200 and empty.json()["rules"] == []
    rotated = api.post(f"/api/v1/sensors/{sensor}/rotate-token", headers=who.headers("owner"))
    assert rotated.status_code == 200, rotated.text
    assert_problem(_edge_rules(api, sensor, token), 401)
    assert _edge_rules(api, sensor, rotated.json()["token"]).status_code == 200
