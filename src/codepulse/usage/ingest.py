"""From a sync body to clean records: the two wire shapes, their limits, per-record checks (the
body itself is read by `upload`).

Only a body that is not JSON, or whose envelope is wrong, fails the whole request (422). Each
record is then checked on its own: a bad one is reported with its index and a reason code and
the others go on.
"""

from __future__ import annotations

import hashlib
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal, NotRequired

import pydantic_core
from pydantic import AfterValidator, AwareDatetime, BaseModel, Field, StringConstraints, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from codepulse.config import Settings
from codepulse.errors import FieldError, PayloadTooLarge, ValidationFailed
from codepulse.text import CONTROL_CHARACTER, Line, json_has_nul
from codepulse.usage.pricing import usd_to_nanousd
from codepulse.usage.schemas import (
    BurntopSyncIn,
    ClientInfo,
    MessageId,
    ModelName,
    Rejection,
    RequestId,
    SessionId,
    Source,
    Tokens,
)
from codepulse.usage.upload import too_large

MAX_TOKENS_PER_RECORD = 50_000_000
MAX_AGE = timedelta(days=400)


@dataclass(frozen=True)
class SyncLimits:
    max_records: int
    max_body_bytes: int
    burntop_max_messages: int
    burntop_max_body_bytes: int

    @classmethod
    def of(cls, settings: Settings) -> SyncLimits:
        return cls(
            max_records=settings.SYNC_MAX_RECORDS,
            max_body_bytes=settings.SYNC_MAX_BODY_BYTES,
            burntop_max_messages=settings.SYNC_BURNTOP_MAX_MESSAGES,
            burntop_max_body_bytes=settings.SYNC_BURNTOP_MAX_BODY_BYTES,
        )

    @property
    def max_any_body_bytes(self) -> int:
        return max(self.max_body_bytes, self.burntop_max_body_bytes)


@dataclass(slots=True)
class CleanRecord:
    """A valid record, normalised (source lower-cased, model trimmed, no request id = "")."""

    key: tuple[str, str, str]  # (message_id, source, request_id)
    source: str
    message_id: str
    request_id: str
    model: str
    timestamp: datetime
    # input, output, 5-minute cache writes, 1-hour cache writes, cache reads, reasoning
    tokens: tuple[int, int, int, int, int, int]
    fast: bool
    session_id: str | None
    client_cost_nanousd: int | None


@dataclass
class Batch:
    """A parsed sync request, whichever shape it came in."""

    shape: str  # "native" | "burntop"
    received: int
    records: list[CleanRecord]
    rejected: list[Rejection]
    machine_id: str | None
    client: str
    # Identifies the clean records: the body and which of its records were rejected (the time
    # window moves, so the same body can yield other records on another day). "" = none.
    digest: str = ""


def batch_digest(body: bytes, rejected: Sequence[Rejection]) -> str:
    digest = hashlib.blake2b(body, digest_size=32)
    digest.update(b"\0" + ",".join(str(item.index) for item in rejected).encode())
    return digest.hexdigest()


# --- envelopes -----------------------------------------------------------------------------


# UsageRecordIn and BurntopMessageIn (the documented schemas) as TypedDicts: a batch validates into
# plain dicts, several times faster than into thousands of model instances. A test keeps the two in
# step. Each is put together from parts so that its fields keep the documented order (a rejection
# reports the first field in error); the `_Wire*` ones are the same with the timestamp as a batch
# validates it (`_WireTimestamp`).


class _RecordKey(TypedDict):
    source: Source
    message_id: MessageId
    request_id: NotRequired[RequestId]
    model: ModelName


class _RecordCounts(TypedDict):
    input_tokens: Tokens
    output_tokens: Tokens
    cache_creation_5m_tokens: NotRequired[Tokens]
    cache_creation_1h_tokens: NotRequired[Tokens]
    cache_read_tokens: NotRequired[Tokens]
    reasoning_tokens: NotRequired[Tokens]
    speed: NotRequired[Literal["standard", "fast"] | None]
    session_id: NotRequired[SessionId]
    cost_usd: NotRequired[Annotated[Decimal | None, Field(ge=0, le=1_000_000)]]


class _MessageKey(TypedDict):
    id: MessageId


class _MessageCounts(TypedDict):
    model: ModelName
    inputTokens: Tokens
    outputTokens: Tokens
    cacheCreationTokens: NotRequired[Tokens]
    cacheReadTokens: NotRequired[Tokens]
    reasoningTokens: NotRequired[Tokens]


