"""The mail outbox: one row per message, from the sender's transaction until it is sent or failed."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from codepulse.db import Base, UUIDPrimaryKey


class MailStatus(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"


class OutboxMail(UUIDPrimaryKey, Base):
    __tablename__ = "mail_outbox"
    __table_args__ = (Index("ix_mail_outbox_status_updated_at", "status", "updated_at"),)

    to_address: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(300))
    # The text and extra headers, sealed with SECRET_KEY (they hold single-use links); NULL once
    # the message is past MAIL_BODY_RETENTION_HOURS after it was sent or failed.
    sealed: Mapped[str | None] = mapped_column(Text)
    # What sent it, for operators and logs: "auth.verify_email", "notification.scan_failed", ...
    category: Mapped[str] = mapped_column(String(64))
    # A message that must go out once per event (a notification's mail) carries a key.
    dedup_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    status: Mapped[str] = mapped_column(String(16), default=MailStatus.QUEUED.value)
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(String(500))
    # While `sending`: the sender's lease; another run may take the message over only after it.
    locked_until: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
