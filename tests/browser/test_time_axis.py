"""The charts' time axis labels, as the portal's own code writes them in Chromium: the time of
day on a 24-hour clock to the precision of the step, and the date under the first tick and
each new day as the browser's locale writes it, as the page's other dates (a German reader got
12/07/2026 under the chart and 7.12.2026 everywhere else on the page)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from playwright.sync_api import Browser

from tests.support.cloud import CloudServer

LABELS = """async ([ticks, step]) => {
  const { TIME_AXIS } = await import("/portal/static/core.js");
  return TIME_AXIS.values(null, ticks, 0, 80, step);
}"""


def _s(iso: str) -> float:
    return datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("locale", "day", "next_day", "days"),
    [
        ("de-DE", "7.12.2026", "8.12.2026", ("7.12.", "8.12.")),
        ("en-US", "12/7/2026", "12/8/2026", ("12/7", "12/8")),
        ("ja-JP", "2026/12/7", "2026/12/8", ("12/7", "12/8")),
    ],
)
def test_the_date_under_the_ticks_is_written_as_the_locale_writes_it(
    portal_server: CloudServer,
    browser: Browser,
    locale: str,
    day: str,
    next_day: str,
    days: tuple[str, str],
) -> None:
    context = browser.new_context(locale=locale, timezone_id="UTC")
    try:
        page = context.new_page()
        page.goto(f"{portal_server.url}/portal/")

        def labels(step: float, *iso: str) -> list[str]:
            return list(page.evaluate(LABELS, [[_s(x) for x in iso], step]))

        assert labels(60, "2026-12-07T04:41", "2026-12-07T04:42", "2026-12-07T04:43") == [
            f"04:41\n{day}", "04:42", "04:43",
        ]  # fmt: skip
        # Past midnight: 24-hour, and the new day's date under its first tick.
        assert labels(3600, "2026-12-07T22:00", "2026-12-07T23:00", "2026-12-08T00:00") == [
            f"22:00\n{day}", "23:00", f"00:00\n{next_day}",
        ]  # fmt: skip
        # Seconds carry their minute; a sub-second step shows the decimals it needs, no more.
        assert labels(1, "2026-12-07T04:41:59", "2026-12-07T04:42:00") == [
            f"04:41:59\n{day}", "04:42:00",
        ]  # fmt: skip
        half = ["2026-12-07T04:41:00", "2026-12-07T04:41:00.500", "2026-12-07T04:41:01"]
        assert labels(0.5, *half) == [f"04:41:00.0\n{day}", "04:41:00.5", "04:41:01.0"]
        assert labels(0.025, "2026-12-07T04:41:00.025") == [f"04:41:00.025\n{day}"]
        # Days: the day and month, the year under the first tick and a new year's.
        assert labels(86400, "2026-12-07", "2026-12-08") == [f"{days[0]}\n2026", days[1]]
        assert labels(86400, "2026-12-31", "2027-01-01")[1].endswith("\n2027")
    finally:
        context.close()
