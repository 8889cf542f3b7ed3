"""Hostile input answered as bad input (422), never a 500: cursors nested a thousand deep,
lone surrogates in text, names made of nothing visible."""

from __future__ import annotations

import base64

import pytest

from tests.cloud.conftest import Api, assert_problem

NESTED = base64.urlsafe_b64encode(b"[" * 1000).decode().rstrip("=")


def test_a_deeply_nested_cursor_is_422_on_every_list(api: Api) -> None:
    owner = api.project()
    ids = api.stack(owner)
    sensor, exp, run = ids["sensor_id"], ids["experiment_id"], ids["run_id"]
    lists = [
        ("/api/v1/projects", {}),
        ("/api/v1/sensors", {}),
        (f"/api/v1/sensors/{sensor}/conversion-profiles", {}),
        ("/api/v1/experiments", {}),
        (f"/api/v1/experiments/{exp}/runs", {}),
        (f"/api/v1/runs/{run}/capture-sessions", {}),
        ("/api/v1/capture-sessions", {}),
        ("/api/v1/telemetry", {"run_id": run}),
        (f"/api/v1/runs/{run}/metrics", {}),
        ("/api/v1/events", {}),
        (f"/api/v1/runs/{run}/events", {}),
        (f"/api/v1/experiments/{exp}/events", {}),
    ]
    for path, params in lists:
        r = api.get(path, params={**params, "cursor": NESTED}, headers=owner.headers())
        assert_problem(r, 422, "cursor")


# JSON text as a client sends it: "\ud800" is an escaped lone surrogate.
LONE = '"\\ud800"'


def test_a_lone_surrogate_in_tags_is_422(api: Api) -> None:
    owner = api.project()
    exp = api.experiment(owner)
    run = api.run(owner, exp)
    h = {**owner.headers(), "Content-Type": "application/json"}
    cases = [
        ("POST", "/api/v1/experiments", f'{{"name": "e", "tags": [{LONE}]}}'),
        ("PATCH", f"/api/v1/experiments/{exp}", f'{{"tags": ["ok", {LONE}]}}'),
        ("POST", f"/api/v1/experiments/{exp}/runs", f'{{"tags": [{LONE}]}}'),
        ("PATCH", f"/api/v1/runs/{run}", f'{{"tags": [{LONE}]}}'),
    ]
    for method, path, body in cases:
        r = api.request(method, path, content=body, headers=h)
        assert_problem(r, 422, "tags")
    # A proper pair (an emoji written as two escapes) is text and is kept.
    r = api.request(
        "PATCH", f"/api/v1/runs/{run}", content='{"tags": ["\\ud83d\\ude00"]}', headers=h
    )
    assert r.status_code == 200 and r.json()["tags"] == ["\U0001f600"], r.text


def test_a_lone_surrogate_in_a_text_field_is_422_and_other_text_is_kept(api: Api) -> None:
    owner = api.project()
    run = api.run(owner, api.experiment(owner))
    h = {**owner.headers(), "Content-Type": "application/json"}
    point = '{{"name": {name}, "step": 1, "value": 2.5, "unit": {unit}}}'
    cases = [
        ("/api/v1/experiments", f'{{"name": {LONE}}}', "name"),
        (
            f"/api/v1/runs/{run}/metrics",
            f'{{"metrics": [{point.format(name=LONE, unit="null")}]}}',
            "metrics",
        ),
        (
            f"/api/v1/runs/{run}/metrics",
            '{"metrics": [' + point.format(name='"ok"', unit='"\\udfff"') + "]}",
            "metrics",
        ),
    ]
    for path, body, field in cases:
        assert_problem(api.request("POST", path, content=body, headers=h), 422, field)
    # Text that is not ASCII, a surrogate pair among it, goes through the same check.
    body = '{"metrics": [' + point.format(name='"temp \\u00b0 \\ud83d\\ude00"', unit="null") + "]}"
    r = api.request("POST", f"/api/v1/runs/{run}/metrics", content=body, headers=h)
    assert r.status_code == 201 and r.json()["names"] == ["temp \u00b0 \U0001f600"], r.text


@pytest.mark.parametrize("blank", [" ", "\t\n", "\u200b\u200b", "\u3164", "\x01\x02", "\ufeff "])
def test_names_of_nothing_visible_are_422(api: Api, blank: str) -> None:
    owner = api.project()
    r = api.post(
        "/api/v1/experiments",
        {"project_id": owner.project_id, "name": blank},
        headers=owner.headers(),
    )
    assert_problem(r, 422, "name")
    r = api.post(
        "/api/v1/sensors",
        {
            "project_id": owner.project_id,
            "name": blank,
            "type": "t",
            "input_unit": "mV",
            "display_unit": "C",
            "conversion_profile": {"version": "v1", "kind": "linear", "payload": {"a": 1}},
        },
        headers=owner.headers(),
    )
    assert_problem(r, 422, "name")
    exp = api.experiment(owner)
    r = api.patch(f"/api/v1/experiments/{exp}", {"name": blank}, headers=owner.headers())
    assert_problem(r, 422, "name")


def test_names_are_nfc_and_trimmed_and_unique_as_read(api: Api) -> None:
    owner = api.project()
    composed, decomposed = "Caf\u00e9 TC", "Cafe\u0301 TC"
    sensor_id, _ = api.sensor(owner, name=f"  {decomposed}\u200b ")
    got = api.get(f"/api/v1/sensors/{sensor_id}", headers=owner.headers()).json()
    assert got["name"] == composed
    # The same name, spelt the other way: taken.
    body = {
        "project_id": owner.project_id,
        "name": composed,
        "type": "t",
        "input_unit": "mV",
        "display_unit": "C",
        "conversion_profile": {"version": "v1", "kind": "linear", "payload": {"a": 1}},
    }
    assert_problem(api.post("/api/v1/sensors", body, headers=owner.headers()), 409)
    other, _ = api.sensor(owner, name="other")
    r = api.patch(f"/api/v1/sensors/{other}", {"name": f" {decomposed}"}, headers=owner.headers())
    assert_problem(r, 409)
    listed = api.get("/api/v1/sensors", params={"name": decomposed}, headers=owner.headers())
    assert [s["id"] for s in listed.json()["items"]] == [sensor_id]
    exp = api.experiment(owner, name=f"\t{decomposed} ")
    assert api.get(f"/api/v1/experiments/{exp}", headers=owner.headers()).json()["name"] == composed
