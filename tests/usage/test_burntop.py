"""The Burntop CLI's v2 body on POST /api/v1/sync, answered in Burntop's shape."""

from __future__ import annotations

import copy
import gzip
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.auth.helpers import SignedIn, register
from tests.helpers import FakeClock
from tests.usage.conftest import ClientWith
from tests.usage.helpers import SYNC, record, sync

NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

# What burntop-cli 2.x posts after reading ~/.claude/projects/**/*.jsonl.
BURNTOP_REQUEST: dict[str, Any] = {
    "version": "2.0.0",
    "client": "burntop-cli",
    "machineId": "5c0f3a52-1d8e-4b8f-9d76-2a1e6f0b9c11",
    "syncedAt": "2026-11-23T11:58:03.417Z",
    "source": "claude-code",
    "messages": [
        {
            "id": "msg_01HvQ3m8Xk2bYzP4tWcR7nLd",
            "timestamp": "2026-11-23T09:12:44.120Z",
            "model": "claude-sonnet-4-5-20250929",
            "inputTokens": 8,
            "outputTokens": 412,
            "cacheCreationTokens": 2311,
            "cacheReadTokens": 40122,
            "reasoningTokens": 0,
        },
        {
            "id": "msg_01JpX9a2Lm4cQ7rT5vBn8eKs",
            "timestamp": "2026-11-23T09:14:02.981Z",
            "model": "claude-opus-4-5-20251101",
            "inputTokens": 3,
            "outputTokens": 1290,
            "cacheCreationTokens": 0,
            "cacheReadTokens": 42433,
            "reasoningTokens": 0,
        },
        {
            "id": "msg_01Kc6dR1Tz8wN3pF2hYq5uVa",
            "timestamp": "2026-11-22T23:50:19.004Z",
            "model": "claude-haiku-4-5-20251001",
            "inputTokens": 1532,
            "outputTokens": 87,
            "cacheCreationTokens": 0,
            "cacheReadTokens": 0,
            "reasoningTokens": 0,
        },
    ],
}
TOTAL_TOKENS = (8 + 412 + 2311 + 40122) + (3 + 1290 + 42433) + (1532 + 87)


@pytest.fixture
def noon(clock: FakeClock) -> datetime:
    clock.now = NOON
    return NOON


async def _post(client: httpx.AsyncClient, who: SignedIn, payload: dict[str, Any]) -> httpx.Response:
    return await client.post(SYNC, json=payload, headers=who.headers)


async def test_the_burntop_request_is_answered_in_its_shape(client: httpx.AsyncClient, noon: datetime) -> None:
    ada = await register(client, "ada")
    response = await _post(client, ada, BURNTOP_REQUEST)
    assert response.status_code == 200, response.text
    answer = response.json()
    # The fields burntop-cli reads.
    assert answer["success"] is True
    assert isinstance(answer["message"], str)
    assert answer["message"]
    assert answer["messagesReceived"] == 3
    assert answer["messagesSynced"] == 3
    assert answer["newRecords"] == 3
    assert answer["updatedRecords"] == 0
    assert answer["stats"]["totalTokens"] == TOTAL_TOKENS
    assert answer["stats"]["currentStreak"] == 2  # 22 and 23 November
    assert set(answer) >= {"recordsProcessed", "newAchievements"}
    assert answer["stats"]["achievementsUnlocked"] == 0
    assert answer["newAchievements"] == []
    assert isinstance(answer["stats"]["totalCost"], float)
    assert answer["stats"]["totalCost"] > 0
    assert answer["stats"]["longestStreak"] == 2


