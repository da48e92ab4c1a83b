"""The dashboard in a real browser: Chromium from the system's packages (never Playwright's own
download) driven by Playwright against a real `codepulse serve` process, on the run's database
engine. Sign up, the empty overview with the CLI panel, usage synced through the API with a CLI
token, the overview with its cards, chart and breakdowns (totals computed by hand), the range
picker (htmx), a CLI token made on the settings page, sign out. Screenshots of every page at 360 px and 1440 px go to
`var/screenshots/<dialect>/` (ignored by git; `SCREENSHOT_DIR` to put them elsewhere); any
console error (a CSP violation is one) fails the test.
"""

from __future__ import annotations

from playwright.async_api import Browser

from tests.auth.helpers import PASSWORD
from tests.web.browsing import Shots, Watch, fill_sign_up, see_usage_records
from tests.web.conftest import Serve
from tests.web.helpers import sync_usage_records


async def test_sign_up_sync_and_see_the_overview(serve: Serve, chromium: Browser, shots: Shots) -> None:
    origin = (await serve("browser")).origin
    watch = Watch(expected_4xx={f"{origin}{path}" for path in ("/no/such/page", "/sign-up", "/sign-in")})
    page = await watch.page(chromium)

    # Signed out, the overview sends you to sign in; sign up from there.
    await page.goto(origin + "/")
    await page.wait_for_url(origin + "/sign-in")
    await shots.take(page, "sign-in")
    await page.click("text=Create an account")
    await page.wait_for_url(origin + "/sign-up")
    await fill_sign_up(page, "ada", "Ada Lovelace", password="short")
    await page.wait_for_selector("#password-errors")
    await shots.take(page, "sign-up-errors")
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(origin + "/")

    # The empty state: how to connect the CLI.
    panel = page.locator("[data-testid=connect-cli]")
    await panel.wait_for()
    assert f"codepulse login --server {origin}" in await panel.inner_text()
    await shots.take(page, "overview-empty")

    # A CLI token (as `codepulse login` makes), then a sync through the API.
    assert (await sync_usage_records(origin, "ada"))["inserted"] == 4

    await page.reload()
    await see_usage_records(page)
    await shots.take(page, "overview")

    # The range picker swaps the chart and breakdowns in place (htmx, with its CSRF header).
    await page.select_option("select[name=range]", "7d")
    await page.wait_for_selector("[data-model=mystery-model-x]", state="detached")
    await page.wait_for_selector("#trends-chart canvas")
    assert await page.locator("[data-testid=models] tbody tr").count() == 3
    await page.select_option("select[name=granularity]", "week")
    await page.wait_for_function(
        "() => JSON.parse(document.getElementById('trends-chart').dataset.chart).granularity === 'week'"
    )
    await page.wait_for_selector("#trends-chart canvas")
    await shots.take(page, "overview-7d-weekly")

    # Settings: a CLI token made in the browser is shown once; the one made through the
    # API is listed beside it.
    await page.click("nav >> text=Settings")
    await page.wait_for_url(origin + "/settings")
    await page.fill("#name", "work laptop")
    await page.click("[data-testid=create-token]")
    issued = page.locator("[data-testid=issued-token] code")
    await issued.wait_for()
    assert (await issued.inner_text()).startswith("cp_")
    names = await page.eval_on_selector_all(
        "[data-testid=cli-tokens] tbody th", "cells => cells.map(c => c.textContent)"
    )
    assert sorted(names) == ["laptop", "work laptop"]
    await shots.take(page, "settings")

    # A page that does not exist is a page too.
    await page.goto(origin + "/no/such/page")
    await page.wait_for_selector("[data-status='404']")
    await shots.take(page, "not-found")

    # Sign out ends the session: the overview sends you back to sign in.
    await page.goto(origin + "/")
    await page.click("[data-testid=sign-out]")
    await page.wait_for_url(origin + "/sign-in")
    await page.goto(origin + "/")
    await page.wait_for_url(origin + "/sign-in")
    await page.fill("#login", "ada")
    await page.fill("#password", "not-the-password")
    await page.click("button[type=submit]")
    await page.wait_for_selector(".alert")
    await shots.take(page, "sign-in-error")
    assert watch.problems == []
