"""POST /api/v1/sync: dedup, growing streamed records, per-record validation, limits, gzip, auth."""

from __future__ import annotations

import gzip
import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.usage.models import UsageDaily, UsageRecord
from tests.auth.helpers import SignedIn, register
from tests.helpers import FakeClock
from tests.usage.conftest import ClientWith
from tests.usage.helpers import SYNC, body, record, streamed_lines, sync

NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.fixture
def now(clock: FakeClock) -> datetime:
    clock.now = NOON
    return NOON


async def _overview(client: httpx.AsyncClient, who: SignedIn) -> dict[str, object]:
    response = await client.get("/api/v1/dashboard/overview", headers=who.headers)
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    return result


async def test_first_sync_inserts_prices_and_totals(client: httpx.AsyncClient, now: datetime) -> None:
    ada = await register(client, "ada")
    records = [
        record("msg_a", at=now, input=1_000, output=500),  # Sonnet 4.5: $0.003 + $0.0075
        record("msg_b", at=now, model="gpt-5.1-codex", source="Codex", input=2_000, output=100, cache_read=8_000),
    ]
    result = await sync(client, ada, records)
    assert result["received"] == 2
    assert (result["inserted"], result["updated"], result["unchanged"]) == (2, 0, 0)
    assert result["rejected"] == []
    # gpt-5.1-codex: 2,000 x $1.25 + 100 x $10 + 8,000 x $0.125 per MTok = $0.0045
    assert Decimal(result["totals"]["cost_usd"]) == Decimal("0.0105") + Decimal("0.0045")
    assert result["totals"]["tokens"] == 1_500 + 10_100
    assert result["totals"]["current_streak"] == result["totals"]["longest_streak"] == 1


async def test_replaying_a_batch_changes_nothing(client: httpx.AsyncClient, now: datetime) -> None:
    ada = await register(client, "ada")
    records = [record(f"msg_{i}", at=now - timedelta(hours=i), output=10 * i + 1) for i in range(20)]
    first = await sync(client, ada, records)
    again = await sync(client, ada, records, compress=True)
    assert (again["inserted"], again["updated"], again["unchanged"]) == (0, 0, 20)
    assert again["totals"] == first["totals"]


async def test_a_stored_record_the_sample_misses_sends_the_batch_down_the_general_path(
    client: httpx.AsyncClient, now: datetime
) -> None:
    ada = await register(client, "ada")
    first = [record(f"old_{i}", at=now - timedelta(hours=i), output=100) for i in range(20)]
    await sync(client, ada, first)
    # 20 new records and, at an odd position (the sample takes every other key of these 21), one
    # stored record that grew: the insert of the whole batch fails, and nothing counts twice.
    fresh = [record(f"new_{i}", at=now - timedelta(hours=i), output=50) for i in range(20)]
    grown = record("old_3", at=now - timedelta(hours=3), output=130)
    result = await sync(client, ada, [fresh[0], grown, *fresh[1:]])
    assert (result["inserted"], result["updated"], result["unchanged"]) == (20, 1, 0)
    assert result["totals"]["tokens"] == 20 * (10 + 100) + 30 + 20 * (10 + 50)


async def test_a_batch_sent_again_later_stores_what_it_rejected_before(
    client: httpx.AsyncClient, clock: FakeClock, now: datetime
) -> None:
    """An identical batch is known by its digest only with the same rejections: the time window
    moves, and a record from the future then is valid now."""
    ada = await register(client, "ada")
    records = [record("msg_now", at=now), record("msg_later", at=now + timedelta(days=2, hours=1))]
    first = await sync(client, ada, records)
    assert first["inserted"] == 1
    assert [item["code"] for item in first["rejected"]] == ["timestamp_in_future"]
    clock.now = now + timedelta(days=1)
    later = await sync(client, ada, records)
    assert (later["inserted"], later["updated"], later["unchanged"], later["rejected"]) == (1, 0, 1, [])
    again = await sync(client, ada, records)
    assert (again["inserted"], again["updated"], again["unchanged"]) == (0, 0, 2)
    assert again["totals"] == later["totals"]


async def test_records_go_with_the_deleted_account(
    client: httpx.AsyncClient, session: AsyncSession, now: datetime
) -> None:
    ada = await register(client, "ada")
    bob = await register(client, "bob")
    for who in (ada, bob):
        await sync(client, who, [record("msg_1", at=now), record("msg_2", at=now)])
    assert (await client.delete("/api/v1/users/me", headers=ada.headers)).status_code == 204
    owners = (await session.scalars(select(UsageRecord.user_id))).all()
    assert owners == [uuid.UUID(bob.user["id"])] * 2
    assert (await session.scalars(select(UsageDaily.user_id))).all() == [uuid.UUID(bob.user["id"])]


