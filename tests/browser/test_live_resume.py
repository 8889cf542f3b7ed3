"""The run page's live chart across a dropped connection: a stream that has carried no reading
yet resumes from where it started, so the readings stored while it was away are charted."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import APIResponse, Browser, Route, expect

from tests.browser.test_portal import TIMEOUT_MS, Demo, open_as_viewer
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


@pytest.mark.parametrize("history", [50, 1600], ids=["every-reading", "downsampled"])
def test_readings_stored_between_the_history_and_the_stream_are_charted_once(
    portal_server: CloudServer, browser: Browser, history: int
) -> None:
    """The run page reads each sensor's history, then opens the live stream. Readings stored
    in between are charted (the stream goes on from where the earliest history ends), and
    those a later history already holds are not counted twice — also when that history is
    downsampled (its points are not the readings' timestamps: the readings' commit positions
    say what it holds)."""
    demo = Demo(portal_server.url)
    session = demo.session(1)
    demo.ingest(session, 0, history, ago_s=60 + history / 10)
    second, token = demo._sensor("TC-2 door")

    def ingest_second(n: int, ago_s: float) -> None:
        demo.ingest(session, 0, n, ago_s=ago_s, sensor=(second, token))

    ingest_second(10, ago_s=50)
    page, errors = open_as_viewer(browser, portal_server.url, demo)
    series: list[Route] = []
    tickets: list[Route] = []

    def hold(into: list[Route]) -> Callable[[Route], None]:
        # a function of our own: Playwright marks its handlers, which a bound builtin refuses
        def handler(route: Route) -> None:
            into.append(route)

        return handler

    page.route(f"**/api/v1/telemetry/series?*sensor_id={demo.sensor}*", hold(series))
    page.route("**/api/v1/stream-tickets", hold(tickets))
    page.goto(f"{portal_server.url}/runs/{demo.run}")

    first_chart = page.locator(f".chart[data-sensor-id='{demo.sensor}']")
    second_chart = page.locator(f".chart[data-sensor-id='{second}']")
    expect(second_chart).to_have_attribute("data-readings", "10")  # its history is read
    ingest_second(5, ago_s=40)  # after the second sensor's history
    demo.ingest(session, 50, 5, ago_s=30)  # after it too, and before the first one's
    assert len(series) == 1
    series[0].continue_()
    expect(first_chart).to_have_attribute("data-readings", str(history + 5))
    demo.ingest(session, history + 5, 7, ago_s=20)  # after every history, before the stream
    deadline = datetime.now(UTC) + timedelta(seconds=TIMEOUT_MS / 1000)
    while not tickets and datetime.now(UTC) < deadline:
        page.wait_for_timeout(50)
    assert len(tickets) == 1, "the page never asked for a stream"
    tickets[0].continue_()
    expect(page.locator("#live-state")).to_have_text("● live")
    expect(first_chart).to_have_attribute("data-readings", str(history + 12))
    expect(second_chart).to_have_attribute("data-readings", "15")
    demo.ingest(session, history + 12, 3, ago_s=10)  # and it follows live
    expect(first_chart).to_have_attribute("data-readings", str(history + 15))
    page.wait_for_timeout(500)  # nothing counted twice arrives late
    expect(first_chart).to_have_attribute("data-readings", str(history + 15))
    expect(second_chart).to_have_attribute("data-readings", "15")
    assert errors == []


def test_a_chart_reloading_its_history_keeps_the_readings_streamed_meanwhile(
    portal_server: CloudServer, browser: Browser
) -> None:
    """Past 20,000 live readings a chart reads its history again (downsampled anew). Readings
    the stream delivers while that history is on its way are kept: the history holds what
    committed before its snapshot, and the page appends the rest over it."""
    demo = Demo(portal_server.url)
    session = demo.session(1)
    demo.ingest(session, 0, 10, ago_s=120)
    page, errors = open_as_viewer(browser, portal_server.url, demo)
    asked: list[Route] = []
    held: list[tuple[Route, APIResponse]] = []

    def history(route: Route) -> None:
        asked.append(route)
        if len(asked) == 1:  # the page's first history
            route.continue_()
        else:  # the reload's: answered from the database now, handed to the page later
            held.append((route, route.fetch()))

    page.route(f"**/api/v1/telemetry/series?*sensor_id={demo.sensor}*", history)
    page.goto(f"{portal_server.url}/runs/{demo.run}")
    chart = page.locator(f".chart[data-sensor-id='{demo.sensor}']")
    expect(chart).to_have_attribute("data-readings", "10")
    expect(page.locator("#live-state")).to_have_text("● live")
    for k in range(21):  # 21,000 live readings, 1 ms apart: the chart reloads its history
        demo.ingest(session, 10 + 1000 * k, 1000, ago_s=110 - 2 * k, step_ms=1)
    expect(chart).to_have_attribute("data-readings", "21010")
    deadline = datetime.now(UTC) + timedelta(seconds=TIMEOUT_MS / 1000)
    while not held and datetime.now(UTC) < deadline:
        page.wait_for_timeout(50)
    assert len(held) == 1, "the chart never reloaded its history"
    demo.ingest(session, 21_010, 3, ago_s=20)  # streamed while the reload is on its way
    expect(chart).to_have_attribute("data-readings", "21013")
    route, answer = held[0]
    # what had committed when the reload was asked for (the last batches may not have)
    assert 20_010 <= answer.json()["total"] <= 21_010
    route.fulfill(response=answer)
    page.wait_for_timeout(500)  # the reload is applied
    expect(chart).to_have_attribute("data-readings", "21013")
    assert chart.get_attribute("data-points") != "21013"  # downsampled anew
    demo.ingest(session, 21_013, 2, ago_s=10)  # and it follows live
    expect(chart).to_have_attribute("data-readings", "21015")
    assert len(asked) == 2 and errors == []
