"""Calibration fits: POST /api/v1/sensors/{id}/calibrations, kept, listed, applied."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta
from typing import Any

import pytest

from tests.cloud.conftest import LONG_AGO, Api, Identity, assert_problem

LINEAR_1_TO_1 = {"version": "v1", "kind": "linear", "payload": {"a": 1.0, "b": 0.0}}


def calibrate(api: Api, who: Identity, sensor_id: str, body: dict[str, Any]) -> Any:
    return api.post(f"/api/v1/sensors/{sensor_id}/calibrations", body, headers=who.headers())


def noisy_points(coefficients: list[float], sigma: float, seed: int) -> list[dict[str, float]]:
    rng = random.Random(seed)
    points = []
    for k in range(60):
        value = 20.0 + k * 16.0  # 20 to 964 °C
        truth = sum(c * value**i for i, c in enumerate(coefficients))
        points.append({"value": value, "reference": truth + rng.gauss(0.0, sigma)})
    return points


def test_a_fit_recovers_known_coefficients_within_its_reported_uncertainty(api: Api) -> None:
    who = api.project()
    sensor_id, _ = api.sensor(who)
    truth, sigma = [0.8, 0.9985, 1.5e-6], 0.05
    r = calibrate(api, who, sensor_id, {"points": noisy_points(truth, sigma, 1), "degree": 2})
    assert r.status_code == 201, r.text
    fit = r.json()
    assert fit["model"] == "polynomial" and fit["degree"] == 2 and fit["source"] == "points"
    assert fit["n_points"] == 60 and fit["degrees_of_freedom"] == 57
    assert fit["unit"] == "°C" and fit["base_profile_version"] == "v1"
    for got, want, se in zip(
        fit["coefficients"], truth, fit["coefficient_standard_errors"], strict=True
    ):
        assert abs(got - want) <= 3 * se, (got, want, se)
    # The scatter it reports is the noise put in.
    assert fit["standard_uncertainty"] == pytest.approx(sigma, rel=0.25)
    assert len(fit["covariance"]) == 3 and all(len(row) == 3 for row in fit["covariance"])
    for i in range(3):
        assert fit["covariance"][i][i] == pytest.approx(fit["coefficient_standard_errors"][i] ** 2)
    residuals = [p["residual"] for p in fit["points"]]
    for p in fit["points"]:
        c0, c1, c2 = fit["coefficients"]
        assert p["corrected"] == pytest.approx(c0 + c1 * p["value"] + c2 * p["value"] ** 2)
        assert p["residual"] == pytest.approx(p["corrected"] - p["reference"], abs=1e-9)
    assert fit["max_error"] == pytest.approx(max(abs(e) for e in residuals))
    assert fit["rms_error"] == pytest.approx((sum(e * e for e in residuals) / 60) ** 0.5)


@pytest.mark.parametrize(
    ("points", "degree", "fragment"),
    [
        ([(400.8, 400.0)], 1, "needs at least 2 points with different values; 1 given"),
        ([(400.8, 400.0), (500.9, 500.0)], 2, "needs at least 3 points"),
        ([(400.8, 400.0), (400.8, 400.1), (400.8, 399.9)], 1, "3 given, 1 different"),
        ([], 0, "needs at least 1 points"),
        (
            [(100.0, 100.1), (100.0, 100.2), (100.0000001, 100.1), (200.0, 200.3)],
            2,
            "ill-conditioned",
        ),
    ],
)
def test_an_underdetermined_or_ill_conditioned_fit_is_refused(
    api: Api, points: list[tuple[float, float]], degree: int, fragment: str
) -> None:
    who = api.project()
    sensor_id, _ = api.sensor(who)
    body = {"points": [{"value": v, "reference": r} for v, r in points], "degree": degree}
    problem = assert_problem(calibrate(api, who, sensor_id, body), 422, "points")
    assert fragment in problem["detail"]
    listed = api.get(f"/api/v1/sensors/{sensor_id}/calibrations", headers=who.headers())
    assert listed.json()["items"] == []


def test_as_many_points_as_coefficients_is_an_exact_fit_without_an_uncertainty(api: Api) -> None:
    who = api.project()
    sensor_id, _ = api.sensor(who)
    body = {"points": [{"value": 0.2, "reference": 0.0}, {"value": 100.6, "reference": 100.0}]}
    fit = calibrate(api, who, sensor_id, body).json()
    assert fit["coefficients"] == pytest.approx([-0.2 / 1.004, 1 / 1.004])
    assert fit["degrees_of_freedom"] == 0
    assert fit["standard_uncertainty"] is None and fit["coefficient_standard_errors"] is None
    assert fit["max_error"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"points": [{"value": 1.0, "reference": 1.0}], "degree": 4}, "degree"),
        ({"points": [{"value": 1.0, "reference": 1.0}], "model": "spline"}, "model"),
        ({"points": [{"value": 1.0}]}, "points.0.reference"),
        ({"degree": 1}, "points"),
        ({"points": [], "reference_sensor_id": str(uuid.uuid4())}, "reference_sensor_id"),
        ({"reference_sensor_id": str(uuid.uuid4()), "until": "2026-01-01T00:00:00Z"}, "since"),
        (
            {
                "reference_sensor_id": str(uuid.uuid4()),
                "since": "2026-01-01T00:00:00Z",
                "until": "2026-01-01T00:00:00Z",
            },
            "until",
        ),
        (
            {
                "reference_sensor_id": str(uuid.uuid4()),
                "since": "2026-01-01T00:00:00Z",
                "until": "2026-01-02T00:00:00Z",
            },
            "reference_sensor_id",
        ),
    ],
)
def test_a_body_that_says_no_fit_is_422_naming_the_field(
    api: Api, body: dict[str, Any], field: str
) -> None:
    who = api.project()
    sensor_id, _ = api.sensor(who)
    assert_problem(calibrate(api, who, sensor_id, body), 422, field)


def test_a_viewer_cannot_fit_and_another_project_cannot_see(api: Api) -> None:
    who, stranger = api.project(), api.project()
    sensor_id, _ = api.sensor(who)
    body = {"points": [{"value": 0.0, "reference": 0.1}, {"value": 1.0, "reference": 1.1}]}
    r = api.post(f"/api/v1/sensors/{sensor_id}/calibrations", body, headers=who.headers("viewer"))
    assert_problem(r, 403)
    assert_problem(calibrate(api, stranger, sensor_id, body), 404)
    fit_id = calibrate(api, who, sensor_id, body).json()["calibration_id"]
    url = f"/api/v1/sensors/{sensor_id}/calibrations/{fit_id}"
    assert_problem(api.get(url, headers=stranger.headers()), 404)
    other_sensor, _ = api.sensor(who)
    wrong = f"/api/v1/sensors/{other_sensor}/calibrations/{fit_id}"
    assert_problem(api.get(wrong, headers=who.headers()), 404)


def test_fits_are_kept_listed_and_journaled(api: Api) -> None:
    who = api.project()
    sensor_id, _ = api.sensor(who)
    ids = []
    for offset in (0.5, 0.7):
        body = {
            "points": [{"value": v, "reference": v - offset} for v in (0.0, 50.0, 100.0)],
            "degree": 1,
        }
        ids.append(calibrate(api, who, sensor_id, body).json()["calibration_id"])
    listed = api.get(f"/api/v1/sensors/{sensor_id}/calibrations", headers=who.headers()).json()
    assert [f["calibration_id"] for f in listed["items"]] == ids[::-1]  # newest first
    assert "points" not in listed["items"][0]
    one = api.get(f"/api/v1/sensors/{sensor_id}/calibrations/{ids[0]}", headers=who.headers())
    assert one.status_code == 200 and len(one.json()["points"]) == 3
    assert one.json()["coefficients"] == pytest.approx([-0.5, 1.0])
    events = api.get(
        "/api/v1/events", params={"kind": "sensor.calibration_fitted"}, headers=who.headers()
    ).json()["items"]
    assert [e["payload"]["calibration_id"] for e in events] == ids[::-1]
    assert events[0]["sensor_id"] == sensor_id and events[0]["actor"] == f"user:{who.user_id}"
    assert events[0]["payload"]["proposed_version"] == "v2"


def test_applying_the_proposal_corrects_new_readings_and_keeps_old_ones(api: Api) -> None:
    who = api.project()
    ids = api.stack(who)  # linear a=2, b=1: value = 2·raw + 1
    api.ingest(ids, [{"timestamp": "2026-01-01T00:00:00Z", "raw_value": 200.0}])
    body = {"points": [{"value": 400.8, "reference": 400.0}, {"value": 100.3, "reference": 100.0}]}
    fit = calibrate(api, who, ids["sensor_id"], body).json()
    proposal = fit["proposed_profile"]
    assert proposal["version"] == "v2" and proposal["kind"] == "linear"
    assert proposal["payload"]["correction"]["calibration_id"] == fit["calibration_id"]
    # Applied from the next reading's time on (the proposal with an effective_from).
    body = {**proposal, "effective_from": "2026-01-01T00:00:01Z"}
    r = api.put(
        f"/api/v1/sensors/{ids['sensor_id']}/conversion-profile", body, headers=who.headers()
    )
    assert r.status_code == 200, r.text
    assert r.json()["conversion_profile"]["version"] == "v2"
    assert api.ingest(ids, [{"timestamp": "2026-01-01T00:00:01Z", "raw_value": 200.0}]).is_success
    old, new = api.readings(who, sensor_id=ids["sensor_id"])
    assert (old["value"], old["profile_version"]) == (401.0, "v1")
    c0, c1 = fit["coefficients"]
    assert new["profile_version"] == "v2"
    assert new["value"] == pytest.approx(c0 + c1 * 401.0)
    assert new["value"] == pytest.approx(400.0 + (401.0 - 400.8) * 300 / 300.5)


def test_a_second_fit_builds_on_the_first_correction(api: Api) -> None:
    who = api.project()
    sensor_id, _ = api.sensor(who, LINEAR_1_TO_1)
    first = {"points": [{"value": v, "reference": 2 * v} for v in (0.0, 10.0)]}
    proposal = calibrate(api, who, sensor_id, first).json()["proposed_profile"]
    url = f"/api/v1/sensors/{sensor_id}/conversion-profile"
    assert api.put(url, proposal, headers=who.headers()).status_code == 200
    # Under v2 the sensor reads 2·raw; the reference says 2·raw + 1.
    second = {"points": [{"value": 2 * v, "reference": 2 * v + 1} for v in (0.0, 10.0)]}
    fit = calibrate(api, who, sensor_id, second).json()
    assert fit["base_profile_version"] == "v2"
    v3 = fit["proposed_profile"]
    assert v3["version"] == "v3"
    assert v3["payload"]["correction"]["coefficients"] == pytest.approx([1.0, 2.0])
    assert {k: v for k, v in v3["payload"].items() if k != "correction"} == {"a": 1.0, "b": 0.0}


def test_a_correction_that_is_no_polynomial_is_refused_by_the_profile(api: Api) -> None:
    who = api.project()
    sensor_id, _ = api.sensor(who)
    body = {"version": "v2", "kind": "linear", "payload": {"a": 1.0, "correction": {"c": [1]}}}
    r = api.put(f"/api/v1/sensors/{sensor_id}/conversion-profile", body, headers=who.headers())
    assert_problem(r, 422, "payload.correction.coefficients")


def test_a_reference_sensor_and_a_window_pair_readings_by_time(api: Api) -> None:
    """Both probes in one bath warming at 3 °C/s: the reference (in °F) reads every second,
    the sensor every 0.5 s between them and reads ``(T - 0.6) / 1.002``."""
    who = api.project()
    ids = api.stack(who)
    sensor_id, token = api.sensor(who, LINEAR_1_TO_1)
    ref_id, ref_token = api.sensor(who, LINEAR_1_TO_1, display_unit="°F")
    t0 = LONG_AGO + timedelta(days=2000)

    def bath(seconds: float) -> float:
        return 20.0 + 3.0 * seconds

    def stamp(seconds: float) -> str:
        return (t0 + timedelta(seconds=seconds)).isoformat()

    reference = [{"timestamp": stamp(s), "raw_value": bath(s) * 9 / 5 + 32} for s in range(0, 21)]
    own = [
        {"timestamp": stamp(s / 2 - 0.25), "raw_value": (bath(s / 2 - 0.25) - 0.6) / 1.002}
        for s in range(0, 45)  # -0.25 s to 21.75 s: the ends lie outside the reference's
    ]
    assert api.ingest({**ids, "sensor_id": ref_id}, reference, token=ref_token).is_success
    assert api.ingest({**ids, "sensor_id": sensor_id}, own, token=token).is_success
    body = {
        "reference_sensor_id": ref_id,
        "since": stamp(-1),
        "until": stamp(30),
        "degree": 1,
    }
    r = calibrate(api, who, sensor_id, body)
    assert r.status_code == 201, r.text
    fit = r.json()
    assert fit["source"] == "reference_sensor" and fit["reference_sensor_id"] == ref_id
    # Between 0 s and 20 s: 40 readings of the sensor (0.25 s to 19.75 s) pair.
    assert fit["n_points"] == 40 and len(fit["points"]) == 40
    assert fit["points"][0]["timestamp"].startswith(t0.date().isoformat())
    assert fit["coefficients"] == pytest.approx([0.6, 1.002], abs=1e-9)
    assert fit["points"][0]["reference"] == pytest.approx(bath(0.25))  # °F to °C
    assert fit["max_error"] < 1e-9
    # A window holding too few pairs for the degree.
    body = {**body, "since": stamp(0.1), "until": stamp(0.3), "degree": 1}
    problem = assert_problem(calibrate(api, who, sensor_id, body), 422, "since")
    assert "1 given" in problem["detail"]


def test_a_reference_in_another_dimension_is_refused(api: Api) -> None:
    who = api.project()
    sensor_id, _ = api.sensor(who)
    ref_id, _ = api.sensor(who, display_unit="bar")
    body = {
        "reference_sensor_id": ref_id,
        "since": "2026-01-01T00:00:00Z",
        "until": "2026-01-02T00:00:00Z",
    }
    problem = assert_problem(calibrate(api, who, sensor_id, body), 422, "reference_sensor_id")
    assert "bar" in problem["detail"]
