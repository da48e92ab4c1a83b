"""`GET /api/v1/admin/stats`: platform figures checked against data built on both sides of the
range's boundaries (the first UTC day's midnight, 7 and 30 days before now)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.scans.models import ScanPhase, ScanStatus
from codepulse.scans.service import rebuild_scan_days
from codepulse.tasks import Task, enqueue
from codepulse.usage.models import UsageDaily, UsageSyncBatch
from codepulse.usage.service import rebuild_platform_sums
from tests.factories import (
    Account,
    AuthSessionFactory,
    FindingFactory,
    JobRunFactory,
    MakeOrg,
    MakeUser,
    RepositoryFactory,
    ScanFactory,
    UserFactory,
)
from tests.helpers import FakeClock

STATS = "/api/v1/admin/stats"


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def _usage(user_id: Any, day: date, model: str, *, records: int, tokens: int, cost: int, unpriced: int) -> UsageDaily:
    return UsageDaily(
        user_id=user_id,
        day=day,
        source="claude-code",
        model=model,
        input_tokens=tokens,
        output_tokens=10,
        cache_creation_5m_tokens=1,
        cache_creation_1h_tokens=2,
        cache_read_tokens=3,
        reasoning_tokens=4,  # part of output: not counted again
        cost_nanousd=cost,
        records=records,
        unpriced_records=unpriced,
    )


class World:
    """The data of the tests, around `now` and the 7-day range's first midnight `start`."""

    def __init__(self, admin: Account, now: datetime) -> None:
        self.admin = admin
        self.now = now
        self.today = now.date()
        self.first_day = self.today - timedelta(days=6)
        self.start = _midnight(self.first_day)


async def _build(session: AsyncSession, clock: FakeClock, make_user: MakeUser, make_org: MakeOrg) -> World:
    now = clock()
    admin = await make_user("root", is_superuser=True)  # created today, its session used now
    world = World(admin, now)
    start = world.start
    # Accounts: created just before and at the range's start; active by session or by sync.
    old = UserFactory.create(username="old", created_at=start - timedelta(seconds=1))
    edge = UserFactory.create(username="edge", created_at=start)
    gone = UserFactory.create(username="gone", created_at=now - timedelta(days=40), disabled_at=now)
    await session.flush()
    AuthSessionFactory.create(user=old, created_at=now - timedelta(days=7, minutes=1))  # active in 30 days only
    AuthSessionFactory.create(user=gone, created_at=now - timedelta(days=30, minutes=1))  # not active
    session.add_all(
        [
            UsageSyncBatch(user_id=edge.id, digest="a" * 64, created_at=now - timedelta(days=3)),
            UsageSyncBatch(user_id=admin.model.id, digest="b" * 64, created_at=start - timedelta(seconds=1)),
            UsageSyncBatch(user_id=admin.model.id, digest="c" * 64, created_at=start),
        ]
    )
    # Organizations: the default plan, a team, a deleted one.
    org = await make_org(admin, slug="engines")
    await make_org(slug="teamco", plan="team")
    await make_org(slug="deleted", plan="pro", deleted_at=now)
    repository = RepositoryFactory.create(org=org)
    RepositoryFactory.create(org=org, archived=True)
    await session.flush()
    # Scans: one just before the range, three finished in it, one queued now.
    for queued_at, status, duration, calls, hits in (
        (start - timedelta(seconds=1), ScanStatus.SUCCEEDED, 100_000, 1000, 1000),
        (start, ScanStatus.SUCCEEDED, 1000, 10, 5),
        (start + timedelta(days=1), ScanStatus.FAILED, 3000, 2, 0),
        (start + timedelta(days=1, hours=1), ScanStatus.SUCCEEDED, 2000, 3, 7),
    ):
        ScanFactory.create(
            repository=repository,
            queued_at=queued_at,
            status=status.value,
            duration_ms=duration,
            engine_calls=calls,
            cache_hits=hits,
        )
    ScanFactory.create(
        repository=repository,
        queued_at=now,
        status=ScanStatus.QUEUED.value,
        phase=ScanPhase.QUEUED.value,
        started_at=None,
        finished_at=None,
        duration_ms=None,
    )
    # Findings: unresolved ones (open, in the history) counted, resolved and dismissed ones not.
    for finding_status, severity in (
        ("open", "critical"),
        ("open", "critical"),
        ("in_history", "high"),
        ("open", "info"),
        ("fixed", "critical"),
        ("ignored", "low"),
        ("false_positive", "medium"),
    ):
        FindingFactory.create(repository=repository, status=finding_status, severity=severity)
    # Usage: the day before the range, its first day, today.
    session.add_all(
        [
            _usage(
                edge.id, world.first_day - timedelta(days=1), "claude-sonnet-4", records=9, tokens=9, cost=9, unpriced=0
            ),
            _usage(edge.id, world.first_day, "claude-sonnet-4", records=3, tokens=100, cost=2_000_000_000, unpriced=0),
            _usage(edge.id, world.today, "mystery-model", records=5, tokens=50, cost=0, unpriced=5),
            _usage(
                admin.model.id, world.today, "claude-sonnet-4", records=1, tokens=1000, cost=500_000_001, unpriced=0
            ),
            _usage(admin.model.id, world.today, "other-model", records=2, tokens=7, cost=1, unpriced=1),
            _usage(
                admin.model.id,
                world.first_day - timedelta(days=1),
                "old-model",
                records=4,
                tokens=1,
                cost=0,
                unpriced=4,
            ),
        ]
    )
    # Tasks: due and not yet due queued ones, running, dead; finished ones are not counted.
    for kind, task_status, run_at in (
        ("a.kind", "queued", now - timedelta(seconds=60)),
        ("a.kind", "queued", now + timedelta(hours=1)),
        ("a.kind", "succeeded", now - timedelta(days=1)),
        ("b.kind", "running", now - timedelta(seconds=5)),
        ("b.kind", "dead", now - timedelta(days=2)),
        ("b.kind", "dead", now - timedelta(days=3)),
    ):
        task = await enqueue(session, kind, {}, now=now)
        await session.execute(update(Task).where(Task.id == task.id).values(status=task_status, run_at=run_at))
    # Scheduler: a job that failed and ran fine since, one whose last run failed, one never failed.
    for job_id, run_status, ago, error in (
        ("x.job", "succeeded", timedelta(hours=2), None),
        ("x.job", "failed", timedelta(hours=1), "RuntimeError: boom"),
        ("x.job", "succeeded", timedelta(minutes=10), None),
        ("y.job", "failed", timedelta(minutes=5), "ValueError: bad"),
        ("z.job", "succeeded", timedelta(days=1), None),
    ):
        JobRunFactory.create(job_id=job_id, status=run_status, scheduled_for=now - ago, error=error)
    await session.flush()
    # The rows above were written around the slices' repositories, which keep the platform's
    # usage sums and scans per day: recomputed from them, as after a bulk load.
    await rebuild_platform_sums(session)
    await rebuild_scan_days(session)
    return world