async def test_a_streamed_response_split_across_syncs_counts_once_at_its_final_size(
    client: httpx.AsyncClient, now: datetime
) -> None:
    ada = await register(client, "ada")
    first = await sync(client, ada, streamed_lines("msg_s", now, [1, 40], cache_5m=3_000, cache_read=20_000))
    assert (first["inserted"], first["updated"]) == (1, 1)
    # The next sync sees the rest of the stream: only the growth reaches the totals.
    second = await sync(client, ada, streamed_lines("msg_s", now, [40, 388, 912], cache_5m=3_000, cache_read=20_000))
    assert (second["inserted"], second["updated"], second["unchanged"]) == (0, 2, 1)
    # An older, smaller line arriving late changes nothing.
    late = await sync(client, ada, [record("msg_s", at=now, output=388, cache_5m=3_000, cache_read=20_000)])
    assert (late["updated"], late["unchanged"]) == (0, 1)
    overview = await _overview(client, ada)
    tokens = overview["periods"]["all"]["tokens"]  # type: ignore[index]
    assert tokens == {
        "input": 10,
        "output": 912,
        "cache_creation_5m": 3_000,
        "cache_creation_1h": 0,
        "cache_read": 20_000,
        "reasoning": 0,
        "total": 23_922,
    }
    assert overview["periods"]["all"]["records"] == 1  # type: ignore[index]
    expected = (10 * 3 + 912 * 15 + 3_000 * Decimal("3.75") + 20_000 * Decimal("0.3")) / 1_000_000
    assert Decimal(late["totals"]["cost_usd"]) == expected


async def test_duplicate_log_lines_in_one_batch_keep_the_largest_of_each_count(
    client: httpx.AsyncClient, now: datetime
) -> None:
    ada = await register(client, "ada")
    lines = [
        record("msg_d", at=now, input=3, output=10, cache_read=900),
        record("msg_d", at=now, input=3, output=10, cache_read=900),  # exact duplicate line
        record("msg_d", at=now, input=3, output=250, cache_read=900),
        record("msg_d", at=now, input=3, output=120, cache_read=1_000),  # counts grow field by field
        # Same message id, another request id: a distinct billed request.
        record("msg_d", at=now, request_id="req_other", input=5, output=7),
    ]
    result = await sync(client, ada, lines)
    assert (result["inserted"], result["updated"], result["unchanged"]) == (2, 2, 1)
    tokens = (await _overview(client, ada))["periods"]["all"]["tokens"]  # type: ignore[index]
    assert (tokens["input"], tokens["output"], tokens["cache_read"]) == (8, 257, 1_000)


async def test_each_invalid_record_is_rejected_with_its_index_and_the_rest_is_stored(
    client: httpx.AsyncClient, now: datetime
) -> None:
    ada = await register(client, "ada")
    good = record("msg_ok", at=now)
    records = [
        good,
        record("msg_neg", at=now, output=-1),
        record("msg_big", at=now, input=30_000_000, cache_read=20_000_001),
        record("msg_future", at=datetime(2026, 11, 25, 0, 0, tzinfo=UTC)),
        record("msg_old", at=now - timedelta(days=401)),
        record("", at=now),
        record("msg_nomodel", at=now, model="  "),
        {**record("msg_types", at=now), "input_tokens": "12"},
        {**record("msg_naive", at=now), "timestamp": "2026-11-23T10:00:00"},
        record("msg_speed", at=now, speed="ludicrous"),
        record("x" * 201, at=now),
        {"message_id": "only-this"},
        "not an object",
        record("msg_cost", at=now, cost_usd=-2),
        record("msg_src", at=now, source=""),
        record("msg_tomorrow", at=datetime(2026, 11, 24, 23, 59, tzinfo=UTC)),  # still allowed
    ]
    result = await sync(client, ada, records)
    codes = {item["index"]: item["code"] for item in result["rejected"]}
    assert codes == {
        1: "negative_tokens",
        2: "too_many_tokens",
        3: "timestamp_in_future",
        4: "timestamp_too_old",
        5: "missing_message_id",
        6: "missing_model",
        7: "invalid_record",
        8: "invalid_timestamp",
        9: "invalid_speed",
        10: "message_id_too_long",
        11: "missing_source",
        12: "invalid_record",
        13: "invalid_cost",
        14: "missing_source",
    }
    assert all(item["detail"] for item in result["rejected"])
    assert (result["received"], result["inserted"]) == (16, 2)


