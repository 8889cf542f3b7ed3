"""bin/demo_seed.py against a live cloud: what it creates, and that a re-run duplicates nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tests.demo.conftest import BIN, run_script
from tests.support.cloud import CloudServer


def seed(cloud: CloudServer, owner_file: Path, *extra: str) -> dict[str, Any]:
    out = run_script(
        "demo_seed.py", "--base-url", cloud.url, "--owner-file", str(owner_file), "--json", *extra
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def owner_headers(result: dict[str, Any]) -> dict[str, str]:
    return {
        "X-User-Id": result["owner_user_id"],
        "X-Project-Id": result["project_id"],
        "X-Project-Role": "owner",
    }


def send_one(cloud: CloudServer, result: dict[str, Any], sensor: dict[str, Any]) -> int:
    """Post one reading with the sensor's token into a fresh capture session; the status."""
    h = owner_headers(result)
    run_id = result["runs"]["Furnace calibration"]
    with httpx.Client(base_url=cloud.url, headers=h) as c:
        sessions = c.get(f"/api/v1/runs/{run_id}/capture-sessions").json()["items"]
        running = [s for s in sessions if s["status"] == "running"]
        if running:
            session_id = running[0]["id"]
        else:
            body = {"ordinal_number": len(sessions) + 1, "status": "running"}
            session_id = c.post(f"/api/v1/runs/{run_id}/capture-sessions", json=body).json()["id"]
    r = httpx.post(
        cloud.url + "/api/v1/telemetry",
        headers={"Authorization": f"Bearer {sensor['token']}"},
        json={
            "sensor_id": sensor["id"],
            "run_id": run_id,
            "capture_session_id": session_id,
            "readings": [
                {"timestamp": datetime.now(UTC).isoformat(), "raw_value": 1.0, "meta": {"step": 1}}
            ],
        },
    )
    return r.status_code


def inventory(cloud: CloudServer, result: dict[str, Any]) -> dict[str, Any]:
    h = owner_headers(result)
    with httpx.Client(base_url=cloud.url, headers=h) as c:
        projects = c.get("/api/v1/projects", params={"name": "demo_project"}).json()["items"]
        experiments = c.get("/api/v1/experiments", params={"include_archived": "true"}).json()
        runs = {
            e["name"]: len(c.get(f"/api/v1/experiments/{e['id']}/runs").json()["items"])
            for e in experiments["items"]
        }
        sensors = sorted(s["name"] for s in c.get("/api/v1/sensors").json()["items"])
    return {
        "projects": [p["id"] for p in projects],
        "experiments": sorted(e["name"] for e in experiments["items"]),
        "runs": runs,
        "sensors": sensors,
    }


def test_seed_creates_the_demo_project_and_prints_working_tokens(
    cloud: CloudServer, tmp_path: Path
) -> None:
    result = seed(cloud, tmp_path / "owner")

    assert result["project_created"] is True
    assert (tmp_path / "owner").read_text().strip() == result["owner_user_id"]
    assert inventory(cloud, result) == {
        "projects": [result["project_id"]],
        "experiments": ["Furnace calibration", "Thermal cycling"],
        "runs": {"Furnace calibration": 1, "Thermal cycling": 1},
        "sensors": ["chamber_mqtt", "furnace_tc_k"],
    }
    kinds = {s["name"]: s["kind"] for s in result["sensors"]}
    assert kinds == {"furnace_tc_k": "thermocouple", "chamber_mqtt": "linear"}
    for sensor in result["sensors"]:
        assert sensor["token"] and sensor["created"]
        assert send_one(cloud, result, sensor) == 202


def test_seed_twice_duplicates_nothing_and_keeps_the_tokens_working(
    cloud: CloudServer, tmp_path: Path
) -> None:
    """docs/demo.md prints the tokens, then runs the seed again: that second run used to
    rotate them, so the tokens the user had just saved stopped working."""
    first = seed(cloud, tmp_path / "owner")
    before = inventory(cloud, first)

    second = seed(cloud, tmp_path / "owner")

    assert second["project_created"] is False
    assert second["project_id"] == first["project_id"]
    assert second["owner_user_id"] == first["owner_user_id"]
    assert second["experiments"] == first["experiments"]
    assert second["runs"] == first["runs"]
    assert inventory(cloud, second) == before
    for old, new in zip(first["sensors"], second["sensors"], strict=True):
        assert new["id"] == old["id"] and not new["rotated"] and not new["created"]
        assert new["token"] == old["token"]  # shown again, from the tokens file
        assert send_one(cloud, first, old) == 202
    tokens = tmp_path / "demo_tokens.json"
    assert tokens.stat().st_mode & 0o777 == 0o600


def test_rotate_tokens_gives_fresh_ones_and_retires_the_old(
    cloud: CloudServer, tmp_path: Path
) -> None:
    first = seed(cloud, tmp_path / "owner")
    rotated = seed(cloud, tmp_path / "owner", "--rotate-tokens")
    for old, new in zip(first["sensors"], rotated["sensors"], strict=True):
        assert new["id"] == old["id"] and new["rotated"] and new["token"] != old["token"]
        assert send_one(cloud, rotated, new) == 202
        assert send_one(cloud, rotated, old) == 401  # rotated out
    again = seed(cloud, tmp_path / "owner")  # the fresh ones are the ones kept now
    assert [s["token"] for s in again["sensors"]] == [s["token"] for s in rotated["sensors"]]


