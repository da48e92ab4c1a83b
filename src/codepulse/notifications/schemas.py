"""What the notifications routes read and answer."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class NotificationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    org_id: uuid.UUID | None
    kind: str
    title: str
    body: str
    data: dict[str, Any] = Field(description="Ids the dashboard links to (scan_id, repository_id, org_id, ...).")
    read_at: datetime | None
    created_at: datetime


class UnreadCount(BaseModel):
    count: int


class ReadyOut(BaseModel):
    """The stream's first event: it is live, and this many of the user's notifications are unread."""

    unread_count: int


class UnreadCountOut(BaseModel):
    """The stream's `unread_count` event: this many of the user's notifications are unread now
    (after the `notification` events just sent, or after some were read or deleted)."""

    unread_count: int


class MarkedRead(BaseModel):
    updated: int = Field(description="How many were unread.")


class KindOut(BaseModel):
    kind: str
    description: str
    in_app: bool = Field(description="Shown in the app unless the user turns it off.")
    email: bool = Field(description="Mailed unless the user turns it off.")


class PreferenceOut(BaseModel):
    kind: str
    in_app: bool
    email: bool


class PreferencesOut(BaseModel):
    items: list[PreferenceOut] = Field(description="Every kind, with the user's choice or its defaults.")


class PreferenceChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(max_length=64)
    in_app: bool | None = Field(default=None, description="Null: unchanged.")
    email: bool | None = Field(default=None, description="Null: unchanged.")


class PreferencesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[PreferenceChange] = Field(max_length=64)