async def test_unknown_sources_are_lower_cased_and_unknown_models_cost_nothing(
    client: httpx.AsyncClient, now: datetime
) -> None:
    ada = await register(client, "ada")
    result = await sync(
        client,
        ada,
        [
            record("m1", at=now, source="My-Own-Tool", model="local-llama-70b", input=1_000, output=1_000),
            record("m2", at=now, source="OpenCode", model="anthropic/claude-3.5-haiku", input=1_000, output=0),
        ],
    )
    assert Decimal(result["totals"]["cost_usd"]) == Decimal("0.0008")  # only the Haiku 3.5 input
    models = (await client.get("/api/v1/dashboard/models?range=all", headers=ada.headers)).json()
    by_model = {item["model"]: item for item in models["items"]}
    assert by_model["local-llama-70b"]["priced"] is False
    assert by_model["local-llama-70b"]["unpriced_records"] == 1
    assert Decimal(by_model["local-llama-70b"]["cost_usd"]) == 0
    assert by_model["claude-3-5-haiku"]["display_name"] == "Claude Haiku 3.5"
    assert models["unpriced_records"] == 1
    sources = (await client.get("/api/v1/dashboard/sources?range=all", headers=ada.headers)).json()
    assert {item["source"] for item in sources["items"]} == {"my-own-tool", "opencode"}


async def test_cache_write_lifetimes_long_context_and_fast_mode_are_priced_on_the_server(
    client: httpx.AsyncClient, now: datetime
) -> None:
    ada = await register(client, "ada")
    result = await sync(
        client,
        ada,
        [
            record("w5", at=now, model="claude-opus-4-5", input=0, output=0, cache_5m=1_000_000, cost_usd=1.0),
            record("w1", at=now, model="claude-opus-4-5", input=0, output=0, cache_1h=1_000_000),
            # 150k input + 60k cache reads = 210k prompt: the whole request at Sonnet 4.5's long rates.
            record("lc", at=now, model="claude-sonnet-4-5", input=150_000, output=10_000, cache_read=60_000),
            record("fast", at=now, model="claude-opus-4-6", input=1_000, output=1_000, speed="fast"),
        ],
    )
    expected = (
        Decimal("6.25")  # 5-minute writes
        + Decimal("10")  # 1-hour writes
        + (150_000 * 6 + 10_000 * Decimal("22.5") + 60_000 * Decimal("0.6")) / 1_000_000
        + (1_000 * 30 + 1_000 * 150) / Decimal(1_000_000)
    )
    assert Decimal(result["totals"]["cost_usd"]) == expected


async def test_malformed_bodies_are_one_422_problem(client: httpx.AsyncClient, ada: SignedIn) -> None:
    for payload in (b"{not json", b"[]", json.dumps({"records": []}).encode(), json.dumps(body("nope")).encode()):  # type: ignore[arg-type]
        response = await client.post(SYNC, content=payload, headers=ada.headers)
        assert response.status_code == 422, payload
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "validation_failed"
        assert response.json()["errors"]


async def test_gzip_bodies_and_their_errors(client: httpx.AsyncClient, ada: SignedIn, clock: FakeClock) -> None:
    payload = json.dumps(body([record("gz", at=clock.now)])).encode()
    headers = {**ada.headers, "content-encoding": "gzip"}
    ok = await client.post(SYNC, content=gzip.compress(payload), headers=headers)
    assert ok.status_code == 200, ok.text
    assert ok.json()["inserted"] == 1
    broken = await client.post(SYNC, content=gzip.compress(payload)[:-12], headers=headers)
    assert broken.status_code == 422
    assert broken.json()["errors"][0]["code"] == "invalid_gzip"
    brotli = await client.post(SYNC, content=payload, headers={**ada.headers, "content-encoding": "br"})
    assert brotli.status_code == 415
    assert brotli.json()["code"] == "unsupported_content_encoding"


async def test_size_and_count_limits_answer_413_problems(client_with: ClientWith, clock: FakeClock) -> None:
    async with client_with(SYNC_MAX_RECORDS=3, SYNC_MAX_BODY_BYTES=4096, SYNC_BURNTOP_MAX_BODY_BYTES=8192) as client:
        ada = await register(client, "ada")
        many = await client.post(
            SYNC, json=body([record(f"m{i}", at=clock.now) for i in range(4)]), headers=ada.headers
        )
        assert many.status_code == 413
        assert many.json()["code"] == "too_many_records"
        assert many.json()["limit_records"] == 3
        padded = body([record("m", at=clock.now, session_id="s" * 200)] * 3)
        padded["machine_id"] = "x" * 200
        padded["client"]["version"] = "1" * 50
        large = json.dumps(padded, indent=40).encode()
        assert 4096 < len(large) < 8192
        too_large = await client.post(SYNC, content=large, headers=ada.headers)
        assert too_large.status_code == 413
        assert too_large.json()["code"] == "payload_too_large"
        # A small gzip body that inflates past the limit is refused while inflating.
        bomb = gzip.compress(b"{" + b" " * 10_000_000 + b"}")
        assert len(bomb) < 20_000
        inflated = await client.post(SYNC, content=bomb, headers={**ada.headers, "content-encoding": "gzip"})
        assert inflated.status_code == 413
        assert inflated.headers["content-type"] == "application/problem+json"
        # Beyond the route's own ceiling the declared length alone is enough for a 413.
        declared = await client.post(
            SYNC, content=b"{}", headers={**ada.headers, "content-length": str(300 * 1024 * 1024)}
        )
        assert declared.status_code == 413
        assert declared.json()["code"] == "payload_too_large"


