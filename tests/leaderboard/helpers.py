"""Builders of usage_daily rows for leaderboard tests, and reads of the boards."""

from __future__ import annotations

from datetime import date
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.usage.models import UsageDaily
from tests.factories import Account


async def usage(
    session: AsyncSession,
    who: Account,
    day: date,
    *,
    input: int = 0,
    output: int = 1_000,
    cache_write: int = 0,
    cache_read: int = 0,
    cost: int = 1_000_000,
    source: str = "claude-code",
    model: str = "claude-sonnet-4-5",
) -> None:
    """One usage_daily row of `who` on the local date `day` (cost in nano-dollars)."""
    session.add(
        UsageDaily(
            user_id=who.model.id,
            day=day,
            source=source,
            model=model,
            input_tokens=input,
            output_tokens=output,
            cache_creation_5m_tokens=cache_write,
            cache_creation_1h_tokens=0,
            cache_read_tokens=cache_read,
            reasoning_tokens=0,
            cost_nanousd=cost,
            records=1,
            unpriced_records=0,
        )
    )
    await session.flush()


async def board(
    client: httpx.AsyncClient, path: str = "/api/v1/leaderboard", who: Account | None = None, **params: Any
) -> dict[str, Any]:
    response = await client.get(path, params=params, headers=who.headers if who else {})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def names(body: dict[str, Any]) -> list[str]:
    return [entry["user"]["username"] for entry in body["items"]]


def ranks(body: dict[str, Any]) -> list[tuple[str, int, Any]]:
    return [(entry["user"]["username"], entry["rank"], entry["value"]) for entry in body["items"]]
