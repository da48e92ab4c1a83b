"""One model response as the sync API takes it, and the run-wide dedup of what the logs repeat."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_5m_tokens",
    "cache_creation_1h_tokens",
    "cache_read_tokens",
    "reasoning_tokens",
)


@dataclass(slots=True)
class UsageRecord:
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
        for name in TOKEN_FIELDS:
            if getattr(other, name) > getattr(self, name):
                setattr(self, name, getattr(other, name))

    def payload(self) -> dict[str, Any]:
        """The record as `POST /api/v1/sync` takes it (nothing else leaves the machine)."""
        return {field.name: getattr(self, field.name) for field in fields(self)}


class RecordSet:
    """Every record of a run, each (source, message id, request id) once with its largest counts."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str, str | None], UsageRecord] = {}

    def add(self, record: UsageRecord) -> None:
        known = self._by_key.get(record.key)
        if known is None:
            self._by_key[record.key] = record
        else:
            known.absorb(record)

    def extend(self, records: Iterable[UsageRecord]) -> None:
        for record in records:
            self.add(record)

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self) -> Any:
        return iter(self._by_key.values())
