"""The portal as a place to work: an editor does the demo's whole scenario in the browser
alone (experiment, run, capture session, a sensor and its token, stop, succeed; the owner archives), an
owner batch-changes, deletes and restores, and a viewer sees no action at all. Screenshots
go to test-artifacts/ (and /work/notes/screens/ when that folder exists)."""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, Page, expect

from tests.support.cloud import CloudServer

TIMEOUT_MS = 10_000
NOTES_SCREENS = Path("/work/notes/screens")


def _shot(page: Page, artifacts: Path, name: str) -> None:
    path = artifacts / f"portal-{name}.png"
    page.wait_for_timeout(250)  # let a dialog or a chart finish drawing
    page.screenshot(path=str(path), full_page=True)
    if NOTES_SCREENS.is_dir():
        shutil.copy(path, NOTES_SCREENS / path.name)


class Project:
    """A project made through the API by its owner (the gateway grants the other roles)."""

    def __init__(self, base_url: str) -> None:
        self.c = httpx.Client(base_url=base_url, timeout=30)
        self.owner = str(uuid.uuid4())
        r = self.c.post("/api/v1/projects", headers={"X-User-Id": self.owner}, json={"name": "lab"})
        r.raise_for_status()
        self.id = r.json()["id"]

    def headers(self, role: str = "owner") -> dict[str, str]:
        return {"X-User-Id": self.owner, "X-Project-Id": self.id, "X-Project-Role": role}

    def post(self, path: str, body: Any = None) -> Any:
        r = self.c.post(path, headers=self.headers(), json=body)
        assert r.status_code in (200, 201), r.text
        return r.json()


def _open_as(browser: Browser, url: str, project: Project, role: str) -> Page:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=url)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors  # type: ignore[attr-defined]
    page.goto(url + "/")
    page.locator("#identity-change").click()
    form = page.locator("#identity-form")
    form.locator("input[name=user]").fill(project.owner)
    form.locator("input[name=project]").fill(project.id)
    form.locator("select[name=role]").select_option(role)
    page.locator("#identity-save").click()
    expect(page.locator("#identity-summary")).to_contain_text(role)
    return page


def _fill(page: Page, form: str, **fields: str) -> None:
    for name, value in fields.items():
        field = page.locator(f"{form} [name={name}]")
        if field.evaluate("el => el.tagName") == "SELECT":
            field.select_option(value)
        else:
            field.fill(value)


