"""Response bodies of the superusers' task-queue routes and platform statistics."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from codepulse.logging import redact
from codepulse.tasks import TaskStatus
from codepulse.usage.schemas import Usd

# Handler errors are `<ExceptionType>: <message>` up to 4,000 characters; the list shows the start.
ERROR_MAX_LENGTH = 500


def _redacted(value: Any) -> Any:
    """Strings inside a payload with the credentials a log line would have redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redacted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redacted(item) for item in value]
    return value


class TaskOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    kind: str
    status: TaskStatus
    priority: int
    attempts: int = Field(description="Claims so far (reset to 0 by a retry).")
    max_attempts: int | None = Field(description="Null: the workers' TASK_MAX_ATTEMPTS.")
    run_at: datetime = Field(description="When it is (or was) due.")
    created_at: datetime
    started_at: datetime | None = Field(description="The start of its latest attempt.")
    finished_at: datetime | None
    last_error: str | None = Field(
        description=f"The latest failure, `<ExceptionType>: <message>`: its first {ERROR_MAX_LENGTH} characters, "
        "credentials redacted."
    )
    payload: dict[str, Any] = Field(description="What the handler receives (ids, mostly); credentials redacted.")

    @field_validator("last_error")
    @classmethod
    def _short_error(cls, value: str | None) -> str | None:
        return None if value is None else redact(value[:ERROR_MAX_LENGTH])

    @field_validator("payload")
    @classmethod
    def _redact_payload(cls, value: dict[str, Any]) -> dict[str, Any]:
        redacted: dict[str, Any] = _redacted(value)
        return redacted


# --- GET /admin/stats --------------------------------------------------------------------------


class StatsRange(StrEnum):
    """The days the per-day series cover, today (UTC) included."""

    D7 = "7d"
    D30 = "30d"
    D90 = "90d"
    D365 = "365d"

    @property
    def days(self) -> int:
        return int(self.value[:-1])


class DayCount(BaseModel):
    day: date
    count: int


class UserFigures(BaseModel):
    total: int
    disabled: int
    active_7d: int = Field(
        description="Accounts that signed in (a session or CLI token used) or synced in the last 7 days."
    )
    active_30d: int = Field(description="The same over the last 30 days.")
    new: int = Field(description="Accounts created within the range.")
    new_per_day: list[DayCount] = Field(description="Accounts created per UTC day, every day of the range.")


class OrganizationFigures(BaseModel):
    total: int = Field(description="Live organizations (deleted ones left out).")
    by_plan: dict[str, int] = Field(
        description="Organizations per plan; one nobody put on a plan counts under the DEFAULT_PLAN."
    )


class RepositoryFigures(BaseModel):
    connected: int = Field(description="Repositories not archived.")
    archived: int


class ScanDay(BaseModel):
    day: date
    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    canceled: int = 0


class ScanFigures(BaseModel):
    total: int = Field(description="Scans queued within the range.")
    per_day: list[ScanDay] = Field(description="Scans per UTC day queued, by their status now.")
    finished: int = Field(description="Scans of the range with a duration.")
    median_duration_ms: float | None = Field(description="Null when no scan of the range finished.")
    p95_duration_ms: float | None = Field(description="The 95th percentile (continuous).")
    engine_calls: int = Field(description="Files handed to an engine by the range's scans.")
    cache_hits: int = Field(description="Files whose results came from the scan cache instead.")


class FindingFigures(BaseModel):
    open_total: int = Field(description="Unresolved findings (open at the head or in the history), every repository.")
    open_by_severity: dict[str, int] = Field(description="Each severity, critical to info.")


class UsageDayOut(BaseModel):
    day: date
    syncs: int = Field(description="Sync batches applied this UTC day.")
    records: int
    tokens: int
    cost_usd: Usd
    unpriced_records: int


class UnpricedModel(BaseModel):
    model: str
    records: int


class UsageFigures(BaseModel):
    syncs: int
    records: int
    tokens: int
    cost_usd: Usd
    unpriced_records: int
    per_day: list[UsageDayOut] = Field(
        description="Records, tokens and cost by the users' local day of the record (as the aggregates keep "
        "them); syncs by UTC day."
    )
    unpriced_models: list[UnpricedModel] = Field(description="Models behind the range's unpriced records, most first.")


class TaskKindFigures(BaseModel):
    kind: str
    queued: int
    running: int
    dead: int


class TaskFigures(BaseModel):
    queued: int
    running: int
    dead: int
    by_kind: list[TaskKindFigures]
    oldest_queued_age_seconds: float | None = Field(
        description="How long the longest-waiting due task has been due; null when none waits."
    )


class JobFigures(BaseModel):
    job_id: str
    last_run_at: datetime
    last_status: str
    last_finished_at: datetime | None
    last_failure_at: datetime | None
    last_error: str | None = Field(description=f"Its first {ERROR_MAX_LENGTH} characters, credentials redacted.")

    @field_validator("last_error")
    @classmethod
    def _short_error(cls, value: str | None) -> str | None:
        return None if value is None else redact(value[:ERROR_MAX_LENGTH])


class PlatformStats(BaseModel):
    range: StatsRange
    first_day: date = Field(description="The range's first UTC day.")
    last_day: date = Field(description="Today (UTC).")
    generated_at: datetime
    users: UserFigures
    organizations: OrganizationFigures
    repositories: RepositoryFigures
    scans: ScanFigures
    findings: FindingFigures
    usage: UsageFigures
    tasks: TaskFigures
    scheduler: list[JobFigures] = Field(description="Each job with a recorded run: its last run and last failure.")
