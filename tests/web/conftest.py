"""Fixtures of the dashboard's tests: httpx "browsers" through the ASGI app signed in as a team's
roles (route tests), and a real `codepulse serve`, the system's Chromium and the screenshot folder
(browser tests; helpers.py has the rest)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from playwright.async_api import Browser, async_playwright

from codepulse.orgs.models import Organization
from tests.databases import DatabaseServer
from tests.factories import Account, MakeMember, MakeOrg, MakeUser
from tests.web.browsing import Shots
from tests.web.helpers import CHROMIUM, Server, serving, use_session

Clients = Callable[[Account | None], Awaitable[httpx.AsyncClient]]
Serve = Callable[..., Awaitable[Server]]


@pytest.fixture
def web_app(app: FastAPI) -> FastAPI:
    """The app the route tests' clients talk to (a module overrides it for other settings)."""
    return app


@pytest.fixture
async def browser(web_app: FastAPI) -> AsyncIterator[Clients]:
    """`await browser(account)`: a client of its own (its own cookies), signed in as `account`
    (signed out with None)."""
    clients: list[httpx.AsyncClient] = []

    async def open_browser(account: Account | None) -> httpx.AsyncClient:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=web_app), base_url="http://testserver")
        clients.append(client)
        if account is not None:
            use_session(client, account.token)
        return client

    yield open_browser
    for client in clients:
        await client.aclose()


@dataclass
class Team:
    org: Organization
    owner: Account
    admin: Account
    member: Account
    viewer: Account
    outsider: Account  # the owner of another organization


@pytest.fixture
async def team(make_user: MakeUser, make_org: MakeOrg, make_member: MakeMember) -> Team:
    """ "engines" (Analytical Engines) with one account of each role, and an outsider who owns
    "looms"."""
    owner = await make_user("olive")
    org = await make_org(owner, slug="engines", name="Analytical Engines")
    admin = await make_member(org, "admin", "adam")
    member = await make_member(org, "member", "mia")
    viewer = await make_member(org, "viewer", "vic")
    outsider = await make_user("otto")
    await make_org(outsider, slug="looms", name="Jacquard Looms")
    return Team(org, owner, admin, member, viewer, outsider)


@pytest.fixture
async def serve(tmp_path: Path, database_server: DatabaseServer) -> AsyncIterator[Serve]:
    """`await serve(label, **options)`: a real `codepulse serve` on a clone of the run's database
    (SQLite or PostgreSQL), stopped at the end of the test; the options are `serving`'s."""
    async with AsyncExitStack() as stack:

        async def start(label: str, **options: Any) -> Server:
            url = await database_server.clone(label)
            return await stack.enter_async_context(serving(url, tmp_path, **options))

        yield start


def _have_chromium() -> bool:
    return Path(CHROMIUM).exists()


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    """Chromium from the system's packages (never Playwright's own download), headless; a test
    using it is skipped where there is none."""
    if not _have_chromium():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
def shots(database_server: DatabaseServer) -> Shots:
    return Shots.for_dialect(database_server.dialect)
