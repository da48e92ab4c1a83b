"""Auth fixtures: a stub GitHub over real loopback HTTP, started once per run and reset per test.

- `github_stub`: the running `GitHubStub` with a fresh `GitHubStubState` (no users, no tokens);
  register users with `github_stub.state.add_user(...)`.
- `github_settings`: test settings pointing GITHUB_URL / GITHUB_API_URL / client id and secret
  at that stub.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from codepulse.config import Settings
from tests.stubs.github import GitHubStub, GitHubStubState


@pytest.fixture(scope="session")
async def github_stub_server() -> AsyncIterator[GitHubStub]:
    state = GitHubStubState(client_id="cp-test-github-client", client_secret="cp-test-github-secret")
    async with GitHubStub(state) as stub:
        yield stub


@pytest.fixture
def github_stub(github_stub_server: GitHubStub) -> GitHubStub:
    github_stub_server.reset()
    return github_stub_server


@pytest.fixture
def github_settings(github_stub: GitHubStub, make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(**github_stub.settings_overrides())
