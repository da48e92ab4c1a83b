"""Builders of realistic usage records and a sync helper.

The records mimic what the CLIs read from local logs: Claude Code writes several JSONL lines per
response (same message and request id, output growing while it streams), Codex and Gemini CLI
report cached tokens inside input (the client has already subtracted them here).
"""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timedelta
from typing import Any

import httpx

from tests.auth.helpers import SignedIn

SYNC = "/api/v1/sync"
CLIENT = {"name": "codepulse-cli", "version": "0.9.0"}


def record(
    message_id: str,
    *,
    at: datetime,
    source: str = "claude-code",
    request_id: str | None = None,
    model: str = "claude-sonnet-4-5-20250929",
    input: int = 10,
    output: int = 100,
    cache_5m: int = 0,
    cache_1h: int = 0,
    cache_read: int = 0,
    reasoning: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "source": source,
        "message_id": message_id,
        "request_id": request_id if request_id is not None else f"req_{message_id}",
        "model": model,
        "timestamp": at.isoformat(),
        "input_tokens": input,
        "output_tokens": output,
        "cache_creation_5m_tokens": cache_5m,
        "cache_creation_1h_tokens": cache_1h,
        "cache_read_tokens": cache_read,
        "reasoning_tokens": reasoning,
        **extra,
    }


def body(records: list[Any], machine_id: str = "machine-1") -> dict[str, Any]:
    return {"client": CLIENT, "machine_id": machine_id, "records": records}


async def sync(
    client: httpx.AsyncClient,
    who: SignedIn,
    records: list[Any],
    *,
    compress: bool = False,
    expect: int = 200,
) -> dict[str, Any]:
    payload = json.dumps(body(records)).encode()
    headers = {**who.headers, "content-type": "application/json"}
    if compress:
        payload = gzip.compress(payload)
        headers["content-encoding"] = "gzip"
    response = await client.post(SYNC, content=payload, headers=headers)
    assert response.status_code == expect, response.text
    result: dict[str, Any] = response.json()
    return result


def streamed_lines(message_id: str, at: datetime, outputs: list[int], **fields: Any) -> list[dict[str, Any]]:
    """Claude Code's lines for one streamed response: same ids, output growing line by line."""
    return [
        record(message_id, at=at + timedelta(milliseconds=i), output=out, **fields) for i, out in enumerate(outputs)
    ]


def usd(value: str | float) -> float:
    return float(value)
