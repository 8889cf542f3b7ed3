"""Metrics: batch POST, step order, pagination, downsampling, summary, bad input."""

from __future__ import annotations

import pytest

from tests.cloud.conftest import Api, Identity, assert_problem


@pytest.fixture
def owner(api: Api) -> Identity:
    return api.project()


def test_metrics_roundtrip(api: Api, owner: Identity) -> None:
    h = owner.headers()
    run = api.run(owner, api.experiment(owner))
    points = [{"name": "loss", "step": s, "value": 1.0 / (s + 1)} for s in range(2500, -1, -1)]
    points += [{"name": "acc", "step": s, "value": s / 100} for s in range(100)]
    for i in range(0, len(points), 1000):
        r = api.post(f"/api/v1/runs/{run}/metrics", {"metrics": points[i : i + 1000]}, headers=h)
        assert r.status_code == 201, r.text
    got, cursor = [], None
    while True:
        params = {"name": "loss", "limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = api.get(f"/api/v1/runs/{run}/metrics", params=params, headers=h).json()
        got += page["points"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert [p["step"] for p in got] == list(range(2501))
    assert all(p["timestamp"] for p in got)
    down = api.get(
        f"/api/v1/runs/{run}/metrics", params={"name": "loss", "max_points": 100}, headers=h
    ).json()
    assert down["downsampled"] and len(down["points"]) <= 102
    assert down["points"][0]["step"] == 0 and down["points"][-1]["step"] == 2500
    assert max(p["value"] for p in down["points"]) == 1.0
    summary = {
        s["name"]: s for s in api.get(f"/api/v1/runs/{run}/metrics/summary", headers=h).json()
    }
    assert summary["loss"]["count"] == 2501 and summary["loss"]["last_step"] == 2500
    assert summary["loss"]["last"] == pytest.approx(1 / 2501)
    assert summary["acc"] == {
        "name": "acc",
        "count": 100,
        "last": 0.99,
        "last_step": 99,
        "min": 0.0,
        "max": 0.99,
        "unit": None,
    }
    everything = api.get(f"/api/v1/runs/{run}/metrics", params={"limit": 10000}, headers=h).json()
    assert [p["name"] for p in everything["points"]][:1] == ["acc"]


def test_metric_units_are_parsed_and_shown_canonically(api: Api, owner: Identity) -> None:
    h = owner.headers()
    run = api.run(owner, api.experiment(owner))
    points = [
        {"name": "oven", "step": 0, "value": 20.0, "unit": "degC"},
        {"name": "oven", "step": 1, "value": 21.0, "unit": "C"},
        {"name": "flow", "step": 0, "value": 1.5, "unit": "L/min"},
        {"name": "loss", "step": 0, "value": 0.5},
    ]
    assert (
        api.post(f"/api/v1/runs/{run}/metrics", {"metrics": points}, headers=h).status_code == 201
    )
    got = api.get(f"/api/v1/runs/{run}/metrics", headers=h).json()["points"]
    assert {(p["name"], p["step"]): p["unit"] for p in got} == {
        ("flow", 0): "l/min",  # pint writes the litre l
        ("loss", 0): None,
        ("oven", 0): "°C",
        ("oven", 1): "°C",
    }
    summary = api.get(f"/api/v1/runs/{run}/metrics/summary", headers=h).json()
    assert {s["name"]: s["unit"] for s in summary} == {"flow": "l/min", "loss": None, "oven": "°C"}
    bad = [{"name": "oven", "step": 2, "value": 1.0, "unit": "bananas"}]
    body = assert_problem(
        api.post(f"/api/v1/runs/{run}/metrics", {"metrics": bad}, headers=h),
        422,
        "metrics.0.unit",
    )
    assert "bananas" in str(body)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"metrics":[]}', "metrics"),
        ('{"metrics":[{"name":"loss","step":1,"value":NaN}]}', "metrics.0.value"),
        ('{"metrics":[{"name":"loss","step":1,"value":"x"}]}', "metrics.0.value"),
        ('{"metrics":[{"name":"loss","step":-1,"value":1}]}', "metrics.0.step"),
        ('{"metrics":[{"name":"","step":1,"value":1}]}', "metrics.0.name"),
        (
            '{"metrics":[{"name":"l","step":1,"value":1,"timestamp":"2025-12-05T12:00:00"}]}',
            "metrics.0.timestamp",
        ),
        ('{"metrics":[{"name":"l","step":1.5,"value":1}]}', "metrics.0.step"),
        ('{"metric":[]}', "metrics"),
        ("{", "body"),
    ],
)
def test_bad_metrics_are_422_and_nothing_stored(
    api: Api, owner: Identity, raw: str, field: str
) -> None:
    run = api.run(owner, api.experiment(owner))
    r = api.c.post(
        f"/api/v1/runs/{run}/metrics",
        content=raw,
        headers={**owner.headers(), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_problem(r, 422, field)
    assert api.get(f"/api/v1/runs/{run}/metrics", headers=owner.headers()).json()["points"] == []