def test_an_editor_does_the_whole_scenario_in_the_portal(
    portal_server: CloudServer, browser: Browser, artifacts: Path
) -> None:
    project = Project(portal_server.url)
    page = _open_as(browser, portal_server.url, project, "editor")
    expect(page.locator("#nav-deleted")).to_be_hidden()  # owners only

    # Experiment: the API's refusal is shown next to the field it names.
    page.locator("#new-experiment").click()
    _fill(page, "#experiment-form", name=" \u200b ", tags="thermal, demo")
    page.locator("#experiment-form button[type=submit]").click()
    expect(page.locator("#experiment-form [data-error-for=name]")).not_to_be_empty()
    _shot(page, artifacts, "form-error")
    _fill(page, "#experiment-form", name="Furnace heat-up", description="Type K on the wall")
    page.locator("#experiment-form button[type=submit]").click()
    expect(page.locator("h1")).to_contain_text("Furnace heat-up")
    expect(page.locator(".page-head .chip.tag")).to_have_count(2)

    # Run, with its parameters as JSON.
    page.locator("#new-run").click()
    _fill(page, "#run-form", name="ramp-80C", params='{"setpoint_c": 80}')
    page.locator("#run-form button[type=submit]").click()
    expect(page.locator("h1")).to_contain_text("ramp-80C")
    expect(page.locator("#run-status")).to_have_text("running")
    expect(page.locator(".page-head .chip.kv")).to_have_text("setpoint_c=80")
    run_id = page.url.rsplit("/", 1)[1].split("?")[0]

    # Capture session #1, running.
    page.locator("#new-session").click()
    page.locator("#session-form button[type=submit]").click()
    expect(page.locator(".session-tab.selected")).to_have_attribute("data-status", "running")
    session_id = page.locator(".session-tab.selected").get_attribute("data-session-id")

    # A sensor: a unit the API refuses is shown at its field; then its token, shown once, with
    # the edge config for the running session.
    page.locator("a[data-nav=sensors]").click()
    page.locator("#register-sensor").click()
    _fill(page, "#sensor-form", name="TC-1 furnace", input_unit="bogons")
    page.locator("#sensor-form [name=payload]").fill('{"a": 100, "b": 20}')
    page.locator("#sensor-form button[type=submit]").click()
    expect(page.locator("#sensor-form [data-error-for=input_unit]")).to_contain_text("bogons")
    _fill(page, "#sensor-form", input_unit="mV")
    page.locator("#sensor-form button[type=submit]").click()
    token = page.locator("#sensor-token").input_value()
    assert len(token) > 20
    snippet = page.locator("#edge-snippet").inner_text()
    sensor_id = page.locator("tr[data-name='TC-1 furnace']").get_attribute("data-sensor-id")
    assert f'sensor_id = "{sensor_id}"' in snippet and f'token = "{token}"' in snippet
    assert f'run_id = "{run_id}"' in snippet and f'capture_session_id = "{session_id}"' in snippet
    page.locator("#copy-token").click()
    expect(page.locator("#copy-state")).to_have_text("Token copied")
    assert page.evaluate("navigator.clipboard.readText()") == token
    expect(page.locator("[data-action=rotate]")).to_have_count(0)  # rotating is the owner's
    _shot(page, artifacts, "sensor-token")

    # The bench sends readings with the token read from the page.
    now = datetime.now(UTC)
    readings = [
        {
            "timestamp": (now - timedelta(seconds=5 - 0.1 * i)).isoformat(),
            "raw_value": 0.5 + i / 100,
        }
        for i in range(40)
    ]
    r = httpx.post(
        portal_server.url + "/api/v1/telemetry",
        headers={"Authorization": f"Bearer {token}"},
        json={
            "sensor_id": sensor_id,
            "run_id": run_id,
            "capture_session_id": session_id,
            "readings": readings,
        },
    )
    assert r.status_code == 202, r.text

    # Stop the session, mark the run succeeded.
    page.goto(f"{portal_server.url}/runs/{run_id}")
    chart = page.locator(f".chart[data-sensor-id='{sensor_id}']")
    expect(chart).to_have_attribute("data-readings", "40")
    page.locator("#stop-session").click()
    _shot(page, artifacts, "stop-session")
    page.locator("#stop-form button[type=submit]").click()
    expect(page.locator(".session-tab.selected")).to_have_attribute("data-status", "succeeded")
    page.locator("#run-succeeded").click()
    expect(page.locator("#run-status")).to_have_text("succeeded")
    expect(page.locator("#delete-run")).to_have_count(0)  # deleting is the owner's
    _shot(page, artifacts, "run-editor")

    # Archiving is the owner's (as are rotating tokens and batch status): the editor is not
    # offered it, the project's owner archives the experiment.
    page.locator(".crumbs a").nth(1).click()
    expect(page.locator("#edit-experiment")).to_be_visible()
    expect(page.locator("#archive-experiment")).to_have_count(0)
    experiment_url = page.url
    page = _open_as(browser, portal_server.url, project, "owner")
    page.goto(experiment_url)
    page.locator("#archive-experiment").click()
    expect(page.locator("h1 .badge")).to_have_text("archived")
    expect(page.locator("#new-run")).to_have_count(0)
    _shot(page, artifacts, "experiment-archived")

    events = project.c.get("/api/v1/events", params={"limit": 200}, headers=project.headers())
    kinds = {e["kind"] for e in events.json()["items"]}
    assert {"experiment.created", "run.created", "capture_session.started", "sensor.registered",
            "capture_session.stopped", "run.status_changed", "experiment.archived"} <= kinds  # fmt: skip
    assert page.errors == []  # type: ignore[attr-defined]


