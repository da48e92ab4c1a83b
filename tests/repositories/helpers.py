"""Helpers for repository tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from tests.auth.helpers import SignedIn
from tests.stubs.github import GitHubStub, StubUser

REPO_SCOPES = ("read:user", "user:email", "repo")


async def create_repository(
    client: httpx.AsyncClient, user: SignedIn, clone_url: str, org: str = "engines", **fields: Any
) -> dict[str, Any]:
    response = await client.post(
        f"/api/v1/orgs/{org}/repositories", headers=user.headers, json={"clone_url": clone_url, **fields}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def github_sign_in(
    client: httpx.AsyncClient, github: GitHubStub, login: str, scopes: Sequence[str] = REPO_SCOPES
) -> tuple[SignedIn, StubUser, str]:
    """A codepulse account created by GitHub sign-in (the CLI's device flow), so GitHub is linked
    with a token of `scopes`: (the signed-in account, its GitHub user, the GitHub token)."""
    gh_user = github.state.add_user(login)
    token = github.state.issue_token(gh_user, scopes)
    response = await client.post("/api/v1/auth/oauth/github/device", json={"access_token": token})
    assert response.status_code == 201, response.text
    body = response.json()
    return SignedIn(body["token"], {"id": body["user_id"]}), gh_user, token