# Timestamps in the shape every CLI sends (extended ISO 8601, `T`, up to 6 decimals, `Z` or ±HH:MM)
# pass pydantic as strings and are parsed by `datetime.fromisoformat` (see `_timestamp`): pydantic's
# datetimes carry its own tzinfo class, which makes each comparison, `astimezone` and COPY encoding
# of them several times slower than with `datetime.timezone`, and a batch does all three per record.
# Any other value is validated as AwareDatetime, exactly as the documented schema does.
_ISO_TIMESTAMP = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})$"
_WireTimestamp = Annotated[
    Annotated[str, StringConstraints(pattern=_ISO_TIMESTAMP)] | AwareDatetime, Field(union_mode="left_to_right")
]


class _Timestamp(TypedDict):
    timestamp: AwareDatetime


class _WireTimestamped(TypedDict):
    timestamp: _WireTimestamp


class _RecordDict(_RecordKey, _Timestamp, _RecordCounts):
    """UsageRecordIn."""


class _MessageDict(_MessageKey, _Timestamp, _MessageCounts):
    """BurntopMessageIn."""


class _WireRecordDict(_RecordKey, _WireTimestamped, _RecordCounts):
    """_RecordDict as batches are validated."""


class _WireMessageDict(_MessageKey, _WireTimestamped, _MessageCounts):
    """_MessageDict as batches are validated."""


@dataclass(frozen=True, slots=True)
class _Invalid:
    """An item of a batch that is not a valid record, as parsed; checked again for its reason."""

    value: Any


# Records are validated with the envelope in one pass over the JSON; an item that is not a valid
# record falls through to the second branch and stays as parsed.
_Fallback = Annotated[Any, AfterValidator(_Invalid)]
_LenientRecord = Annotated[_WireRecordDict | _Fallback, Field(union_mode="left_to_right")]
_LenientMessage = Annotated[_WireMessageDict | _Fallback, Field(union_mode="left_to_right")]


class _NativeEnvelope(BaseModel):
    client: ClientInfo
    machine_id: Line = Field(min_length=1, max_length=200)
    records: list[_LenientRecord]


class _BurntopEnvelope(BurntopSyncIn):
    messages: list[_LenientMessage]  # type: ignore[assignment]


_ENVELOPE: TypeAdapter[_NativeEnvelope | _BurntopEnvelope] = TypeAdapter(
    Annotated[_NativeEnvelope | _BurntopEnvelope, Field(union_mode="left_to_right")]
)


def _malformed(error: ValidationError) -> ValidationFailed:
    errors = [
        FieldError(
            field=".".join(["body", *(str(part) for part in item["loc"])]),
            message=item["msg"],
            code=item["type"],
        )
        for item in error.errors(include_url=False)
    ]
    return ValidationFailed(errors, detail="The request body is malformed.")


def _envelope_error(body: bytes) -> ValidationFailed:
    """The 422 for a body that is neither shape, with the errors of the shape it looks like."""
    try:
        data = pydantic_core.from_json(body)
    except ValueError as error:
        return ValidationFailed(
            [FieldError(field="body", code="json_invalid", message=str(error)[:200])],
            detail="The request body is not valid JSON.",
        )
    if not isinstance(data, dict):
        return ValidationFailed(
            [FieldError(field="body", code="object_type", message="The body must be a JSON object.")],
            detail="The request body is malformed.",
        )
    model: type[BaseModel] = _BurntopEnvelope if "messages" in data and "records" not in data else _NativeEnvelope
    try:
        model.model_validate(data)
    except ValidationError as error:
        return _malformed(error)
    return ValidationFailed(  # pragma: no cover - the union accepted nothing the models accept
        [FieldError(field="body", code="invalid", message="Unrecognised body.")],
        detail="The request body is malformed.",
    )


def parse_batch(body: bytes, limits: SyncLimits, now: datetime) -> Batch:
    """Decode a sync body of either shape and check its records (CPU only: safe in a thread)."""
    if json_has_nul(body):
        # No field of a record has a use for NUL, and PostgreSQL's text cannot store it: the body
        # is malformed (a scan of the bytes, not a validator per string of 100,000 messages).
        message = "NUL characters are not allowed in any string of the body."
        raise ValidationFailed(
            [FieldError(field="body", code=CONTROL_CHARACTER, message=message)], detail="The request body is malformed."
        )
    try:
        envelope = _ENVELOPE.validate_json(body)
    except ValidationError:
        raise _envelope_error(body) from None
    if isinstance(envelope, _BurntopEnvelope):
        if len(body) > limits.burntop_max_body_bytes:
            raise too_large(limits.burntop_max_body_bytes, "(decompressed)")
        _check_count(len(envelope.messages), limits.burntop_max_messages)
        clean, rejected = _check_burntop(envelope.messages, envelope.source, now)
        return Batch(
            "burntop",
            len(envelope.messages),
            clean,
            rejected,
            envelope.machineId or None,
            envelope.client,
            batch_digest(body, rejected),
        )
    if len(body) > limits.max_body_bytes:
        raise too_large(limits.max_body_bytes, "(decompressed)")
    _check_count(len(envelope.records), limits.max_records)
    clean, rejected = _check_native(envelope.records, now)
    return Batch(
        "native",
        len(envelope.records),
        clean,
        rejected,
        envelope.machine_id,
        envelope.client.name,
        batch_digest(body, rejected),
    )


