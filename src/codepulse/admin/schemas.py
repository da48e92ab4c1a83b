"""Response bodies of the superusers' task-queue routes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from codepulse.logging import redact
from codepulse.tasks import TaskStatus

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
