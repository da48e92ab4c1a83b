"""Shapes of the superusers' account administration (`/admin/users`)."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class AdminUserOut(BaseModel):
    """An account as a superuser sees it in the list."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    username: str
    name: str
    avatar_url: str | None
    email_verified: bool
    has_password: bool
    is_superuser: bool
    disabled: bool
    disabled_at: datetime | None
    timezone: str
    profile_public: bool
    created_at: datetime


class AdminUserUpdate(BaseModel):
    """A superuser's change of an account; a field left out stays as it is."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"disabled": True}, {"is_superuser": True}]}
    )

    disabled: bool | None = Field(
        default=None,
        description="true: every session and CLI token ends now and every sign-in is refused "
        "(401 `account_disabled`); false: the account may sign in again.",
    )
    is_superuser: bool | None = None
