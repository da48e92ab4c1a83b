"""Repositories fixtures: an app whose clone URL checks resolve names through a fake resolver (no
network), pointed at the stub GitHub (real loopback HTTP) of tests/auth.

- `resolver`: the `FakeResolver` the app uses; `resolver.names["host"] = ["1.2.3.4"]` adds a name.
- `make_client(**settings)`: an httpx client on an app built with those settings overrides;
  `real_dns=True` keeps the system resolver (getaddrinfo) instead of the fake one.
- `client`: `make_client()` with the defaults.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any, Protocol

import httpx
import pytest
from fastapi import FastAPI

from codepulse.config import Settings
from codepulse.repositories.dependencies import host_resolver
from tests.auth.conftest import github_settings, github_stub, github_stub_server  # noqa: F401 - shared fixtures
from tests.stubs.github import GitHubStub

# Public addresses (documentation ranges are not public, so real ones of the providers are used).
PUBLIC_NAMES: dict[str, list[str]] = {
    "github.com": ["140.82.121.4"],
    "ssh.github.com": ["140.82.121.36"],
    "gitlab.com": ["172.65.251.78", "2606:4700:90:0:f22e:fbec:5bed:a9b9"],
    "bitbucket.org": ["104.192.141.1"],
    "git.example.org": ["93.184.215.14"],
}


class FakeResolver:
    def __init__(self) -> None:
        self.names: dict[str, list[str]] = {name: list(addresses) for name, addresses in PUBLIC_NAMES.items()}
        self.calls: list[str] = []

    async def __call__(self, host: str) -> list[str]:
        self.calls.append(host)
        if host not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.names[host]


class MakeClient(Protocol):
    async def __call__(self, *, real_dns: bool = False, **overrides: Any) -> httpx.AsyncClient: ...


@pytest.fixture
def resolver() -> FakeResolver:
    return FakeResolver()


@pytest.fixture
async def make_client(
    github_stub: GitHubStub,  # noqa: F811 - the fixture imported above
    make_settings: Callable[..., Settings],
    app_factory: Callable[[Settings], FastAPI],
    resolver: FakeResolver,
) -> AsyncIterator[MakeClient]:
    async with AsyncExitStack() as stack:

        async def make(*, real_dns: bool = False, **overrides: Any) -> httpx.AsyncClient:
            app = app_factory(make_settings(**(github_stub.settings_overrides() | overrides)))
            if not real_dns:
                app.dependency_overrides[host_resolver] = lambda: resolver
            await stack.enter_async_context(app.router.lifespan_context(app))
            return await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
            )

        yield make


@pytest.fixture
async def client(make_client: MakeClient) -> httpx.AsyncClient:
    return await make_client()
