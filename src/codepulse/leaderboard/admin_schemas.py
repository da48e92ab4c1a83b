"""Request and response bodies of the superusers' leaderboard routes (exclusions)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from codepulse.text import NO_PROSE_CONTROL

REASON_MAX_LENGTH = 500

# Prose, like a finding's triage reason: tabs and line breaks are allowed, other control
# characters are a 422 `control_character`.
Reason = Annotated[str, StringConstraints(strip_whitespace=True, max_length=REASON_MAX_LENGTH), NO_PROSE_CONTROL]


class ExclusionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"reason": "Fabricated usage"}]})

    reason: Reason | None = Field(
        default=None, description=f"Why (up to {REASON_MAX_LENGTH} characters); blank means none."
    )

    @field_validator("reason")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value or None


class ExcludedUser(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    username: str
    name: str
    avatar_url: str | None


class ExclusionOut(BaseModel):
    user: ExcludedUser
    reason: str | None
    excluded_by: uuid.UUID | None = Field(description="The superuser who set the current reason.")
    created_at: datetime = Field(description="When the account was first excluded.")