async def test_sync_needs_a_valid_bearer_token(client: httpx.AsyncClient, clock: FakeClock) -> None:
    anonymous = await client.post(SYNC, json=body([record("m", at=clock.now)]))
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    forged = await client.post(
        SYNC, json=body([record("m", at=clock.now)]), headers={"Authorization": "Bearer cp_forged"}
    )
    assert forged.status_code == 401
    assert forged.json()["code"] == "invalid_token"


async def test_a_cli_token_can_sync(client: httpx.AsyncClient, ada: SignedIn, clock: FakeClock) -> None:
    issued = await client.post(
        "/api/v1/auth/tokens", headers=ada.headers, json={"name": "laptop", "expires_in_days": 30}
    )
    assert issued.status_code == 201, issued.text
    cli = SignedIn(issued.json()["token"], ada.user)
    assert (await sync(client, cli, [record("m", at=clock.now)]))["inserted"] == 1


async def test_syncs_are_rate_limited_per_user(client_with: ClientWith, clock: FakeClock) -> None:
    async with client_with(SYNC_RATE_LIMIT="2/minute") as client:
        ada = await register(client, "ada")
        bob = await register(client, "bob")
        for _ in range(2):
            await sync(client, ada, [record("m", at=clock.now)])
        limited = await client.post(SYNC, json=body([record("m", at=clock.now)]), headers=ada.headers)
        assert limited.status_code == 429
        assert limited.json()["code"] == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 1
        await sync(client, bob, [record("m", at=clock.now)])  # another user is not affected


async def test_records_are_private_to_their_user(client: httpx.AsyncClient, now: datetime) -> None:
    ada = await register(client, "ada")
    bob = await register(client, "bob")
    same = [record("msg_shared_id", at=now, output=100)]
    await sync(client, ada, same)
    result = await sync(client, bob, same)
    assert result["inserted"] == 1  # the dedup key includes the user
    assert result["totals"]["tokens"] == 110


def test_the_fast_record_types_match_the_documented_schemas() -> None:
    """Batches are validated into TypedDicts for speed; they must accept what the documented
    models describe, field for field, with the same required fields."""
    from pydantic import TypeAdapter, ValidationError

    from codepulse.usage.ingest import _MessageDict, _RecordDict, _WireMessageDict, _WireRecordDict
    from codepulse.usage.schemas import BurntopMessageIn, UsageRecordIn

    # The wire types only parse timestamps differently.
    assert _WireRecordDict.__annotations__.keys() == _RecordDict.__annotations__.keys()
    assert _WireMessageDict.__annotations__.keys() == _MessageDict.__annotations__.keys()

    samples = {"timestamp": "2026-11-23T10:00:00+01:00", "source": "codex", "model": "gpt-5", "id": "m"}
    for fast, documented in ((_RecordDict, UsageRecordIn), (_MessageDict, BurntopMessageIn)):
        assert set(fast.__annotations__) == set(documented.model_fields)
        required = {name for name, info in documented.model_fields.items() if info.is_required()}
        minimal = {name: samples.get(name, 1 if name.endswith(("tokens", "Tokens")) else "x") for name in required}
        adapter = TypeAdapter(fast)
        adapter.validate_python(minimal)
        documented.model_validate(minimal)
        for name in required:
            with pytest.raises(ValidationError):
                adapter.validate_python({key: value for key, value in minimal.items() if key != name})


async def test_openapi_documents_both_sync_bodies_and_answers(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    operation = document["paths"]["/api/v1/sync"]["post"]
    assert operation["operationId"] == "usage_sync"
    bodies = operation["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert {"records", "machine_id"} <= set(bodies[0]["properties"])
    assert {"messages", "version"} <= set(bodies[1]["properties"])
    assert bodies[0]["properties"]["records"]["items"]["properties"]["input_tokens"]["minimum"] == 0
    answers = str(operation["responses"]["200"])
    assert "SyncOut" in answers
    assert "BurntopSyncOut" in answers
    assert "as the provider bills them" in operation["description"]
