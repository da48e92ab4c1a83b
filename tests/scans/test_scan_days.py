"""Scans per UTC day and status (`scan_days`, read by the superusers' statistics) stay equal to a
count of the scans themselves whatever writes them: queueing, running (again, for a retried
task), success with its engine calls and cache hits, failure, cancels (queued, running),
abandoned scans, and the deletion of a repository or an organization with their scans. A scan
counts on the UTC day it was queued, even when it finishes the next day."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.app import register_hooks
from codepulse.config import Settings
from codepulse.db import Database, ordered_percentiles
from codepulse.repositories.hooks import delete_org_repositories
from codepulse.scans import lifecycle
from codepulse.scans.days import DAY_SUMS, ScanDays
from codepulse.scans.models import Scan, ScanDayCount, ScanStatus, ScanTrigger
from codepulse.scans.results import PipelineResult
from codepulse.scans.service import rebuild_scan_days, start_scan
from tests import factories
from tests.databases import DatabaseServer
from tests.factories import Account, MakeOrg, MakeUser, RepositoryFactory, ScanFactory
from tests.helpers import FakeClock

API = "/api/v1"
# Two minutes before a UTC midnight: the scans queued now finish on the next day.
BEFORE_MIDNIGHT = datetime(2026, 11, 30, 23, 58, tzinfo=UTC)
Counts = dict[tuple[date, str], tuple[int, ...]]


@pytest.fixture(autouse=True)
def _now(clock: FakeClock) -> None:
    clock.now = BEFORE_MIDNIGHT


async def _recomputed(session: AsyncSession) -> Counts:
    """The counts from the scans, as the statistics define them."""
    counts: dict[tuple[date, str], list[int]] = {}
    rows = await session.execute(
        select(Scan.queued_at, Scan.status, Scan.engine_calls, Scan.cache_hits, Scan.duration_ms)
    )
    for queued_at, status, calls, hits, duration in rows.all():
        sums = counts.setdefault((queued_at.astimezone(UTC).date(), status), [0, 0, 0, 0])
        for index, value in enumerate((1, calls, hits, int(duration is not None))):
            sums[index] += value
    return {key: tuple(sums) for key, sums in counts.items()}


async def _stored(session: AsyncSession) -> Counts:
    """The stored counts, but rows left at zero (their scans all moved or went)."""
    table = ScanDayCount.__table__.c
    rows = await session.execute(select(table.day, table.status, *(table[name] for name in DAY_SUMS)))
    stored = {(day, status): tuple(int(value) for value in sums) for day, status, *sums in rows.all()}
    return {key: sums for key, sums in stored.items() if any(sums)}


async def assert_days_match(session: AsyncSession) -> Counts:
    stored = await _stored(session)
    assert stored == await _recomputed(session)
    return stored


def _result(engine_calls: int, cache_hits: int) -> PipelineResult:
    return PipelineResult(
        commit_sha="a" * 40,
        findings=[],
        files_total=engine_calls + cache_hits,
        files_scanned=engine_calls + cache_hits,
        bytes_scanned=100,
        skipped={},
        cache_hits=cache_hits,
        engine_versions={},
        engine_calls=engine_calls,
    )


class Scans:
    """Queue and drive scans in the test's session, as the API and the worker do."""

    def __init__(self, session: AsyncSession, settings: Settings, clock: FakeClock, owner: Account) -> None:
        self.session, self.settings, self.clock, self.owner = session, settings, clock, owner

    async def queue(self, repository: object, ref: str) -> uuid.UUID:
        started = await start_scan(
            self.session,
            self.settings,
            self.clock,
            repository,  # type: ignore[arg-type]
            ref=ref,
            trigger=ScanTrigger.MANUAL,
            requested_by=self.owner.model.id,
        )
        assert started.created
        return started.scan.id

    async def run(self, scan_id: uuid.UUID) -> None:
        assert await lifecycle.begin_run(self.session, scan_id, self.clock()) is not None