def test_a_token_rotated_elsewhere_is_not_shown_as_if_it_worked(
    cloud: CloudServer, tmp_path: Path
) -> None:
    first = seed(cloud, tmp_path / "owner")
    furnace = first["sensors"][0]
    with httpx.Client(base_url=cloud.url, headers=owner_headers(first)) as c:
        c.post(f"/api/v1/sensors/{furnace['id']}/rotate-token").raise_for_status()
    again = seed(cloud, tmp_path / "owner")
    assert again["sensors"][0]["token"] is None and not again["sensors"][0]["rotated"]
    assert again["sensors"][1]["token"] == first["sensors"][1]["token"]
    proc = subprocess.run(
        [
            sys.executable,
            str(BIN / "demo_seed.py"),
            "--base-url",
            cloud.url,
            "--owner-file",
            str(tmp_path / "owner"),
            "--edge-toml",
            str(tmp_path / "edge.toml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "--rotate-tokens" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_without_its_tokens_file_a_rerun_keeps_the_tokens_and_prints_none(
    cloud: CloudServer, tmp_path: Path
) -> None:
    owner = str(uuid.uuid4())
    first = seed(cloud, tmp_path / "unused", "--owner-user-id", owner)
    kept = seed(
        cloud,
        tmp_path / "unused",
        "--owner-user-id",
        owner,
        "--tokens-file",
        str(tmp_path / "elsewhere.json"),
    )

    assert not (tmp_path / "unused").exists()  # an explicit owner is not saved
    assert kept["owner_user_id"] == owner and kept["project_id"] == first["project_id"]
    assert all(s["token"] is None and not s["rotated"] for s in kept["sensors"])
    assert all(send_one(cloud, first, s) == 202 for s in first["sensors"])


def test_another_owner_gets_its_own_demo_project(cloud: CloudServer, tmp_path: Path) -> None:
    a = seed(cloud, tmp_path / "a")
    b = seed(cloud, tmp_path / "b")
    assert a["owner_user_id"] != b["owner_user_id"]
    assert a["project_id"] != b["project_id"]


def test_human_output_shows_ids_and_tokens_once(cloud: CloudServer, tmp_path: Path) -> None:
    out = run_script(
        "demo_seed.py", "--base-url", cloud.url, "--owner-file", str(tmp_path / "o")
    ).stdout
    assert "project_id" in out and "owner_user_id" in out
    assert out.count("token        bls_") == 2
    again = run_script(
        "demo_seed.py", "--base-url", cloud.url, "--owner-file", str(tmp_path / "o")
    ).stdout
    assert "found (re-run: nothing duplicated)" in again
    assert again.count("token kept") == 2 and again.count("token        bls_") == 2


def test_env_output_is_shell_exports(cloud: CloudServer, tmp_path: Path) -> None:
    out = run_script(
        "demo_seed.py", "--base-url", cloud.url, "--owner-file", str(tmp_path / "o"), "--env"
    ).stdout
    names = {line.split("=")[0].removeprefix("export ") for line in out.splitlines()}
    assert names == {
        "BASE",
        "OWNER",
        "PROJECT",
        "FURNACE_EXPERIMENT",
        "FURNACE_RUN",
        "THERMAL_EXPERIMENT",
        "THERMAL_RUN",
        "FURNACE_SENSOR",
        "FURNACE_TOKEN",
        "CHAMBER_SENSOR",
        "CHAMBER_TOKEN",
    }


def test_edge_toml_binds_the_seeded_sensors_to_one_running_session(
    cloud: CloudServer, tmp_path: Path
) -> None:
    from edge.config import load_config

    toml = tmp_path / "edge.toml"
    first = seed(cloud, tmp_path / "o", "--edge-toml", str(toml), "--edge-device", "/dev/ttyX")
    cfg = load_config(toml)
    assert toml.stat().st_mode & 0o777 == 0o600  # it holds tokens
    assert cfg.cloud.url == cloud.url
    by_source = {s.source: s for s in cfg.sensors}
    assert str(by_source["serial"].sensor_id) == first["sensors"][0]["id"]
    assert by_source["serial"].port == "/dev/ttyX"
    assert by_source["serial"].token.get_secret_value() == first["sensors"][0]["token"]
    assert str(by_source["mqtt"].sensor_id) == first["sensors"][1]["id"]
    session = str(by_source["serial"].capture_session_id)

    seed(cloud, tmp_path / "o", "--edge-toml", str(toml))  # again: the same running session
    assert str(load_config(toml).sensors[0].capture_session_id) == session
    run_id = first["runs"]["Furnace calibration"]
    with httpx.Client(base_url=cloud.url, headers=owner_headers(first)) as c:
        sessions = c.get(f"/api/v1/runs/{run_id}/capture-sessions").json()["items"]
    assert [s["id"] for s in sessions] == [session]