async def test_burntop_replays_and_growth_use_the_same_dedup(client: httpx.AsyncClient, noon: datetime) -> None:
    ada = await register(client, "ada")
    await _post(client, ada, BURNTOP_REQUEST)
    replay = (await _post(client, ada, BURNTOP_REQUEST)).json()
    assert (replay["messagesSynced"], replay["newRecords"], replay["updatedRecords"]) == (0, 0, 0)
    assert replay["stats"]["totalTokens"] == TOTAL_TOKENS
    grown = copy.deepcopy(BURNTOP_REQUEST)
    grown["messages"][0]["outputTokens"] = 900
    answer = (await _post(client, ada, grown)).json()
    assert (answer["newRecords"], answer["updatedRecords"]) == (0, 1)
    assert answer["stats"]["totalTokens"] == TOTAL_TOKENS + 488
    # A native record with the same message id and no request id is the same record.
    native = record(
        "msg_01HvQ3m8Xk2bYzP4tWcR7nLd", at=noon, request_id="", input=8, output=900, cache_5m=2311, cache_read=40122
    )
    assert (await sync(client, ada, [native]))["unchanged"] == 1


async def test_burntop_messages_are_validated_one_by_one(client: httpx.AsyncClient, noon: datetime) -> None:
    ada = await register(client, "ada")
    payload = copy.deepcopy(BURNTOP_REQUEST)
    payload["messages"][1]["outputTokens"] = -5
    payload["messages"][2]["model"] = ""
    answer = (await _post(client, ada, payload)).json()
    assert answer["success"] is True
    assert (answer["messagesReceived"], answer["recordsProcessed"], answer["newRecords"]) == (3, 1, 1)
    assert "2 rejected" in answer["message"]


async def test_burntop_invalid_token_is_401(client: httpx.AsyncClient) -> None:
    response = await client.post(SYNC, json=BURNTOP_REQUEST, headers={"Authorization": "Bearer not-a-token"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_burntop_has_its_own_larger_limits(client_with: ClientWith, noon: datetime) -> None:
    async with client_with(SYNC_MAX_RECORDS=2, SYNC_BURNTOP_MAX_MESSAGES=3) as client:
        ada = await register(client, "ada")
        # Three messages: over the native limit of 2, within Burntop's.
        assert (await _post(client, ada, BURNTOP_REQUEST)).status_code == 200
        four = copy.deepcopy(BURNTOP_REQUEST)
        four["messages"].append({**four["messages"][0], "id": "msg_4"})
        refused = await _post(client, ada, four)
        assert refused.status_code == 413
        assert refused.json()["code"] == "too_many_records"


async def test_a_malformed_burntop_envelope_is_422(client: httpx.AsyncClient, ada: SignedIn) -> None:
    payload = {**BURNTOP_REQUEST, "version": "1.4.0"}
    response = await _post(client, ada, payload)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body.version"
    missing = {key: value for key, value in BURNTOP_REQUEST.items() if key != "source"}
    assert (await _post(client, ada, missing)).status_code == 422


async def test_a_large_burntop_upload_is_processed_in_chunks_in_one_transaction(
    client: httpx.AsyncClient, noon: datetime
) -> None:
    """5,000 messages (a body over 1 MB, parsed off the event loop) where the last 500 repeat the
    first 500 with more output: duplicates across the 1,000-record write chunks are merged."""
    ada = await register(client, "ada")
    base = BURNTOP_REQUEST["messages"][0]
    messages = [{**base, "id": f"msg_{i:05d}", "outputTokens": 10} for i in range(4_500)]
    messages += [{**base, "id": f"msg_{i:05d}", "outputTokens": 20} for i in range(500)]
    payload = {**BURNTOP_REQUEST, "messages": messages}
    body = gzip.compress(json.dumps(payload).encode())
    assert len(json.dumps(payload)) > 1_048_576
    response = await client.post(SYNC, content=body, headers={**ada.headers, "content-encoding": "gzip"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["messagesReceived"], answer["newRecords"], answer["updatedRecords"]) == (5_000, 4_500, 500)
    per_message = 8 + 2311 + 40122
    assert answer["stats"]["totalTokens"] == 4_500 * per_message + 4_000 * 10 + 500 * 20