async def test_every_status_change_and_deletion_keeps_the_counts(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    clock: FakeClock,
    make_user: MakeUser,
    make_org: MakeOrg,
) -> None:
    owner = await make_user("ada")
    engines = await make_org(owner, slug="engines", plan="team")
    other = await make_org(owner, slug="other", plan="team")
    app, lib, tool = (RepositoryFactory.create(org=org) for org in (engines, engines, other))
    await session.flush()
    scans = Scans(session, settings, clock, owner)
    today = BEFORE_MIDNIGHT.date()

    succeeded, failed, canceled_queued = [await scans.queue(app, ref) for ref in ("r1", "r2", "r3")]
    running_canceled, abandoned, _removed_with_lib = [await scans.queue(lib, ref) for ref in ("r1", "r2", "r3")]
    removed_with_org = [await scans.queue(tool, ref) for ref in ("r1", "r2")]
    assert await assert_days_match(session) == {(today, "queued"): (8, 0, 0, 0)}

    clock.advance(minutes=3)  # past midnight: every scan still counts on the day it was queued
    for scan_id in (succeeded, failed, running_canceled, removed_with_org[0]):
        await scans.run(scan_id)
    await scans.run(succeeded)  # a retried task runs it again: still one running scan
    assert (await assert_days_match(session))[(today, "running")] == (4, 0, 0, 0)

    done = await lifecycle.complete_scan(session, succeeded, _result(engine_calls=7, cache_hits=3), clock())
    assert done is not None
    assert done.status == ScanStatus.SUCCEEDED.value
    assert await lifecycle.fail_scan(session, failed, "clone_failed", "No route to host.", clock())
    assert await lifecycle.abandon_scan(session, abandoned, "worker_lost", "Gone.", clock())  # while queued
    # Settled scans do not move again.
    assert await lifecycle.complete_scan(session, failed, _result(1, 1), clock()) is None
    assert not await lifecycle.fail_scan(session, succeeded, "late", "Late.", clock())
    await session.flush()
    for scan_id in (canceled_queued, running_canceled):  # queued: at once; running: nobody runs it
        response = await client.post(f"{API}/scans/{scan_id}/cancel", headers=owner.headers)
        assert (response.status_code, response.json()["status"]) == (200, "canceled"), response.text
    stored = await assert_days_match(session)
    assert stored == {
        (today, "succeeded"): (1, 7, 3, 1),
        (today, "failed"): (2, 0, 0, 2),
        (today, "canceled"): (2, 0, 0, 1),  # the one canceled while queued has no duration
        (today, "running"): (1, 0, 0, 0),
        (today, "queued"): (2, 0, 0, 0),
    }

    # A scan queued the next day counts there.
    tomorrow_scan = await scans.queue(app, "r4")
    await scans.run(tomorrow_scan)
    await lifecycle.complete_scan(session, tomorrow_scan, _result(engine_calls=0, cache_hits=5), clock())
    assert (await assert_days_match(session))[(today + timedelta(days=1), "succeeded")] == (1, 0, 5, 1)

    # Deleting a repository, then an organization, takes their scans out.
    response = await client.delete(f"{API}/repositories/{lib.id}", headers=owner.headers)
    assert response.status_code == 204, response.text
    assert (await assert_days_match(session))[(today, "queued")] == (1, 0, 0, 0)  # tool's r2
    response = await client.request(
        "DELETE", f"{API}/orgs/other", headers=owner.headers, json={"confirm_slug": "other"}
    )
    assert response.status_code == 204, response.text
    stored = await assert_days_match(session)
    assert sum(sums[0] for sums in stored.values()) == 4  # app's scans

    await rebuild_scan_days(session)  # a rebuild finds what was kept
    assert await assert_days_match(session) == stored


