"""Queries on the scans domain's tables, and nothing else."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.db import rowcount, rows_by_keys, upsert
from codepulse.pagination import SortKey
from codepulse.scans.cache import CacheKey
from codepulse.scans.days import COUNTED, COUNTED_COLUMNS, ScanDays
from codepulse.scans.models import (
    ACTIVE_STATUSES,
    UNRESOLVED_STATUSES,
    Finding,
    FindingStatus,
    Scan,
    ScanFinding,
    ScanPhase,
    ScanResultCache,
    ScanStatus,
    ScanTrigger,
    zero_counts,
)
from codepulse.scans.tracking import Tracked

# Keys per statement in bulk lookups: bounds bind parameters on SQLite and statement size.
CHUNK = 500

T = TypeVar("T")


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _running(*, unless_canceled: bool) -> list[ColumnElement[bool]]:
    conditions = [Scan.status == ScanStatus.RUNNING.value]
    if unless_canceled:
        conditions.append(Scan.cancel_requested_at.is_(None))
    return conditions


class ScanRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.days = ScanDays(session)

    # --- scans ---------------------------------------------------------------------------

    async def get_scan(self, scan_id: uuid.UUID) -> Scan | None:
        return await self.session.get(Scan, scan_id)

    async def refresh_scan(self, scan_id: uuid.UUID) -> Scan | None:
        """The scan as the database has it now (not the session's cached copy)."""
        return await self.session.scalar(
            select(Scan).where(Scan.id == scan_id).execution_options(populate_existing=True)
        )

    async def active_scan(self, repository_id: uuid.UUID, ref_key: str) -> Scan | None:
        return await self.session.scalar(
            select(Scan)
            .where(Scan.repository_id == repository_id, Scan.ref_key == ref_key, Scan.status.in_(ACTIVE_STATUSES))
            .execution_options(populate_existing=True)
        )

    async def add_active_scan(self, scan: Scan) -> bool:
        """Insert a queued scan unless another active one holds its (repository, ref): False then.
        In a savepoint, so the losing insert leaves the caller's transaction usable."""
        try:
            async with self.session.begin_nested():
                self.session.add(scan)
                await self.session.flush()
                await self.days.count(added=[tuple(getattr(scan, name) for name in COUNTED)])
        except IntegrityError:
            if scan in self.session:
                self.session.expunge(scan)
            return False
        return True

    def scans_query(
        self,
        *,
        org_id: uuid.UUID | None = None,
        repository_id: uuid.UUID | None = None,
        statuses: Collection[ScanStatus] = (),
    ) -> Select[Scan]:
        query = select(Scan)
        if org_id is not None:
            query = query.where(Scan.org_id == org_id)
        if repository_id is not None:
            query = query.where(Scan.repository_id == repository_id)
        if statuses:
            query = query.where(Scan.status.in_([status.value for status in statuses]))
        return query

    @staticmethod
    def scan_order() -> list[SortKey]:
        """Most recently queued first."""
        return [SortKey(Scan.queued_at, "desc")]

    async def _update_scan(self, scan_id: uuid.UUID, conditions: Iterable[ColumnElement[bool]], **values: Any) -> bool:
        """Every write of an existing scan: set `values` when the scan meets `conditions`; True
        when it did. A write of a counted column (status, outcome) moves the scan's day counts in
        the same transaction: the scan's row is locked and read first (PostgreSQL checks the
        conditions again on a row it waited for, as the UPDATE would), then the counts change."""
        statement = update(Scan).where(Scan.id == scan_id).execution_options(synchronize_session=False)
        if not values.keys() & set(COUNTED):
            return rowcount(await self.session.execute(statement.where(*conditions).values(**values))) == 1
        before = (
            await self.session.execute(
                select(*COUNTED_COLUMNS).where(Scan.id == scan_id, *conditions).with_for_update()
            )
        ).first()
        if before is None:
            return False
        await self.session.execute(statement.values(**values))
        after = tuple(values.get(name, value) for name, value in zip(COUNTED, before, strict=True))
        await self.days.count(added=[after], removed=[tuple(before)])
        return True

    async def cancel_if_queued(self, scan_id: uuid.UUID, now: datetime) -> bool:
        return await self._update_scan(
            scan_id,
            [Scan.status == ScanStatus.QUEUED.value],
            status=ScanStatus.CANCELED.value,
            cancel_requested_at=now,
            finished_at=now,
            updated_at=now,
        )

    async def request_cancel(self, scan_id: uuid.UUID, now: datetime) -> bool:
        return await self._update_scan(
            scan_id,
            [Scan.status == ScanStatus.RUNNING.value, Scan.cancel_requested_at.is_(None)],
            cancel_requested_at=now,
            updated_at=now,
        )

    async def start(self, scan_id: uuid.UUID, now: datetime, phase: str) -> bool:
        """queued -> running (or running again, for a retried task), progress reset; False when the
        scan is no longer active or a cancel was requested."""
        return await self._update_scan(
            scan_id,
            [Scan.status.in_(ACTIVE_STATUSES), Scan.cancel_requested_at.is_(None)],
            status=ScanStatus.RUNNING.value,
            started_at=now,
            phase=phase,
            files_total=0,
            files_done=0,
            bytes_total=0,
            bytes_done=0,
            updated_at=now,
        )

    async def write_progress(self, scan_id: uuid.UUID, values: Mapping[str, Any]) -> bool:
        return await self._update_scan(scan_id, [Scan.status == ScanStatus.RUNNING.value], **values)

    async def finish_running(self, scan_id: uuid.UUID, values: Mapping[str, Any], *, unless_canceled: bool) -> bool:
        """Write the outcome of a running scan; with `unless_canceled`, only when no cancel was asked."""
        return await self._update_scan(scan_id, _running(unless_canceled=unless_canceled), **values)

    async def lock_running(self, scan_id: uuid.UUID) -> bool:
        """Whether the scan is running with no cancel asked; its row then stays locked until the
        transaction ends (PostgreSQL), so a cancel request waits for what this transaction does."""
        found = await self.session.execute(
            select(Scan.id).where(Scan.id == scan_id, *_running(unless_canceled=True)).with_for_update()
        )
        return found.first() is not None

    async def finish_active(self, scan_id: uuid.UUID, values: Mapping[str, Any]) -> bool:
        """Write the outcome of a queued or running scan (one abandoned by its task)."""
        return await self._update_scan(scan_id, [Scan.status.in_(ACTIVE_STATUSES)], **values)

    async def requeue_failed(self, scan_id: uuid.UUID, error_codes: Collection[str], now: datetime) -> bool:
        """A scan that failed with one of `error_codes` queued again as a fresh queued scan has it
        (no progress, outcome or error; its `queued_at`, and so its day, stay). False when it is
        not such a scan. Raises IntegrityError when another scan of its repository and ref is
        active (the one-active-scan index): call it in a savepoint."""
        return await self._update_scan(
            scan_id,
            [Scan.status == ScanStatus.FAILED.value, Scan.error_code.in_(list(error_codes))],
            status=ScanStatus.QUEUED.value,
            phase=ScanPhase.QUEUED.value,
            commit_sha=None,
            files_total=0,
            files_done=0,
            bytes_total=0,
            bytes_done=0,
            new_counts=zero_counts(),
            open_counts=zero_counts(),
            fixed_counts=zero_counts(),
            skipped={},
            files_scanned=0,
            cache_hits=0,
            engine_calls=0,
            engine_versions={},
            pipeline_signature=None,
            duration_ms=None,
            error_code=None,
            error_message=None,
            warnings=None,
            started_at=None,
            finished_at=None,
            cancel_requested_at=None,
            updated_at=now,
        )

    async def cancel_state(self, scan_id: uuid.UUID) -> tuple[str, datetime | None] | None:
        row = (
            await self.session.execute(select(Scan.status, Scan.cancel_requested_at).where(Scan.id == scan_id))
        ).first()
        return (row[0], row[1]) if row is not None else None

    async def last_scheduled(self, repository_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, datetime]:
        """When each repository's latest scheduled scan was queued."""
        found: dict[uuid.UUID, datetime] = {}
        for part in chunks(list(repository_ids)):
            rows = await self.session.execute(
                select(Scan.repository_id, func.max(Scan.queued_at))
                .where(Scan.repository_id.in_(part), Scan.trigger == ScanTrigger.SCHEDULE.value)
                .group_by(Scan.repository_id)
            )
            found.update({row[0]: row[1] for row in rows.all()})
        return found

    # --- findings ------------------------------------------------------------------------

    async def get_finding(self, finding_id: uuid.UUID) -> Finding | None:
        return await self.session.get(Finding, finding_id)

    async def finding_states(self, repository_id: uuid.UUID, fingerprints: Sequence[str]) -> dict[str, Tracked]:
        """The repository's tracked findings among these fingerprints, by fingerprint."""
        found: dict[str, Tracked] = {}
        for part in chunks(fingerprints):
            rows = await self.session.execute(
                select(Finding.fingerprint, Finding.id, Finding.status, Finding.reopened_count).where(
                    Finding.repository_id == repository_id, Finding.fingerprint.in_(part)
                )
            )
            found.update({row[0]: Tracked(row[1], FindingStatus(row[2]), row[3]) for row in rows.all()})
        return found

    async def insert_findings(self, rows: Sequence[Mapping[str, Any]]) -> None:
        for part in chunks(rows):
            await self.session.execute(insert(Finding), [dict(row) for row in part])

    async def update_findings(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Bulk UPDATE by primary key: each row holds `id` and the columns to set."""
        for part in chunks(rows):
            await self.session.execute(update(Finding), [dict(row) for row in part])

    async def fix_unseen(
        self, repository_id: uuid.UUID, scan_id: uuid.UUID, now: datetime, *, history: bool = False
    ) -> list[str]:
        """Open findings the scan did not see become fixed, and after a history scan those only
        in the history too (a scan of one commit cannot tell they are gone); their severities."""
        gone = UNRESOLVED_STATUSES if history else (FindingStatus.OPEN.value,)
        result = await self.session.execute(
            update(Finding)
            .where(
                Finding.repository_id == repository_id,
                Finding.status.in_(gone),
                or_(Finding.last_seen_scan_id.is_(None), Finding.last_seen_scan_id != scan_id),
            )
            .values(status=FindingStatus.FIXED.value, fixed_in_scan_id=scan_id, fixed_at=now, updated_at=now)
            .returning(Finding.severity)
            .execution_options(synchronize_session=False)
        )
        return [severity for (severity,) in result.all()]

    async def open_counts(self, repository_id: uuid.UUID) -> dict[str, int]:
        rows = await self.session.execute(
            select(Finding.severity, func.count())
            .where(Finding.repository_id == repository_id, Finding.status.in_(UNRESOLVED_STATUSES))
            .group_by(Finding.severity)
        )
        return {severity: int(count) for severity, count in rows.all()}

    def findings_query(
        self,
        repository_id: uuid.UUID,
        *,
        severities: Collection[str] = (),
        statuses: Collection[str] = (),
        rule: str | None = None,
        path: str | None = None,
        confidences: Collection[str] = (),
    ) -> Select[Finding]:
        query = select(Finding).where(Finding.repository_id == repository_id)
        if severities:
            query = query.where(Finding.severity.in_(list(severities)))
        if statuses:
            query = query.where(Finding.status.in_(list(statuses)))
        if rule is not None:
            query = query.where(Finding.rule_id == rule)
        if path is not None:
            query = query.where(Finding.path.startswith(path, autoescape=True))
        if confidences:
            query = query.where(Finding.confidence.in_(list(confidences)))
        return query

    @staticmethod
    def finding_order() -> list[SortKey]:
        """Most severe first, then by path and line."""
        return [SortKey(Finding.severity_rank), SortKey(Finding.path), SortKey(Finding.start_line)]

    # --- what a scan saw -----------------------------------------------------------------

    async def insert_scan_findings(self, rows: Sequence[Mapping[str, Any]]) -> None:
        for part in chunks(rows):
            await self.session.execute(insert(ScanFinding), [dict(row) for row in part])

    def scan_findings_query(
        self,
        scan_id: uuid.UUID,
        *,
        severities: Collection[str] = (),
        statuses: Collection[str] = (),
        rule: str | None = None,
        path: str | None = None,
        confidences: Collection[str] = (),
    ) -> Select[ScanFinding, str, str | None]:
        """Rows of (what the scan saw, the tracked finding's current status and dismissal reason,
        or None)."""
        query = (
            select(ScanFinding, Finding.status, Finding.dismissed_reason)
            .outerjoin(Finding, Finding.id == ScanFinding.finding_id)
            .where(ScanFinding.scan_id == scan_id)
        )
        if severities:
            query = query.where(ScanFinding.severity.in_(list(severities)))
        if statuses:
            query = query.where(func.coalesce(Finding.status, FindingStatus.OPEN.value).in_(list(statuses)))
        if rule is not None:
            query = query.where(ScanFinding.rule_id == rule)
        if path is not None:
            query = query.where(ScanFinding.path.startswith(path, autoescape=True))
        if confidences:
            query = query.where(ScanFinding.confidence.in_(list(confidences)))
        return query

    @staticmethod
    def scan_finding_order() -> list[SortKey]:
        return [SortKey(ScanFinding.severity_rank), SortKey(ScanFinding.path), SortKey(ScanFinding.start_line)]

    async def reusable_scan(
        self, repository_id: uuid.UUID, ref_key: str, commit_sha: str, pipeline_signature: str
    ) -> Scan | None:
        """The newest succeeded scan of this repository and ref at that commit, made with the
        same pipeline: its results are what a new scan would find."""
        query = (
            select(Scan)
            .where(
                Scan.repository_id == repository_id,
                Scan.ref_key == ref_key,
                Scan.status == ScanStatus.SUCCEEDED.value,
                Scan.commit_sha == commit_sha,
                Scan.pipeline_signature == pipeline_signature,
            )
            .order_by(Scan.finished_at.desc())
            .limit(1)
        )
        return (await self.session.execute(query)).scalar_one_or_none()

    async def scan_findings(self, scan_id: uuid.UUID) -> list[ScanFinding]:
        rows = await self.session.scalars(
            select(ScanFinding)
            .where(ScanFinding.scan_id == scan_id)
            .order_by(ScanFinding.path, ScanFinding.start_line, ScanFinding.start_column, ScanFinding.id)
        )
        return list(rows)

    async def dismissed_reasons(self, scan_id: uuid.UUID) -> dict[str, str | None]:
        """The fingerprints of what the scan saw whose tracked finding is dismissed now (ignored,
        false positive), each with its triage reason."""
        dismissed = [status.value for status in FindingStatus if status.dismissed]
        rows = await self.session.execute(
            select(ScanFinding.fingerprint, Finding.dismissed_reason)
            .join(Finding, Finding.id == ScanFinding.finding_id)
            .where(ScanFinding.scan_id == scan_id, Finding.status.in_(dismissed))
        )
        return {str(fingerprint): reason for fingerprint, reason in rows.all()}

    async def dismissed_findings(self, repository_id: uuid.UUID, finding_ids: Collection[uuid.UUID]) -> list[Finding]:
        """The repository's findings among these ids that are dismissed now (ignored, false positive)."""
        if not finding_ids:
            return []
        dismissed = [status.value for status in FindingStatus if status.dismissed]
        rows = await self.session.scalars(
            select(Finding).where(
                Finding.repository_id == repository_id,
                Finding.id.in_(list(finding_ids)),
                Finding.status.in_(dismissed),
            )
        )
        return list(rows)

    # --- result cache --------------------------------------------------------------------

    async def cached_results(self, org_id: uuid.UUID, keys: Sequence[CacheKey]) -> dict[CacheKey, list[dict[str, Any]]]:
        table = ScanResultCache.__table__
        found: dict[CacheKey, list[dict[str, Any]]] = {}
        unique = list(dict.fromkeys(keys))
        for part in chunks(unique):
            rows = await rows_by_keys(
                self.session,
                table,  # type: ignore[arg-type]
                ["findings"],
                fixed={"org_id": org_id},
                key_columns=["blob_sha", "engine", "engine_version"],
                keys=[list(key) for key in part],
            )
            for position, (findings,) in rows:
                found[part[position]] = list(findings)
        return found

    async def store_results(
        self, org_id: uuid.UUID, items: Mapping[CacheKey, list[dict[str, Any]]], now: datetime
    ) -> None:
        """Insert results not cached yet (a concurrent scan may have stored the same ones: kept)."""
        rows = [
            {"org_id": org_id, "blob_sha": blob, "engine": engine, "engine_version": version,
             "findings": findings, "created_at": now}
            for (blob, engine, version), findings in items.items()
        ]  # fmt: skip
        statement = upsert(
            self.session,
            ScanResultCache.__table__,  # type: ignore[arg-type]
            conflict=["org_id", "blob_sha", "engine", "engine_version"],
        )
        for part in chunks(rows):
            await self.session.execute(statement, list(part))
