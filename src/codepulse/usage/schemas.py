"""Request and response bodies of the usage domain.

Money leaves the API as a decimal string of US dollars (`"12.345678901"`), never a float; the
Burntop-compatible sync answer is the one exception, because that client reads a number.
"""

from __future__ import annotations

import datetime as dt
import uuid
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer, StringConstraints

from codepulse.text import Line
from codepulse.usage.pricing import LongContextSpec, PriceSpec

# US dollars as a plain decimal string ("0.000000000", never "0E-9").
Usd = Annotated[
    Decimal,
    PlainSerializer(lambda value: format(value, "f"), return_type=str, when_used="json"),
    Field(description="US dollars, as a decimal string.", examples=["12.345678901"]),
]

COUNTING_RULES = (
    "Token counts are **as the provider bills them**: `input_tokens` excludes tokens written to or read "
    "from a prompt cache. Clients of tools that report cached tokens inside their input count "
    "(Codex, Gemini CLI, ...) subtract them before sending. `reasoning_tokens` is the part of "
    "`output_tokens` spent on reasoning (informational: it is neither priced again nor added to totals). "
    "Totals count input + output + cache writes + cache reads."
)


# --- sync: native --------------------------------------------------------------------------


# Field types of a record. Their errors become the record's rejection codes (codepulse.usage.ingest).
Source = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, to_lower=True, min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$"
    ),
]
MessageId = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"\S")]
RequestId = Annotated[str | None, StringConstraints(max_length=200)]
SessionId = Annotated[str | None, StringConstraints(max_length=200)]
ModelName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Tokens = Annotated[int, Field(strict=True, ge=0)]


class ClientInfo(BaseModel):
    name: Line = Field(min_length=1, max_length=100, examples=["codepulse-cli"])
    version: Line = Field(default="", max_length=50, examples=["1.4.0"])


class UsageRecordIn(BaseModel):
    """One model response. Invalid records are rejected one by one (see `rejected`), never the batch."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "source": "claude-code",
                    "message_id": "msg_01XFDUDYJgAACzvnptvVoYEL",
                    "request_id": "req_011CVQe1dLrGNMJyE1ghG1av",
                    "model": "claude-sonnet-4-5-20250929",
                    "timestamp": "2026-11-23T09:41:07.512+01:00",
                    "input_tokens": 12,
                    "output_tokens": 842,
                    "cache_creation_5m_tokens": 1536,
                    "cache_creation_1h_tokens": 0,
                    "cache_read_tokens": 48210,
                    "reasoning_tokens": 0,
                    "speed": "standard",
                    "session_id": "2f1c0c5e-8d1b-4a57-9f55-0f3f6c1b2a10",
                }
            ]
        },
    )

    source: Source = Field(
        description="The tool: `claude-code`, `codex`, `gemini-cli`, `cursor`, `opencode`, ... "
        "(others are accepted as given, lower-cased; at most 64 characters)."
    )
    message_id: MessageId = Field(description="The provider's message id; at most 200 characters, not blank.")
    request_id: RequestId = Field(
        default=None, description="The provider's request id, when the tool logs one; at most 200 characters."
    )
    model: ModelName = Field(description="The model as the tool reports it; normalised on the server.")
    timestamp: AwareDatetime = Field(description="ISO 8601 with a UTC offset.")
    input_tokens: Tokens
    output_tokens: Tokens
    cache_creation_5m_tokens: Tokens = 0
    cache_creation_1h_tokens: Tokens = 0
    cache_read_tokens: Tokens = 0
    reasoning_tokens: Tokens = 0
    speed: Literal["standard", "fast"] | None = Field(default=None, description="`standard` (default) or `fast`.")
    session_id: SessionId = Field(default=None, description="The tool's session id; at most 200 characters.")
    cost_usd: Decimal | None = Field(
        default=None, ge=0, le=1_000_000, description="The client's own estimate; stored for comparison, never used."
    )


class SyncIn(BaseModel):
    """What the codepulse CLI sends: up to 5,000 records and 10 MB (gzip allowed) per request."""

    client: ClientInfo
    machine_id: Line = Field(min_length=1, max_length=200)
    records: list[UsageRecordIn]


class Rejection(BaseModel):
    index: int = Field(description="Position of the record in the request's `records` (or `messages`).")
    code: str = Field(
        description="`invalid_record`, `missing_source`, `invalid_source`, `missing_message_id`, "
        "`message_id_too_long`, `request_id_too_long`, `missing_model`, `invalid_model`, `invalid_timestamp`, "
        "`timestamp_in_future`, `timestamp_too_old`, `negative_tokens`, `too_many_tokens`, `invalid_speed`, "
        "`invalid_session_id` or `invalid_cost`."
    )
    detail: str
    message_id: str | None = Field(
        default=None, description="The record's `message_id` as sent (at most 200 characters), when it had one."
    )
    request_id: str | None = Field(
        default=None, description="The record's `request_id` as sent (at most 200 characters), when it had one."
    )


class SyncTotals(BaseModel):
    """The user's lifetime totals after this sync."""

    tokens: int
    cost_usd: Usd
    current_streak: int
    longest_streak: int


class SyncOut(BaseModel):
    received: int
    inserted: int = Field(description="New records.")
    updated: int = Field(description="Known records whose token counts grew.")
    unchanged: int = Field(description="Known records with equal or smaller counts (nothing changed).")
    rejected: list[Rejection]
    totals: SyncTotals


# --- sync: the Burntop CLI's v2 shape --------------------------------------------------------


class BurntopMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: MessageId
    timestamp: AwareDatetime
    model: ModelName
    inputTokens: Tokens
    outputTokens: Tokens
    cacheCreationTokens: Tokens = Field(default=0, description="Billed as 5-minute cache writes.")
    cacheReadTokens: Tokens = 0
    reasoningTokens: Tokens = 0