async def test_a_rebuild_counts_scans_written_around_the_repository(session: AsyncSession, make_org: MakeOrg) -> None:
    repository = RepositoryFactory.create(org=await make_org(slug="engines"))
    for queued_at, status, calls in (
        (BEFORE_MIDNIGHT, ScanStatus.SUCCEEDED, 4),
        (BEFORE_MIDNIGHT + timedelta(minutes=2), ScanStatus.SUCCEEDED, 5),
        (BEFORE_MIDNIGHT, ScanStatus.FAILED, 0),
    ):
        ScanFactory.create(repository=repository, queued_at=queued_at, status=status.value, engine_calls=calls)
    await session.flush()
    assert await _stored(session) == {}  # factories write around the repository
    await ScanDays(session).rebuild()
    assert await assert_days_match(session) == {
        (BEFORE_MIDNIGHT.date(), "succeeded"): (1, 4, 0, 1),
        (BEFORE_MIDNIGHT.date(), "failed"): (1, 0, 0, 1),
        (BEFORE_MIDNIGHT.date() + timedelta(days=1), "succeeded"): (1, 5, 0, 1),
    }


async def test_concurrent_writers_of_the_same_days_keep_the_counts(
    database_server: DatabaseServer, make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    """Real transactions racing on the same day's rows (on PostgreSQL, one connection each; on
    SQLite, writers queueing on the file lock): starts, successes, failures, cancels and an
    organization's deletion with its repository, none lost to another, none deadlocked."""
    register_hooks()  # the quota check and the deletion's hook, as the app registers them
    settings = make_settings(DATABASE_URL=await database_server.clone("scan_days"), SQLITE_BUSY_TIMEOUT_MS=120_000)
    database = Database.from_settings(settings)
    try:
        async with database.transaction() as session:
            factories.bind_session(session)
            owner = await factories.signed_in_user("ada")
            kept = await factories.organization(owner, slug="kept", plan="team")
            deleted = await factories.organization(owner, slug="gone", plan="team")
            repositories = [RepositoryFactory.create(org=org) for org in (kept, kept, deleted)]
            await session.flush()
            queue = Scans(session, settings, clock, owner).queue
            ids = [[await queue(repository, f"r{n}") for n in range(4)] for repository in repositories]
        clock.advance(minutes=5)

        async def drive(scan_id: uuid.UUID, outcome: int) -> None:
            # A scan of the deleted organization may be gone before either step: nothing to do then.
            async with database.transaction() as session:
                await lifecycle.begin_run(session, scan_id, clock())
            async with database.transaction() as session:
                if outcome == 0:
                    await lifecycle.complete_scan(session, scan_id, _result(2, 1), clock())
                elif outcome == 1:
                    await lifecycle.fail_scan(session, scan_id, "boom", "Boom.", clock())
                else:
                    await lifecycle.finish_canceled(session, scan_id, clock())

        async def delete_org() -> None:
            async with database.transaction() as session:
                await delete_org_repositories(session, deleted)

        drives = [drive(scan_id, n % 3) for row in ids for n, scan_id in enumerate(row)]
        await asyncio.gather(*drives, delete_org())
        async with database.session(write=False) as session:
            stored = await assert_days_match(session)
        assert sum(sums[0] for sums in stored.values()) == 8  # the kept organization's
    finally:
        await database.dispose()


async def test_duration_percentiles_take_the_kept_count_and_survive_a_wrong_one(
    session: AsyncSession, make_org: MakeOrg
) -> None:
    """The statistics pass the counted scans with a duration to `ordered_percentiles` instead of
    counting them again; a count above the rows' (counts gone wrong) is replaced by theirs."""
    repository = RepositoryFactory.create(org=await make_org(slug="engines"))
    for duration in (1000, 3000, 2000):
        ScanFactory.create(repository=repository, queued_at=BEFORE_MIDNIGHT, duration_ms=duration)
    await session.flush()
    window = (Scan.queued_at >= BEFORE_MIDNIGHT, Scan.queued_at < BEFORE_MIDNIGHT + timedelta(minutes=1))
    fractions = {"median": 0.5, "p95": 0.95}
    expected = (3, {"median": 2000.0, "p95": 2900.0})
    for count in (None, 3, 7):
        found = await ordered_percentiles(session, Scan.duration_ms, window, fractions=fractions, count=count)
        assert found[0] == expected[0]
        assert found[1] == pytest.approx(expected[1])
