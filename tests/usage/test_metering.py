"""Metered organization events: record_event is idempotent, count_events sums a window."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.orgs.models import Organization
from codepulse.usage.service import count_events, record_event

T0 = datetime(2026, 11, 1, tzinfo=UTC)


async def _org(session: AsyncSession, slug: str) -> uuid.UUID:
    org = Organization(name=slug.title(), slug=slug)
    session.add(org)
    await session.flush()
    return org.id


async def test_events_are_recorded_once_per_key_and_counted_per_window(session: AsyncSession) -> None:
    acme = await _org(session, "acme")
    globex = await _org(session, "globex")
    assert await record_event(session, acme, "scan", idempotency_key="scan:1", occurred_at=T0)
    # A retry of the same unit of work (same key) is not counted twice, whatever it says.
    assert not await record_event(session, acme, "scan", idempotency_key="scan:1", occurred_at=T0, quantity=5)
    assert await record_event(session, acme, "scan", idempotency_key="scan:2", occurred_at=T0 + timedelta(days=3))
    assert await record_event(session, acme, "scan", idempotency_key="scan:3", occurred_at=T0 + timedelta(days=9),
                              quantity=4)  # fmt: skip
    assert await record_event(session, acme, "seat", idempotency_key="seat:1", occurred_at=T0)
    # Keys are per organization.
    assert await record_event(session, globex, "scan", idempotency_key="scan:1", occurred_at=T0)

    assert await count_events(session, acme, "scan", since=T0) == 6
    assert await count_events(session, acme, "scan", since=T0 + timedelta(days=1)) == 5
    assert await count_events(session, acme, "scan", since=T0 + timedelta(days=10)) == 0
    assert await count_events(session, acme, "seat", since=T0) == 1
    assert await count_events(session, globex, "scan", since=T0) == 1


async def test_record_event_refuses_bad_arguments(session: AsyncSession) -> None:
    acme = await _org(session, "acme")
    with pytest.raises(ValueError, match="kind"):
        await record_event(session, acme, "", idempotency_key="k", occurred_at=T0)
    with pytest.raises(ValueError, match="idempotency_key"):
        await record_event(session, acme, "scan", idempotency_key="", occurred_at=T0)
    with pytest.raises(ValueError, match="quantity"):
        await record_event(session, acme, "scan", idempotency_key="k", occurred_at=T0, quantity=-1)
