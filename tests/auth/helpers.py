"""Helpers for tests that need signed-in users."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

PASSWORD = "correct-horse-battery-staple-42"


@dataclass
class SignedIn:
    token: str
    user: dict[str, Any]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def register(
    client: httpx.AsyncClient,
    username: str = "ada",
    *,
    email: str | None = None,
    password: str = PASSWORD,
    name: str = "Ada Lovelace",
    headers: dict[str, str] | None = None,
) -> SignedIn:
    response = await client.post(
        "/api/v1/auth/register",
        json={"email": email or f"{username}@example.com", "password": password, "username": username, "name": name},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return SignedIn(body["token"], body["user"])


async def login(client: httpx.AsyncClient, login: str, password: str = PASSWORD) -> SignedIn:
    response = await client.post("/api/v1/auth/login", json={"login": login, "password": password})
    assert response.status_code == 200, response.text
    body = response.json()
    return SignedIn(body["token"], body["user"])
