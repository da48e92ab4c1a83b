"""Usage fixtures.

- `ada`: a registered, signed-in user (time zone UTC).
- `client_with`: an app over the test's database with other settings, e.g. small sync limits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI

from codepulse.config import Settings
from tests.auth.helpers import SignedIn, register

ClientWith = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
async def ada(client: httpx.AsyncClient) -> SignedIn:
    return await register(client, "ada")


@pytest.fixture
def client_with(make_settings: Callable[..., Settings], app_factory: Callable[[Settings], FastAPI]) -> ClientWith:
    @asynccontextmanager
    async def build(**overrides: object) -> AsyncIterator[httpx.AsyncClient]:
        app = app_factory(make_settings(**overrides))
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
        ):
            yield client

    return build
