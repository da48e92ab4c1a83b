"""Metering: billable organization events other domains record (a scan run, ...), and their
counts for billing. Called inside the caller's unit of work; nothing here commits."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.clock import utcnow
from codepulse.usage.repository import UsageRepository


async def record_event(
    session: AsyncSession,
    org_id: uuid.UUID,
    kind: str,
    *,
    idempotency_key: str,
    occurred_at: datetime,
    quantity: int = 1,
) -> bool:
    """Meter a billable event of an organization (`kind` such as "scan"), in the caller's
    transaction. Idempotent: the same (org, idempotency_key) is recorded once; True when this call
    recorded it, False when it was already there (a retry)."""
    if not kind or len(kind) > 32:
        raise ValueError("kind must be 1 to 32 characters")
    if not idempotency_key or len(idempotency_key) > 200:
        raise ValueError("idempotency_key must be 1 to 200 characters")
    if quantity < 0:
        raise ValueError("quantity cannot be negative")
    return await UsageRepository(session).insert_event(
        {
            "id": uuid.uuid4(),
            "org_id": org_id,
            "kind": kind,
            "quantity": quantity,
            "occurred_at": occurred_at,
            "idempotency_key": idempotency_key,
            "created_at": utcnow(),
        }
    )


async def count_events(session: AsyncSession, org_id: uuid.UUID, kind: str, since: datetime) -> int:
    """Total quantity of `kind` events of an organization since `since` (an index range scan)."""
    return await UsageRepository(session).sum_events(org_id, kind, since)
