"""/docs and /redoc in Chromium on a machine without internet: every request that does not go
to the service itself is refused, and the pages must still render, and "Try it out" must send
the identity headers given under "Authorize"."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import httpx
from playwright.sync_api import Browser, Page, Route, expect

from tests.support.cloud import CloudServer, bootstrap

TIMEOUT_MS = 20_000


def offline_page(browser: Browser, base_url: str, refused: list[str]) -> Page:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    host = urlsplit(base_url).hostname

    def only_the_service(route: Route) -> None:
        if urlsplit(route.request.url).hostname == host:
            route.continue_()
        else:
            refused.append(f"{route.request.resource_type} {route.request.url}")
            route.abort("internetdisconnected")

    page.route("**/*", only_the_service)
    return page


def authorize(page: Page, values: dict[str, str]) -> None:
    page.locator("button.authorize").first.click()
    for scheme, value in values.items():
        box = page.locator(".auth-container", has=page.locator(f"h4:has-text('{scheme}')"))
        box.locator("input").fill(value)
        box.locator("button.authorize").click()
    page.locator("button.btn-done").first.click()


def test_swagger_ui_renders_offline_and_try_it_out_sends_the_identity(
    portal_server: CloudServer, browser: Browser, artifacts: Path
) -> None:
    bench = bootstrap(portal_server.url)
    with bench.client() as c:
        c.post(
            "/api/v1/experiments",
            json={"project_id": bench.project_id, "name": "Docs try-out experiment"},
        ).raise_for_status()
    refused: list[str] = []
    page = offline_page(browser, portal_server.url, refused)
    page.goto(portal_server.url + "/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("benchlink cloud")

    authorize(
        page,
        {"UserId": bench.owner_user_id, "ProjectId": bench.project_id, "ProjectRole": "owner"},
    )
    op = page.locator(".opblock-get", has=page.locator("[data-path='/api/v1/experiments']"))
    op.locator(".opblock-summary").first.click()
    op.locator("button.try-out__btn").click()
    with page.expect_response(lambda r: urlsplit(r.url).path == "/api/v1/experiments") as sent:
        op.locator("button.execute").click()
    assert sent.value.status == 200
    assert sent.value.request.headers["x-project-role"] == "owner"
    expect(op.locator(".live-responses-table .response .response-col_status")).to_have_text("200")
    expect(op.locator(".live-responses-table")).to_contain_text("Docs try-out experiment")
    page.screenshot(path=str(artifacts / "api-docs-try-it-out.png"))
    assert refused == [], f"/docs asked the internet for {refused}"


def test_redoc_renders_offline(portal_server: CloudServer, browser: Browser) -> None:
    refused: list[str] = []
    page = offline_page(browser, portal_server.url, refused)
    page.goto(portal_server.url + "/redoc")
    # ReDoc lays the whole document out in the page before its first heading: seconds of
    # script on a busy 2-core machine, where the default 5 s wait was seen to run out.
    expect(page.locator("h1").first).to_contain_text("benchlink cloud", timeout=30_000)
    expect(page.get_by_text("X-Project-Role").first).to_be_attached()
    # ReDoc's bundle links its "API docs by Redocly" logo from its CDN: a missing picture in
    # the side menu, nothing the page needs.
    assert [r for r in refused if not r.startswith("image ")] == [], refused
    assert httpx.get(portal_server.url + "/openapi.json").status_code == 200
