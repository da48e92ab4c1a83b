"""The demo's AI-assistant usage: what the CLI would have synced, made up deterministically.

Each user works on most days with two or three tools (several models each), with a gap of two
days every one to three weeks (so streaks end and start again); one in three users works lighter
on weekends. Everything about a (user, day) -- whether it is active, its records, their message
ids, timestamps and token counts -- comes from a generator seeded with the two, so a later run
sends the very same records (the sync's dedup keeps them once) and only adds the days that are
new. The records go through the usage slice's own sync, as a CLI's batch would.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from codepulse import __version__
from codepulse.auth import service as auth_service
from codepulse.auth.service import User
from codepulse.clock import ClockFunc
from codepulse.config import Settings
from codepulse.db import Database
from codepulse.seed.people import SeedError
from codepulse.usage.ingest import SyncLimits, parse_batch
from codepulse.usage.sync import SyncService

MACHINE_ID = "codepulse-seed"
# Records per sync request, under the default SYNC_MAX_RECORDS.
BATCH_RECORDS = 1000


@dataclass(frozen=True)
class Tool:
    source: str
    models: tuple[str, ...]  # as the tool reports them; the first is the favourite
    with_request_id: bool  # Claude Code logs one per response


TOOLS = (
    Tool("claude-code", ("claude-sonnet-4-5-20250929", "claude-opus-4-1-20250805", "claude-haiku-4-5-20251001"), True),
    Tool("codex", ("gpt-5-codex", "gpt-5.1-codex", "gpt-5"), False),
    Tool("gemini-cli", ("gemini-2.5-pro", "gemini-2.5-flash"), False),
    Tool("opencode", ("anthropic/claude-sonnet-4-5", "openai/gpt-5-mini"), False),
    Tool("cline", ("claude-sonnet-4-5-20250929", "gemini-2.5-pro"), False),
)


@dataclass
class UsageTotals:
    records: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0


def usage_days(today: date, days: int) -> list[date]:
    """The `days` days ending yesterday: no record is in the future or changes during today."""
    return [today - timedelta(days=n) for n in range(days, 0, -1)]


def _is_active(index: int, day: date, rng: random.Random) -> bool:
    cycle = 10 + 3 * (index % 4)  # a two-day gap every 10, 13, 16 or 19 days, per user
    if (day.toordinal() + 5 * index) % cycle < 2:
        return False
    return not (index % 3 == 2 and day.weekday() >= 5 and rng.random() < 0.6)


def _tokens(tool: Tool, rng: random.Random) -> dict[str, int]:
    """One response's counts, shaped like the tool's logs (as the provider bills them)."""
    if tool.source in ("claude-code", "cline", "opencode"):
        output = rng.randint(120, 2600)
        return {
            "input_tokens": rng.randint(4, 400),
            "output_tokens": output,
            "cache_creation_5m_tokens": rng.randint(400, 6000) if rng.random() < 0.35 else 0,
            "cache_read_tokens": rng.randint(8000, 90_000),
        }
    output = rng.randint(150, 3800)
    return {
        "input_tokens": rng.randint(800, 24_000),
        "output_tokens": output,
        "cache_read_tokens": rng.randint(0, 60_000),
        "reasoning_tokens": int(output * rng.uniform(0.2, 0.6)),
    }


def day_records(index: int, username: str, day: date) -> list[dict[str, object]]:
    """The records of one user's day (none when inactive), as the native sync shape has them."""
    rng = random.Random(f"{username}:{day.isoformat()}")  # noqa: S311 - reproducible, not secret
    if not _is_active(index, day, rng):
        return []
    tools = [TOOLS[(index + offset) % len(TOOLS)] for offset in range(2 + index % 2)]
    count = rng.randint(3, 10) * (1 + index % 3)
    start = datetime.combine(day, time(8, 0), tzinfo=UTC) + timedelta(minutes=rng.randint(0, 90))
    step = timedelta(minutes=600 / count)  # spread over a working day
    records: list[dict[str, object]] = []
    for n in range(count):
        tool = tools[0] if rng.random() < 0.6 else rng.choice(tools)
        model = tool.models[0] if rng.random() < 0.7 else rng.choice(tool.models)
        stamp = start + step * n + timedelta(seconds=rng.randint(0, 59))
        message_id = f"demo-{username}-{day:%Y%m%d}-{n:03d}"
        record: dict[str, object] = {
            "source": tool.source,
            "message_id": message_id,
            "model": model,
            "timestamp": stamp.isoformat(),
            "session_id": f"demo-{username}-{day:%Y%m%d}-{tool.source}",
            **_tokens(tool, rng),
        }
        if tool.with_request_id:
            record["request_id"] = f"req-{message_id}"
        records.append(record)
    return records


def user_records(index: int, username: str, days: Sequence[date]) -> list[dict[str, object]]:
    return [record for day in days for record in day_records(index, username, day)]


def _batches(records: list[dict[str, object]]) -> Iterator[bytes]:
    for start in range(0, len(records), BATCH_RECORDS):
        body = {
            "client": {"name": "codepulse-seed", "version": __version__},
            "machine_id": MACHINE_ID,
            "records": records[start : start + BATCH_RECORDS],
        }
        yield json.dumps(body, separators=(",", ":")).encode()


async def sync_usage(
    database: Database, settings: Settings, clock: ClockFunc, user: User, records: list[dict[str, object]]
) -> UsageTotals:
    """Send the records through the sync as the CLI would (a transaction per batch, as a request)."""
    totals = UsageTotals(records=len(records))
    limits = SyncLimits.of(settings)
    for body in _batches(records):
        batch = parse_batch(body, limits, clock())
        if batch.rejected:  # the generator's bug, not the operator's
            raise SeedError(f"the sync rejected demo records: {batch.rejected[0].model_dump()}")
        async with database.transaction() as session:
            # Read in the sync's transaction, as a request's authentication does: on PostgreSQL the
            # sync's driver-level statements (a SAVEPOINT) need the transaction this read begins.
            current = await auth_service.user_by_id(session, user.id)
            if current is None:  # pragma: no cover - made in this run
                raise SeedError(f"the demo user {user.username} disappeared while seeding")
            result = await SyncService(session, clock).sync(current, batch)
        totals.inserted += result.inserted
        totals.updated += result.updated
        totals.unchanged += result.unchanged
    return totals
