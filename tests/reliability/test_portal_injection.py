"""Script injection in the portal, in real Chromium: names, tags, descriptions, run params and
metric names holding markup and ``javascript:`` URLs are shown as text -- no script runs, no
request leaves for another origin -- and the Content-Security-Policy forbids inline script, so
even markup that slipped through would not run."""

from __future__ import annotations

import math
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import browser, portal_server  # noqa: F401 (fixtures)
from tests.browser.test_portal import TIMEOUT_MS, Demo, _set_identity
from tests.reliability.conftest import Figures
from tests.support.cloud import CloudServer

LEAK = "http://127.0.0.1:9/leak"  # nothing listens there: a request to it is the proof
PAYLOADS = [
    "<script>window.__pwned = 'script'</script>",
    f'"><img src="{LEAK}/img" onerror="window.__pwned=\'img\'">',
    "javascript:window.__pwned='url'",
    f"<svg onload=\"window.__pwned='svg'\"><a href=\"javascript:fetch('{LEAK}/a')\">x</a></svg>",
    "' onmouseover='window.__pwned=1' x='",
]


def hostile_run(demo: Demo) -> tuple[str, str]:
    exp = demo._post(
        "/api/v1/experiments",
        {
            "project_id": demo.project,
            "name": PAYLOADS[0] + " exp",
            "description": PAYLOADS[1],
            "tags": PAYLOADS[1:3],
        },
    )["id"]
    run = demo._post(
        f"/api/v1/experiments/{exp}/runs",
        {"name": PAYLOADS[3], "params": {"note": PAYLOADS[4], PAYLOADS[2]: PAYLOADS[0]}},
    )["id"]
    body = demo.c.post(
        "/api/v1/sensors",
        headers=demo.h,
        json={
            "project_id": demo.project,
            "name": PAYLOADS[1] + " sensor",
            "type": PAYLOADS[0],
            "input_unit": "mV",
            "display_unit": "C",
            "conversion_profile": {"version": "v1", "kind": "linear", "payload": {"a": 1.0}},
        },
    )
    assert body.status_code == 201, body.text
    demo._post(
        f"/api/v1/runs/{run}/metrics",
        {"metrics": [{"name": "loss", "step": s, "value": math.exp(-s / 9)} for s in range(9)]},
    )
    return exp, run


def watch(page: Page, origin: str) -> tuple[list[str], list[str]]:
    leaks: list[str] = []
    violations: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(origin) else leaks.append(r.url))
    page.on(
        "console",
        lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
    )
    return leaks, violations


@pytest.mark.browser
def test_hostile_text_is_shown_as_text_and_inline_script_is_forbidden(
    portal_server: CloudServer,  # noqa: F811
    browser: Browser,  # noqa: F811
    figures: Figures,
) -> None:
    demo = Demo(portal_server.url)
    exp, run = hostile_run(demo)
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    leaks, violations = watch(page, portal_server.url)
    response = page.goto(portal_server.url + "/")
    assert response is not None
    csp = response.headers.get("content-security-policy", "")
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("style-src")[0], csp
    _set_identity(page, demo)

    row = page.locator(f"tr[data-experiment-id='{exp}']")
    expect(row).to_contain_text(PAYLOADS[0] + " exp")  # the markup, as characters
    expect(row).to_contain_text(PAYLOADS[1])
    expect(row.locator(".chip.tag")).to_have_text(PAYLOADS[1:3])
    row.click()
    expect(page.locator("h1")).to_contain_text(PAYLOADS[0])
    run_row = page.locator(f"tr[data-run-id='{run}']")
    expect(run_row).to_contain_text(PAYLOADS[3])
    expect(run_row).to_contain_text(PAYLOADS[4])
    run_row.hover()
    run_row.click()
    expect(page.locator(".metric-chart[data-metric='loss']")).to_have_attribute("data-points", "9")
    expect(page.locator(".crumbs")).to_contain_text(PAYLOADS[3])
    page.goto(portal_server.url + "/tests")
    page.wait_for_timeout(300)

    # Markup the page itself would turn into elements -- a slip -- still runs nothing.
    page.evaluate(
        """() => {
        const div = document.createElement('div');
        div.innerHTML = `<img src="/no-such-image.png" onerror="window.__pwned='slip'">`;
        document.body.append(div);
        const s = document.createElement('script');
        s.textContent = "window.__pwned = 'inline'";
        document.body.append(s);
        }"""
    )
    page.wait_for_timeout(300)
    assert page.evaluate("window.__pwned") is None
    assert leaks == [], leaks
    assert any("script-src" in v for v in violations), violations  # the policy refused it
    page.close()
    figures.record(
        "portal",
        "hostile names, tags, params, descriptions in Chromium",
        faults={"hostile strings shown": len(PAYLOADS), "markup injected by hand": 2},
        scripts_ran=0,
        requests_leaked=len(leaks),
    )


@pytest.mark.browser
def test_the_portal_works_under_its_policy(
    portal_server: CloudServer,  # noqa: F811
    browser: Browser,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The policy costs nothing the portal does: live charts (WebSocket), the journal, the
    identity dialog, uPlot, all without a single violation."""
    demo = Demo(portal_server.url)
    session = demo.session(1)
    demo.ingest(session, 0, 50, ago_s=10)
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    leaks, violations = watch(page, portal_server.url)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{portal_server.url}/runs/{demo.run}?session={session}")
    _set_identity(page, demo)
    chart = page.locator(f".chart[data-sensor-id='{demo.sensor}']")
    expect(chart).to_have_attribute("data-readings", "50")
    expect(page.locator("#live-state")).to_have_text("● live")
    demo.ingest(session, 50, 10, ago_s=2)
    expect(chart).to_have_attribute("data-readings", "60")
    assert (errors, violations, leaks) == ([], [], []), (errors, violations, leaks)
    assert str(uuid.UUID(demo.run)) in page.url
