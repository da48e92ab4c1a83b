"""The bulk helpers the sync path relies on (codepulse.db), through the usage repository."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth.models import User
from codepulse.usage.repository import RECORD_COLUMNS, UsageRepository, parse_overrides

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _row(user_id: uuid.UUID, message_id: str, output: int = 5, at: datetime = NOW) -> tuple[object, ...]:
    values = {
        "user_id": user_id,
        "message_id": message_id,
        "source": "claude-code",
        "request_id": "",
        "model": "claude-haiku-4-5",
        "model_key": "claude-haiku-4-5",
        "occurred_at": at,
        "day": date(2026, 11, 23),
        "input_tokens": 1,
        "output_tokens": output,
        "cache_creation_5m_tokens": 0,
        "cache_creation_1h_tokens": 0,
        "cache_read_tokens": 0,
        "reasoning_tokens": 0,
        "speed": "standard",
        "session_id": None,
        "machine_id": None,
        "cost_nanousd": 26_000,
        "client_cost_nanousd": None,
        "priced": True,
        "pricing_version": "test",
        "created_at": NOW,
        "updated_at": NOW,
    }
    return tuple(values[name] for name in RECORD_COLUMNS)


@pytest.fixture
async def user_id(session: AsyncSession) -> uuid.UUID:
    user = User(email="bulk@example.com", username="bulk", name="Bulk")
    session.add(user)
    await session.flush()
    return user.id


async def test_insert_lookup_and_raise(session: AsyncSession, user_id: uuid.UUID) -> None:
    repo = UsageRepository(session)
    assert await repo.insert_records([_row(user_id, f"m{i}") for i in range(300)]) == 300
    keys = [("m7", "claude-code", ""), ("absent", "claude-code", ""), ("m250", "claude-code", "")]
    counts = await repo.stored_counts(user_id, keys)
    assert set(counts) == {keys[0], keys[2]}
    assert list(counts[keys[0]]) == [1, 5, 0, 0, 0, 0]
    # Only the rows whose counts grow are written and come back.
    raised = await repo.raise_records([_row(user_id, "m7", output=9), _row(user_id, "m8", output=5)])
    assert [tuple(row) for row in raised] == [("m7", "claude-code", "")]
    assert list((await repo.stored_counts(user_id, keys[:1]))[keys[0]]) == [1, 9, 0, 0, 0, 0]


async def test_inserting_a_known_record_fails_instead_of_counting_twice(
    session: AsyncSession, user_id: uuid.UUID
) -> None:
    repo = UsageRepository(session)
    await repo.insert_records([_row(user_id, "dup")])
    with pytest.raises(IntegrityError):
        async with session.begin_nested():
            await repo.insert_records([_row(user_id, "other"), _row(user_id, "dup")])
    assert set(await repo.stored_counts(user_id, [("other", "claude-code", "")])) == set()


async def test_naive_datetimes_are_refused(session: AsyncSession, user_id: uuid.UUID) -> None:
    repo = UsageRepository(session)
    with pytest.raises((ValueError, StatementError), match="naive datetime"):
        await repo.insert_records([_row(user_id, "naive", at=NOW.replace(tzinfo=None))])


async def _advisory_locks_held(session: AsyncSession) -> int:
    query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
    return int((await session.execute(text(query))).scalar_one())


async def test_new_records_are_inserted_all_or_nothing(session: AsyncSession, user_id: uuid.UUID) -> None:
    repo = UsageRepository(session)
    assert await repo.insert_new_records([_row(user_id, "dup")])
    assert not await repo.insert_new_records([_row(user_id, "other"), _row(user_id, "dup")])
    # Nothing of the refused rows is stored, and the transaction goes on.
    assert set(await repo.stored_counts(user_id, [("other", "claude-code", "")])) == set()
    assert await repo.insert_new_records([_row(user_id, "other")])
    assert len(await repo.stored_counts(user_id, [("dup", "claude-code", ""), ("other", "claude-code", "")])) == 2


async def test_the_sync_lock_is_taken_unless_a_sampled_key_is_stored(session: AsyncSession, user_id: uuid.UUID) -> None:
    repo = UsageRepository(session)
    postgresql = session.get_bind().dialect.name == "postgresql"
    await repo.insert_records([_row(user_id, "stored")])
    await repo.save_price_override("mystery-1", {"input": "2", "output": "8"}, None, NOW.replace(microsecond=123))
    sample = [("absent", "claude-code", ""), ("stored", "claude-code", "")]
    assert await repo.lock_unless_stored(user_id, sample) == (False, None)
    if postgresql:
        assert await _advisory_locks_held(session) == 0  # a replay does not wait for the lock
    locked, overrides = await repo.lock_unless_stored(user_id, sample[:1])
    assert locked
    if postgresql:
        assert await _advisory_locks_held(session) == 1
        # The overrides come with the lock, exactly as `price_overrides` reads them.
        assert overrides is not None
        assert parse_overrides(overrides) == await repo.price_overrides()
    else:
        assert overrides is None


async def test_a_batch_is_claimed_once(session: AsyncSession, user_id: uuid.UUID) -> None:
    repo = UsageRepository(session)
    assert await repo.claim_batch(user_id, "d1", NOW)
    assert not await repo.claim_batch(user_id, "d1", NOW)
    assert await repo.claim_batch(user_id, "d2", NOW)
    with pytest.raises((ValueError, StatementError), match="naive datetime"):
        await repo.claim_batch(user_id, "d3", NOW.replace(tzinfo=None))


async def test_differences_add_up_in_the_daily_aggregates(session: AsyncSession, user_id: uuid.UUID) -> None:
    repo = UsageRepository(session)
    day, next_day = date(2026, 11, 23), date(2026, 11, 24)
    # input, output, 5m, 1h, cache read, reasoning, cost, records, unpriced
    await repo.add_to_daily(
        [
            (user_id, day, "claude-code", "claude-haiku-4-5", 1, 2, 3, 4, 5, 6, 700, 1, 0),
            (user_id, next_day, "codex", "gpt-5", 10, 0, 0, 0, 0, 0, 0, 1, 1),
        ]
    )
    await repo.add_to_daily([(user_id, day, "claude-code", "claude-haiku-4-5", 1, 1, 1, 1, 1, 100, 50, 1, 0)])
    await repo.add_to_daily([])
    # Totals count every token but reasoning (part of the output).
    assert await repo.day_totals(user_id) == [(day, 20, 750), (next_day, 10, 0)]
    groups = await repo.sums_by([user_id], ["model"])
    by_model = {group[0]: sums for group, sums, _, _ in groups}
    assert by_model["claude-haiku-4-5"].values == (2, 3, 4, 5, 6, 106, 750, 2, 0)
    assert await repo.day_totals(uuid.uuid4()) == []