def _check_count(count: int, limit: int) -> None:
    if count > limit:
        raise PayloadTooLarge(
            f"{count:,} records in one request; send at most {limit:,} per request.",
            code="too_many_records",
            extra={"limit_records": limit},
        )


# --- records -------------------------------------------------------------------------------

_RECORD: TypeAdapter[_RecordDict] = TypeAdapter(_RecordDict)
_MESSAGE: TypeAdapter[_MessageDict] = TypeAdapter(_MessageDict)

# (field, pydantic error type) -> rejection code; any other error is `invalid_record`.
_FIELD_CODES: dict[tuple[str, str], str] = {
    ("source", "missing"): "missing_source",
    ("source", "string_too_short"): "missing_source",
    ("source", "string_too_long"): "invalid_source",
    ("source", "string_pattern_mismatch"): "invalid_source",
    ("message_id", "string_too_short"): "missing_message_id",
    ("message_id", "string_pattern_mismatch"): "missing_message_id",
    ("message_id", "string_too_long"): "message_id_too_long",
    ("request_id", "string_too_long"): "request_id_too_long",
    ("model", "string_too_short"): "missing_model",
    ("model", "string_too_long"): "invalid_model",
    ("timestamp", "timezone_aware"): "invalid_timestamp",
    ("timestamp", "datetime_from_date_parsing"): "invalid_timestamp",
    ("timestamp", "datetime_parsing"): "invalid_timestamp",
    ("speed", "literal_error"): "invalid_speed",
    ("session_id", "string_too_long"): "invalid_session_id",
    ("cost_usd", "greater_than_equal"): "invalid_cost",
    ("cost_usd", "less_than_equal"): "invalid_cost",
}
_BURNTOP_FIELDS = {
    "id": "message_id",
    "inputTokens": "input_tokens",
    "outputTokens": "output_tokens",
    "cacheCreationTokens": "cache_creation_5m_tokens",
    "cacheReadTokens": "cache_read_tokens",
    "reasoningTokens": "reasoning_tokens",
}