class BurntopSyncIn(BaseModel):
    """The Burntop CLI's body: one source per request, up to 100,000 messages."""

    model_config = ConfigDict(extra="ignore")

    version: Line = Field(pattern=r"^2\.", examples=["2.0.0"])
    client: Line = Field(max_length=100, examples=["burntop-cli"])
    machineId: Line = Field(default="", max_length=200)
    syncedAt: Line | None = None
    source: Source
    messages: list[BurntopMessageIn]


class BurntopStats(BaseModel):
    totalTokens: int
    totalCost: float
    currentStreak: int
    longestStreak: int
    achievementsUnlocked: int = 0


class BurntopSyncOut(BaseModel):
    success: bool
    message: str
    messagesReceived: int
    messagesSynced: int
    recordsProcessed: int
    newRecords: int
    updatedRecords: int
    stats: BurntopStats
    newAchievements: list[Any] = Field(default_factory=list)


# --- dashboards --------------------------------------------------------------------------------


class Range(StrEnum):
    D7 = "7d"
    D30 = "30d"
    D90 = "90d"
    D365 = "365d"
    ALL = "all"

    @property
    def days(self) -> int | None:
        return None if self is Range.ALL else int(self.value[:-1])


class Granularity(StrEnum):
    DAY = "day"
    WEEK = "week"


class TokenCounts(BaseModel):
    # Read from the summed aggregates (`repository.Sums`); no docstring, which would change the schema.
    model_config = ConfigDict(from_attributes=True)

    input: int = 0
    output: int = 0
    cache_creation_5m: int = 0
    cache_creation_1h: int = 0
    cache_read: int = 0
    reasoning: int = 0
    total: int = Field(default=0, description="input + output + cache writes + cache reads.")


class PeriodStats(BaseModel):
    tokens: TokenCounts
    cost_usd: Usd
    records: int
    active_days: int
    cache_efficiency: float | None = Field(description="cache_read / (input + cache_read); null without input.")


class Overview(BaseModel):
    timezone: str = Field(description="Your time zone now: it decides what `today` is.")
    today: date
    periods: dict[str, PeriodStats] = Field(description="`today`, `7d`, `30d` and `all`.")
    current_streak: int = Field(description="Consecutive active days ending today, or yesterday.")
    longest_streak: int
    top_model: str | None = Field(description="By tokens, all time.")
    top_source: str | None
    unpriced_records: int = Field(description="Records of models without a price (counted at 0 USD).")


class TrendPoint(BaseModel):
    date: dt.date = Field(description="The day, or the Monday starting the week.")
    tokens: TokenCounts
    cost_usd: Usd
    records: int


class Trends(BaseModel):
    range: Range
    granularity: Granularity
    start: date
    end: date
    points: list[TrendPoint] = Field(description="Every day or week of the range, zero-filled.")


class SourceUsage(BaseModel):
    source: str
    tokens: TokenCounts
    cost_usd: Usd
    records: int
    active_days: int
    token_share: float
    cost_share: float


class SourceBreakdown(BaseModel):
    range: Range
    start: date | None
    end: date
    items: list[SourceUsage]


class ModelUsage(BaseModel):
    model: str = Field(description="The normalised model name.")
    display_name: str | None
    priced: bool = Field(description="Whether the model has a price now.")
    tokens: TokenCounts
    cost_usd: Usd
    records: int
    unpriced_records: int
    token_share: float
    cost_share: float


class ModelBreakdown(BaseModel):
    range: Range
    start: date | None
    end: date
    unpriced_records: int
    items: list[ModelUsage]


# --- organizations, public stats, settings -----------------------------------------------


class MemberRef(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    username: str
    name: str
    avatar_url: str | None


class MemberUsage(BaseModel):
    user: MemberRef
    tokens: TokenCounts
    cost_usd: Usd
    records: int
    active_days: int
    last_active: date | None


class OrgTotals(BaseModel):
    tokens: TokenCounts
    cost_usd: Usd
    records: int
    active_members: int


class OrgUsage(BaseModel):
    org_id: uuid.UUID
    range: Range
    start: date | None
    end: date = Field(description="Today in UTC; each member's days are their own local dates.")
    totals: OrgTotals
    members: list[MemberUsage] = Field(description="Members who share their usage, most tokens first.")
    members_sharing: int
    members_not_sharing: int = Field(description="Members who opted out; not counted anywhere above.")


class Share(BaseModel):
    name: str
    token_share: float


class PublicStats(BaseModel):
    username: str
    total_tokens: int
    total_cost_usd: Usd
    active_days: int
    current_streak: int
    longest_streak: int
    first_active: date | None
    last_active: date | None
    top_models: list[Share]
    top_sources: list[Share]


class UsageSettingsOut(BaseModel):
    share_usage_with_orgs: bool = Field(
        description="Whether admins of your organizations see your usage in their organization's view."
    )


class UsageSettingsUpdate(BaseModel):
    share_usage_with_orgs: bool | None = None


# --- pricing administration ------------------------------------------------------------------


class PriceOut(BaseModel):
    model: str
    source: str = Field(description="`file` (the shipped price list) or `override` (set by a superuser).")
    version: str = Field(description="Stored with every record priced at this price.")
    name: str | None
    provider: str | None
    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal
    long_context: LongContextSpec | None
    fast_multiplier: Decimal | None
    file_price: PriceSpec | None = Field(default=None, description="The shipped price an override replaces.")


class PriceList(BaseModel):
    version: str
    taken: date
    sources: list[str]
    aliases: dict[str, str]
    items: list[PriceOut]