def test_an_owner_batch_changes_deletes_and_restores(
    portal_server: CloudServer, browser: Browser, artifacts: Path
) -> None:
    project = Project(portal_server.url)
    exp = project.post("/api/v1/experiments", {"name": "Calibration bath", "tags": ["cal"]})["id"]
    runs = [
        project.post(f"/api/v1/experiments/{exp}/runs", {"name": f"bath-{i}"})["id"]
        for i in range(3)
    ]
    page = _open_as(browser, portal_server.url, project, "owner")
    page.goto(f"{portal_server.url}/experiments/{exp}")

    # Two runs to failed at once.
    for run in runs[:2]:
        page.locator(f".pick-run[data-run-id='{run}']").check()
    page.locator("#batch-status").select_option("failed")
    page.locator("#batch-apply").click()
    expect(page.locator("#notice")).to_contain_text("2 runs set to failed")
    expect(page.locator(f"tr[data-run-id='{runs[0]}'] .badge")).to_have_text("failed")
    expect(page.locator(f"tr[data-run-id='{runs[2]}'] .badge")).to_have_text("running")
    _shot(page, artifacts, "batch-status")

    # Delete a run, undo it.
    page.locator(f"tr[data-run-id='{runs[0]}'] a").click()
    page.locator("#delete-run").click()
    _shot(page, artifacts, "confirm-delete")
    page.locator("#confirm-delete button[type=submit]").click()
    expect(page.locator("#notice")).to_contain_text("deleted")
    expect(page.locator(f"tr[data-run-id='{runs[0]}']")).to_have_count(0)
    page.locator("#undo-delete").click()
    expect(page.locator("h1")).to_contain_text("bath-0")

    # Delete the experiment (its capturing run's session is none: the runs have none), find
    # it among the deleted, restore it.
    page.goto(f"{portal_server.url}/experiments/{exp}")
    page.locator(f".pick-run[data-run-id='{runs[2]}']").check()
    page.locator("#batch-status").select_option("cancelled")
    page.locator("#batch-apply").click()
    expect(page.locator(f"tr[data-run-id='{runs[2]}'] .badge")).to_have_text("cancelled")
    page.locator("#delete-experiment").click()
    page.locator("#confirm-delete button[type=submit]").click()
    expect(page.locator("tr[data-experiment-id]")).to_have_count(0)
    page.locator("#nav-deleted").click()
    row = page.locator(f"tr[data-deleted-id='{exp}']")
    expect(row).to_contain_text("Calibration bath")
    _shot(page, artifacts, "deleted")
    row.get_by_role("button", name="Restore").click()
    expect(page.locator("h1")).to_contain_text("Calibration bath")
    expect(page.locator("tr[data-run-id]")).to_have_count(3)

    # Rotate a sensor's token: the new one is shown once.
    body = {
        "name": "TC-2", "type": "thermocouple", "input_unit": "mV", "display_unit": "°C",
        "conversion_profile": {"version": "v1", "kind": "thermocouple", "payload": {"type": "K"}},
    }  # fmt: skip
    sensor = project.post("/api/v1/sensors", body)["sensor"]["id"]
    page.locator("a[data-nav=sensors]").click()
    page.locator(f"tr[data-sensor-id='{sensor}'] [data-action=rotate]").click()
    page.locator("#confirm-rotate button[type=submit]").click()
    expect(page.locator("#token-panel")).to_contain_text("Token of TC-2")
    new_token = page.locator("#sensor-token").input_value()
    r = project.c.get(f"/api/v1/sensors/{sensor}", headers=project.headers())
    head, tail = r.json()["token_preview"].split("…")
    assert new_token.startswith(head) and new_token.endswith(tail)
    # A profile of a kind the units do not fit: the API's reason at the field.
    page.locator(f"tr[data-sensor-id='{sensor}'] [data-action=profile]").click()
    page.locator("#profile-form [name=payload]").fill('{"type": "Q"}')
    page.locator("#profile-form button[type=submit]").click()
    expect(page.locator("#profile-form [data-error-for=payload]")).to_contain_text("Q")
    page.locator("#profile-form [name=payload]").fill('{"type": "J"}')
    page.locator("#profile-form button[type=submit]").click()
    expect(page.locator(f"tr[data-sensor-id='{sensor}']")).to_contain_text("v2")
    page.locator(f"tr[data-sensor-id='{sensor}'] [data-action=revoke]").click()
    page.locator("#confirm-revoke button[type=submit]").click()
    expect(page.locator(f"tr[data-sensor-id='{sensor}'] .badge")).to_have_text("revoked")
    _shot(page, artifacts, "sensors-owner")
    assert page.errors == []  # type: ignore[attr-defined]


def test_a_viewer_sees_no_action(
    portal_server: CloudServer, browser: Browser, artifacts: Path
) -> None:
    project = Project(portal_server.url)
    exp = project.post("/api/v1/experiments", {"name": "Furnace heat-up"})["id"]
    run = project.post(f"/api/v1/experiments/{exp}/runs", {"name": "ramp"})["id"]
    project.post(f"/api/v1/runs/{run}/capture-sessions", {"ordinal_number": 1})
    body = {
        "name": "TC-1", "type": "thermocouple", "input_unit": "mV", "display_unit": "°C",
        "conversion_profile": {"version": "v1", "kind": "linear", "payload": {"a": 1}},
    }  # fmt: skip
    project.post("/api/v1/sensors", body)
    page = _open_as(browser, portal_server.url, project, "viewer")

    pages = {
        "experiments": "/",
        "experiment": f"/experiments/{exp}",
        "run": f"/runs/{run}",
        "sensors": "/sensors",
    }
    for name, path in pages.items():
        page.goto(portal_server.url + path)
        expect(page.locator("#view h1")).to_be_visible()
        page.wait_for_timeout(300)  # the page's own requests answered
        # No action anywhere: no bar of actions, no batch status, no per-row action, no
        # annotate; the only buttons are the session tabs (they select, they change nothing)
        # and the run's Export (a read, which a viewer may do). Runs are selected only to be
        # compared (a link to a page that reads).
        assert (
            page.locator(
                "#view .actions-bar, #view #batch-status, #view #batch-apply,"
                " #view [data-action], #annotate"
            ).count()
            == 0
        )
        buttons = page.locator("#view button:visible:not(.session-tab):not(#export-run)")
        assert buttons.count() == 0, (name, buttons.all_inner_texts())
        if name == "run":
            expect(page.locator(".session-tab")).to_have_count(1)
    expect(page.locator("#nav-deleted")).to_be_hidden()
    _shot(page, artifacts, "viewer-sensors")
    page.goto(f"{portal_server.url}/runs/{run}")
    expect(page.locator(".session-tab")).to_have_count(1)
    _shot(page, artifacts, "viewer-run")
    assert page.errors == []  # type: ignore[attr-defined]