def _rejection(index: int, value: Any, adapter: TypeAdapter[Any], fields: Mapping[str, str]) -> Rejection:
    """Why `value` is not a record, as the code of its first error (fields are checked in order)."""
    try:
        adapter.validate_python(value)
    except ValidationError as error:
        items = error.errors(include_url=False)
    else:  # pragma: no cover - the batch validation refused it
        return Rejection(index=index, code="invalid_record", detail="not a valid record")
    first = items[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    field = fields.get(field, field)
    if field.endswith("_tokens") and first["type"] == "greater_than_equal":
        code = "negative_tokens"
    else:
        code = _FIELD_CODES.get((field, first["type"]), "invalid_record")
    detail = "; ".join(f"{'.'.join(str(p) for p in item['loc']) or 'record'}: {item['msg']}" for item in items[:3])
    return Rejection(index=index, code=code, detail=detail)


def _rules(
    index: int, timestamp: datetime, tokens: tuple[int, int, int, int, int, int], window: tuple[datetime, datetime]
) -> Rejection | None:
    """The rules the schema cannot express: the time window and the tokens of one record."""
    if timestamp >= window[1]:
        return Rejection(
            index=index, code="timestamp_in_future", detail="timestamp is later than the end of tomorrow (UTC)."
        )
    if timestamp < window[0]:
        return Rejection(index=index, code="timestamp_too_old", detail="timestamp is more than 400 days old.")
    if tokens[0] + tokens[1] + tokens[2] + tokens[3] + tokens[4] > MAX_TOKENS_PER_RECORD or (
        tokens[5] > MAX_TOKENS_PER_RECORD
    ):
        return Rejection(
            index=index, code="too_many_tokens", detail=f"more than {MAX_TOKENS_PER_RECORD:,} tokens in one record."
        )
    return None


def _window(now: datetime) -> tuple[datetime, datetime]:
    """Accepted timestamps: from 400 days ago to the end of tomorrow (UTC), exclusive."""
    return now - MAX_AGE, datetime.combine(now.astimezone(UTC).date() + timedelta(days=2), time(), tzinfo=UTC)


_AWARE: TypeAdapter[datetime] = TypeAdapter(AwareDatetime)


def _timestamp(value: str | datetime) -> datetime | None:
    """A wire timestamp (see `_WireTimestamp`) as an aware datetime with a `datetime.timezone`, or
    None when it is not a valid one."""
    if type(value) is str:
        try:
            return datetime.fromisoformat(value)
        except ValueError:  # in the common shape but out of range (a 13th month): pydantic decides
            try:
                value = _AWARE.validate_python(value)
            except ValidationError:
                return None
    return typing.cast(datetime, value).astimezone(UTC)


def _check_native(items: Sequence[Any], now: datetime) -> tuple[list[CleanRecord], list[Rejection]]:
    window = _window(now)
    clean: list[CleanRecord] = []
    rejected: list[Rejection] = []
    parse_iso = datetime.fromisoformat
    for index, r in enumerate(items):
        if type(r) is _Invalid:
            rejected.append(_rejection(index, r.value, _RECORD, {}))
            continue
        get = r.get
        tokens = (
            r["input_tokens"],
            r["output_tokens"],
            get("cache_creation_5m_tokens", 0),
            get("cache_creation_1h_tokens", 0),
            get("cache_read_tokens", 0),
            get("reasoning_tokens", 0),
        )
        wire = r["timestamp"]
        try:
            timestamp = parse_iso(wire) if type(wire) is str else _timestamp(wire)
        except ValueError:
            timestamp = _timestamp(wire)
        if timestamp is None:
            rejected.append(_rejection(index, r, _RECORD, {}))
            continue
        problem = _rules(index, timestamp, tokens, window)
        if problem is not None:
            rejected.append(problem)
            continue
        source, message_id, request_id = r["source"], r["message_id"], get("request_id") or ""
        cost = get("cost_usd")
        clean.append(
            CleanRecord(
                (message_id, source, request_id),
                source,
                message_id,
                request_id,
                r["model"],
                timestamp,
                tokens,
                get("speed") == "fast",
                get("session_id"),
                None if cost is None else usd_to_nanousd(cost),
            )
        )
    return clean, [_identified(item, items[item.index], "message_id", "request_id") for item in rejected]


_ECHOED_ID_LENGTH = 200


def _identified(rejection: Rejection, item: Any, message_key: str, request_key: str | None) -> Rejection:
    """The rejection with the record's own ids as sent, so a client can tell which of its records
    it is without counting (cut to 200 characters: an id too long is one reason to refuse)."""
    raw = item.value if type(item) is _Invalid else item
    if not isinstance(raw, Mapping):
        return rejection
    message_id, request_id = raw.get(message_key), raw.get(request_key) if request_key is not None else None
    return rejection.model_copy(
        update={
            "message_id": message_id[:_ECHOED_ID_LENGTH] if isinstance(message_id, str) else None,
            "request_id": request_id[:_ECHOED_ID_LENGTH] if isinstance(request_id, str) else None,
        }
    )


def _check_burntop(items: Sequence[Any], source: str, now: datetime) -> tuple[list[CleanRecord], list[Rejection]]:
    """Burntop messages as records: `id` is the message id (no request id), `cacheCreationTokens`
    are 5-minute cache writes."""
    window = _window(now)
    clean: list[CleanRecord] = []
    rejected: list[Rejection] = []
    parse_iso = datetime.fromisoformat
    for index, m in enumerate(items):
        if type(m) is _Invalid:
            rejected.append(_rejection(index, m.value, _MESSAGE, _BURNTOP_FIELDS))
            continue
        get = m.get
        tokens = (
            m["inputTokens"],
            m["outputTokens"],
            get("cacheCreationTokens", 0),
            0,
            get("cacheReadTokens", 0),
            get("reasoningTokens", 0),
        )
        wire = m["timestamp"]
        try:
            timestamp = parse_iso(wire) if type(wire) is str else _timestamp(wire)
        except ValueError:
            timestamp = _timestamp(wire)
        if timestamp is None:
            rejected.append(_rejection(index, m, _MESSAGE, _BURNTOP_FIELDS))
            continue
        problem = _rules(index, timestamp, tokens, window)
        if problem is not None:
            rejected.append(problem)
            continue
        message_id = m["id"]
        clean.append(
            CleanRecord(
                (message_id, source, ""), source, message_id, "", m["model"], timestamp, tokens, False, None, None
            )
        )
    return clean, [_identified(item, items[item.index], "id", None) for item in rejected]
