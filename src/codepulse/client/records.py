"""One model response as the sync API takes it, and the run-wide dedup of what the logs repeat."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_5m_tokens",
    "cache_creation_1h_tokens",
    "cache_read_tokens",
    "reasoning_tokens",
)


class UsageRecord(msgspec.Struct, gc=False):
    """A msgspec struct, not a dataclass: built in C (a large tree makes hundreds of thousands) and
    sent between a parse pool's processes as MessagePack (`encode_records` / `decode_records`)."""

    source: str
    message_id: str
    request_id: str | None
    model: str
    timestamp: str  # ISO 8601 with an offset, as the tool wrote it
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_5m_tokens: int = 0
    cache_creation_1h_tokens: int = 0
    cache_read_tokens: int = 0
    reasoning_tokens: int = 0
    session_id: str | None = None

    @property
    def key(self) -> tuple[str, str, str | None]:
        return (self.source, self.message_id, self.request_id)

    def absorb(self, other: UsageRecord) -> None:
        """Keep the largest count of each kind: a streamed response is logged several times, the
        last line complete, and a later copy never counts less."""
        # Spelled out (no loop, no max()): a large tree repeats hundreds of thousands of lines.
        if other.input_tokens > self.input_tokens:
            self.input_tokens = other.input_tokens
        if other.output_tokens > self.output_tokens:
            self.output_tokens = other.output_tokens
        if other.cache_creation_5m_tokens > self.cache_creation_5m_tokens:
            self.cache_creation_5m_tokens = other.cache_creation_5m_tokens
        if other.cache_creation_1h_tokens > self.cache_creation_1h_tokens:
            self.cache_creation_1h_tokens = other.cache_creation_1h_tokens
        if other.cache_read_tokens > self.cache_read_tokens:
            self.cache_read_tokens = other.cache_read_tokens
        if other.reasoning_tokens > self.reasoning_tokens:
            self.reasoning_tokens = other.reasoning_tokens

    def payload(self) -> dict[str, Any]:
        """The record as `POST /api/v1/sync` takes it (nothing else leaves the machine)."""
        return msgspec.structs.asdict(self)


class RecordSet:
    """Every record of a run, each (source, message id, request id) once with its largest counts."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str, str | None], UsageRecord] = {}

    def add(self, record: UsageRecord) -> None:
        known = self._by_key.setdefault((record.source, record.message_id, record.request_id), record)
        if known is not record:
            known.absorb(record)

    def extend(self, records: Iterable[UsageRecord]) -> None:
        for record in records:
            self.add(record)

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self) -> Any:
        return iter(self._by_key.values())


_RECORDS_ENCODER = msgspec.msgpack.Encoder()
_RECORDS_DECODER = msgspec.msgpack.Decoder(list[UsageRecord])


def encode_records(records: Iterable[UsageRecord]) -> bytes:
    return _RECORDS_ENCODER.encode(list(records))


def decode_records(data: bytes) -> list[UsageRecord]:
    return _RECORDS_DECODER.decode(data)
