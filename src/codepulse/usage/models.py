"""Usage records pushed by the CLI, their daily aggregates, per-user settings, price overrides,
and metered organization events.

Money is stored as integer nano-dollars (10^-9 USD, `*_nanousd`): exact sums on both dialects
(SQLite has no exact decimal type), and per-record rounding far below a cent even over millions
of records.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from codepulse.db import Base, UUIDPrimaryKey

SOURCE_MAX_LENGTH = 64
ID_MAX_LENGTH = 200
MODEL_MAX_LENGTH = 200


# The token counts of a record, in this order: as the provider bills them (`input` excludes cache
# writes and reads; `reasoning` is the part of `output` spent on reasoning).
TOKEN_COLUMNS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_5m_tokens",
    "cache_creation_1h_tokens",
    "cache_read_tokens",
    "reasoning_tokens",
)


class TokenColumns:
    """The token counts (TOKEN_COLUMNS) of a record, or their sums."""

    input_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    cache_creation_5m_tokens: Mapped[int] = mapped_column(BigInteger)
    cache_creation_1h_tokens: Mapped[int] = mapped_column(BigInteger)
    cache_read_tokens: Mapped[int] = mapped_column(BigInteger)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger)


class UsageRecord(TokenColumns, Base):
    """One billed model response, as the provider billed it, deduplicated on its natural key.

    The key (user, message id, source, request id or "") is the primary key: a record seen again
    replaces its token counts only when they grow. `day` is the local date in the user's time
    zone when the record was first ingested; it never moves afterwards.
    """

    __tablename__ = "usage_records"
    __table_args__ = (PrimaryKeyConstraint("user_id", "message_id", "source", "request_id"),)

    # No foreign key: checking it for every record of a sync cost about half of the COPY that
    # stores them. The records still go with their user (a trigger on users, migration 0008), and
    # usage_daily's foreign key, written by every sync that writes records, keeps a sync from
    # storing records for a user being deleted.
    user_id: Mapped[uuid.UUID]
    message_id: Mapped[str] = mapped_column(String(ID_MAX_LENGTH))
    source: Mapped[str] = mapped_column(String(SOURCE_MAX_LENGTH))
    request_id: Mapped[str] = mapped_column(String(ID_MAX_LENGTH))
    # As the client sent it (trimmed), and normalised for pricing and aggregation.
    model: Mapped[str] = mapped_column(String(MODEL_MAX_LENGTH))
    model_key: Mapped[str] = mapped_column(String(MODEL_MAX_LENGTH))
    occurred_at: Mapped[datetime]
    day: Mapped[date] = mapped_column(Date)
    speed: Mapped[str] = mapped_column(String(10))
    session_id: Mapped[str | None] = mapped_column(String(ID_MAX_LENGTH))
    machine_id: Mapped[str | None] = mapped_column(String(ID_MAX_LENGTH))
    cost_nanousd: Mapped[int] = mapped_column(BigInteger)
    # What the client computed, kept for comparison; never used.
    client_cost_nanousd: Mapped[int | None] = mapped_column(BigInteger)
    priced: Mapped[bool] = mapped_column(Boolean)
    pricing_version: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class UsageDaily(TokenColumns, Base):
    """Sums of usage records per (user, local day, source, normalised model).

    Maintained in the same transaction as the records, by the differences each sync applies.
    """

    __tablename__ = "usage_daily"
    __table_args__ = (PrimaryKeyConstraint("user_id", "day", "source", "model"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    day: Mapped[date] = mapped_column(Date)
    source: Mapped[str] = mapped_column(String(SOURCE_MAX_LENGTH))
    model: Mapped[str] = mapped_column(String(MODEL_MAX_LENGTH))
    cost_nanousd: Mapped[int] = mapped_column(BigInteger)
    records: Mapped[int] = mapped_column(Integer)
    unpriced_records: Mapped[int] = mapped_column(Integer)


class UsagePlatformDaily(TokenColumns, Base):
    """Sums of `usage_daily` over every user per (local day, source, normalised model): the
    superusers' statistics read a range of days here instead of summing a row per user and day.

    Kept equal to those sums in the transaction of every change to usage_daily, by the same
    differences (`UsageRepository.add_to_platform`): a sync adds its differences once, after its
    last chunk (a few rows, in key order, just before the commit: concurrent syncs of the
    platform's busiest rows hold their locks only that long, and always in the same order);
    repricing adds its moves; an account's deletion takes its user's rows out
    (`usage.hooks.take_out_of_platform_sums`). Every writer goes through `UsageRepository`; rows
    written otherwise (a bulk load, a test's ORM objects) are counted by
    `UsageRepository.rebuild_platform`, which recomputes the table. A row whose records all left
    (repricing, a deletion) stays, at zero.
    """

    __tablename__ = "usage_platform_daily"
    __table_args__ = (PrimaryKeyConstraint("day", "source", "model"),)

    day: Mapped[date] = mapped_column(Date)
    source: Mapped[str] = mapped_column(String(SOURCE_MAX_LENGTH))
    model: Mapped[str] = mapped_column(String(MODEL_MAX_LENGTH))
    cost_nanousd: Mapped[int] = mapped_column(BigInteger)
    records: Mapped[int] = mapped_column(BigInteger)
    unpriced_records: Mapped[int] = mapped_column(BigInteger)


class UsagePlatformSyncs(Base):
    """Sync batches applied per UTC day (of `UsageSyncBatch.created_at`), over every user: what
    the superusers' statistics count, kept like `UsagePlatformDaily` (a sync adds its batch with
    its platform sums, an account's deletion takes its batches out)."""

    __tablename__ = "usage_platform_syncs"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    syncs: Mapped[int] = mapped_column(BigInteger)


class UsageSyncBatch(Base):
    """A sync batch applied to a user's records, by the digest of its body and of the records it
    rejected (which depend on the day it came: see `ingest.Batch.digest`).

    Written in the transaction that applies the batch. The same batch sent again (a CLI retrying
    after a timeout, or uploading its logs again) is then known to change nothing, since stored
    counts only grow: it is answered without reading its records one by one.
    """

    __tablename__ = "usage_sync_batches"
    # For the superusers' statistics: whether a user synced lately (their latest batch).
    __table_args__ = (
        PrimaryKeyConstraint("user_id", "digest"),
        Index("ix_usage_sync_batches_user_id_created_at", "user_id", "created_at"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]


class UsageSettings(Base):
    """Per-user usage preferences; no row means the defaults."""

    __tablename__ = "usage_settings"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    share_usage_with_orgs: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime]


class PriceOverride(Base):
    """A superuser's price for a normalised model name, replacing (or adding to) the shipped file.

    `price` holds the same fields as an entry of `pricing.toml`, decimals as strings.
    """

    __tablename__ = "usage_price_overrides"

    model: Mapped[str] = mapped_column(String(MODEL_MAX_LENGTH), primary_key=True)
    price: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    updated_at: Mapped[datetime]


class UsageEvent(UUIDPrimaryKey, Base):
    """A metered, billable organization event (a scan run, ...), recorded once per idempotency key."""

    __tablename__ = "usage_events"
    __table_args__ = (
        UniqueConstraint("org_id", "idempotency_key"),
        Index("ix_usage_events_org_id_kind_occurred_at", "org_id", "kind", "occurred_at"),
    )

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    quantity: Mapped[int] = mapped_column(BigInteger)
    occurred_at: Mapped[datetime]
    idempotency_key: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
