"""The run page's live chart across a dropped connection: a stream that has carried no reading
yet resumes from where it started, so the readings stored while it was away are charted."""

from __future__ import annotations

from playwright.sync_api import Browser, expect

from tests.browser.test_portal import TIMEOUT_MS, Demo
from tests.support.cloud import CloudServer
from tests.support.proxy import proxy_to


def test_a_chart_cut_off_before_its_first_reading_gets_what_was_stored_meanwhile(
    portal_server: CloudServer, browser: Browser
) -> None:
    demo = Demo(portal_server.url)
    session = demo.session(1)  # running, and nothing in it yet
    with proxy_to(portal_server.port) as network:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(network.url + "/")
        page.locator("#identity-change").click()
        page.locator("#identity-form input[name=user]").fill(demo.user)
        page.locator("#load-projects").click()
        select = page.locator("#identity-form select[name=project_select]")
        select.select_option(label="demo_project")
        page.locator("#identity-form select[name=role]").select_option("viewer")
        page.locator("#identity-save").click()
        page.goto(f"{network.url}/runs/{demo.run}")
        expect(page.locator("#telemetry")).to_contain_text("Waiting for readings")
        expect(page.locator("#live-state")).to_have_text("● live")
        assert network.messages.wait(10), "the stream never said it was subscribed"
        page.wait_for_timeout(300)  # the page has read that message

        network.cut()
        expect(page.locator("#live-state")).to_have_text("○ reconnecting")
        demo.ingest(session, 0, 30, ago_s=20)  # straight to the cloud: the page is away
        page.wait_for_timeout(500)
        network.restore()
        chart = page.locator(f".chart[data-sensor-id='{demo.sensor}']")
        expect(chart).to_have_attribute("data-readings", "30")
        expect(page.locator("#live-state")).to_have_text("● live")
        demo.ingest(session, 30, 10, ago_s=10)  # and it follows live again
        expect(chart).to_have_attribute("data-readings", "40")
    assert errors == []