def _series(body: dict[str, Any], key: str) -> dict[str, Any]:
    return {entry["day"]: entry for entry in body[key]}


async def test_figures_of_a_7_day_range(
    client: httpx.AsyncClient, session: AsyncSession, clock: FakeClock, make_user: MakeUser, make_org: MakeOrg
) -> None:
    world = await _build(session, clock, make_user, make_org)
    response = await client.get(STATS, params={"range": "7d"}, headers=world.admin.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    days = [(world.first_day + timedelta(days=n)).isoformat() for n in range(7)]
    first, second, today = days[0], days[1], days[-1]
    assert (body["range"], body["first_day"], body["last_day"]) == ("7d", first, today)

    users = body["users"]
    assert (users["total"], users["disabled"], users["active_7d"], users["active_30d"]) == (4, 1, 2, 3)
    assert [entry["day"] for entry in users["new_per_day"]] == days
    assert {entry["day"]: entry["count"] for entry in users["new_per_day"] if entry["count"]} == {first: 1, today: 1}
    assert users["new"] == 2

    assert body["organizations"] == {"total": 2, "by_plan": {"free": 1, "team": 1}}
    assert body["repositories"] == {"connected": 1, "archived": 1}

    scans = body["scans"]
    assert [entry["day"] for entry in scans["per_day"]] == days
    per_day = {
        day: {k: v for k, v in entry.items() if k != "day" and v} for day, entry in _series(scans, "per_day").items()
    }
    assert {day: counts for day, counts in per_day.items() if counts} == {
        first: {"succeeded": 1},
        second: {"failed": 1, "succeeded": 1},
        today: {"queued": 1},
    }
    assert (scans["total"], scans["finished"]) == (4, 3)
    assert scans["median_duration_ms"] == 2000
    assert abs(scans["p95_duration_ms"] - 2900) < 1e-6  # 2000 + (3000 - 2000) * 0.9
    assert (scans["engine_calls"], scans["cache_hits"]) == (15, 12)

    assert body["findings"] == {
        "open_total": 4,
        "open_by_severity": {"critical": 2, "high": 1, "medium": 0, "low": 0, "info": 1},
    }

    usage = body["usage"]
    series = _series(usage, "per_day")
    assert list(series) == days
    assert series[first] == {
        "day": first, "syncs": 1, "records": 3, "tokens": 116, "cost_usd": "2.000000000", "unpriced_records": 0,
    }  # fmt: skip
    assert series[today] == {
        "day": today, "syncs": 0, "records": 8, "tokens": 1105, "cost_usd": "0.500000002", "unpriced_records": 6,
    }  # fmt: skip
    syncs = {day: entry["syncs"] for day, entry in series.items() if entry["syncs"]}
    assert syncs == {first: 1, (world.now - timedelta(days=3)).date().isoformat(): 1}
    assert (usage["syncs"], usage["records"], usage["unpriced_records"]) == (2, 11, 6)
    assert usage["tokens"] == 116 + 1105
    assert usage["cost_usd"] == "2.500000002"
    assert usage["unpriced_models"] == [
        {"model": "mystery-model", "records": 5},
        {"model": "other-model", "records": 1},
    ]

    tasks = body["tasks"]
    assert tasks["by_kind"] == [
        {"kind": "a.kind", "queued": 2, "running": 0, "dead": 0},
        {"kind": "b.kind", "queued": 0, "running": 1, "dead": 2},
    ]
    assert (tasks["queued"], tasks["running"], tasks["dead"]) == (2, 1, 2)
    assert tasks["oldest_queued_age_seconds"] == 60

    jobs = {job["job_id"]: job for job in body["scheduler"]}
    assert list(jobs) == ["x.job", "y.job", "z.job"]
    assert (jobs["x.job"]["last_status"], jobs["x.job"]["last_error"]) == ("succeeded", "RuntimeError: boom")
    assert _same_instant(jobs["x.job"]["last_run_at"], world.now - timedelta(minutes=10))
    assert _same_instant(jobs["x.job"]["last_failure_at"], world.now - timedelta(hours=1))
    assert (jobs["y.job"]["last_status"], jobs["y.job"]["last_error"]) == ("failed", "ValueError: bad")
    assert jobs["y.job"]["last_run_at"] == jobs["y.job"]["last_failure_at"]
    assert (jobs["z.job"]["last_failure_at"], jobs["z.job"]["last_error"]) == (None, None)


def _same_instant(rendered: str, expected: datetime) -> bool:
    return datetime.fromisoformat(rendered.replace("Z", "+00:00")) == expected


async def test_a_30_day_range_takes_in_what_the_7_day_one_left_out(
    client: httpx.AsyncClient, session: AsyncSession, clock: FakeClock, make_user: MakeUser, make_org: MakeOrg
) -> None:
    world = await _build(session, clock, make_user, make_org)
    body = (await client.get(STATS, params={"range": "30d"}, headers=world.admin.headers)).json()
    before = (world.first_day - timedelta(days=1)).isoformat()
    assert len(body["users"]["new_per_day"]) == 30
    assert body["first_day"] == (world.today - timedelta(days=29)).isoformat()
    assert body["users"]["new"] == 3  # and the account created a second before the 7-day range
    assert _series(body["users"], "new_per_day")[before]["count"] == 1
    assert (body["scans"]["total"], body["scans"]["finished"]) == (5, 4)
    assert (body["scans"]["engine_calls"], body["scans"]["cache_hits"]) == (1015, 1012)
    assert body["scans"]["median_duration_ms"] == 2500
    usage = body["usage"]
    assert (usage["syncs"], usage["records"], usage["unpriced_records"]) == (3, 24, 10)
    assert _series(usage, "per_day")[before]["records"] == 13
    assert usage["unpriced_models"] == [
        {"model": "mystery-model", "records": 5},
        {"model": "old-model", "records": 4},
        {"model": "other-model", "records": 1},
    ]
    # Figures that do not depend on the range.
    assert (body["users"]["active_7d"], body["users"]["active_30d"]) == (2, 3)


async def test_an_empty_platform_answers_zeros(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    admin = await make_user("root", is_superuser=True)
    body = (await client.get(STATS, headers=admin.headers)).json()
    assert body["range"] == "30d"
    assert (body["scans"]["total"], body["scans"]["median_duration_ms"], body["scans"]["p95_duration_ms"]) == (
        0,
        None,
        None,
    )
    assert body["usage"]["cost_usd"] == "0.000000000"
    assert len(body["usage"]["per_day"]) == 30
    assert body["tasks"]["oldest_queued_age_seconds"] is None
    assert body["findings"]["open_total"] == 0


async def test_an_unknown_range_is_a_422_listing_the_accepted_ones(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    admin = await make_user("root", is_superuser=True)
    response = await client.get(STATS, params={"range": "all"}, headers=admin.headers)
    assert response.status_code == 422
    assert "'7d', '30d', '90d' or '365d'" in response.text


async def test_non_superusers_are_refused(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    user = await make_user("ada")
    response = await client.get(STATS, headers=user.headers)
    assert (response.status_code, response.json()["code"]) == (403, "superuser_required")
