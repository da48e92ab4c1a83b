"""The shipped price table, model-name normalisation and the cost of one record."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from codepulse.usage.pricing import (
    Price,
    PriceBook,
    PriceSpec,
    PriceTable,
    nanousd_to_usd,
    normalise_model,
    price_table,
)


def _price(model: str) -> Price:
    price = price_table().prices.get(model)
    assert price is not None, model
    return price


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("Claude-Sonnet-4.5", "claude-sonnet-4-5"),
        ("anthropic/claude-3.5-sonnet", "claude-3-5-sonnet"),
        ("claude-3-5-sonnet-latest", "claude-3-5-sonnet"),
        ("us.anthropic.claude-sonnet-4-20250514-v1:0", "claude-sonnet-4"),
        ("claude-sonnet-4@20250514", "claude-sonnet-4"),
        ("claude-opus-4-6[1m]", "claude-opus-4-6"),
        ("claude-opus-4-0", "claude-opus-4"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("openai/gpt-5.1-codex", "gpt-5-1-codex"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("models/gemini-2.5-pro", "gemini-2-5-pro"),
        ("gemini-2.5-pro-preview-06-05", "gemini-2-5-pro"),
        ("  O4-MINI ", "o4-mini"),
        ("<synthetic>", "<synthetic>"),
        ("some-local-model:7b", "some-local-model:7b"),
    ],
)
def test_model_names_are_normalised_and_aliased(raw: str, key: str) -> None:
    assert price_table().model_key(raw) == key


def test_no_fuzzy_matching() -> None:
    table = price_table()
    # Near misses stay what they are: unknown, hence unpriced, never silently priced as a neighbour.
    for raw in ("claude-sonnet", "sonnet-4.5", "claude-sonnet-4-5-turbo", "gpt5"):
        assert table.model_key(raw) not in table.prices


def test_the_shipped_table_is_dated_versioned_and_complete() -> None:
    table = price_table()
    assert table.version == "2026-11-23"
    assert table.taken.isoformat() == "2026-11-23"
    providers = {price.spec.provider for price in table.prices.values()}
    assert providers == {"anthropic", "openai", "google"}
    for key, price in table.prices.items():
        assert normalise_model(key) == key
        assert price.spec.name
        assert price.base.output >= price.base.input > 0, key
    for alias, target in table.aliases.items():
        assert target in table.prices
        assert alias not in table.prices


def test_table_refuses_aliases_to_nothing_and_unnormalised_keys() -> None:
    entry = "[models.m-1]\ninput = 1\noutput = 2\ncache_write_5m = 1\ncache_write_1h = 1\ncache_read = 0.1\n"
    head = 'version = "t"\ntaken = 2026-01-01\ncurrency = "USD"\nsources = []\n'
    PriceTable.parse(head + entry)
    with pytest.raises(ValueError, match="no price"):
        PriceTable.parse(head + '[aliases]\n"m-2" = "m-3"\n' + entry)
    with pytest.raises(ValueError, match="not a normalised"):
        PriceTable.parse(head + entry.replace("m-1", '"M.1"'))
    with pytest.raises(ValidationError):
        PriceTable.parse(head + entry.replace("cache_read = 0.1", "cache_read = 0.0000001"))


def test_cost_is_exact_integer_nanodollars() -> None:
    sonnet = _price("claude-sonnet-4-5")
    # 1,000 input at $3 + 500 output at $15 per MTok = $0.0105
    cost = sonnet.cost_nanousd(1_000, 500, 0, 0, 0, fast=False)
    assert cost == 10_500_000
    assert nanousd_to_usd(cost) == Decimal("0.010500000")
    # Gemini 2.5 Flash-Lite cache reads at $0.01/MTok: 7 tokens cost 0.07 micro-dollars = 70 nano-dollars.
    assert _price("gemini-2-5-flash-lite").cost_nanousd(0, 0, 0, 0, 7, fast=False) == 70


def test_one_hour_cache_writes_cost_more_than_five_minute_writes() -> None:
    opus = _price("claude-opus-4-5")
    five = opus.cost_nanousd(0, 0, 100_000, 0, 0, fast=False)
    hour = opus.cost_nanousd(0, 0, 0, 100_000, 0, fast=False)
    assert five == 625_000_000  # $6.25 per MTok
    assert hour == 1_000_000_000  # $10 per MTok
    assert opus.cost_nanousd(0, 0, 0, 0, 100_000, fast=False) == 50_000_000  # reads $0.50


def test_long_context_rates_apply_to_the_whole_request_above_the_threshold() -> None:
    sonnet = _price("claude-sonnet-4-5")
    # Prompt = input + cache writes + cache reads = exactly 200,000: standard rates.
    at = sonnet.cost_nanousd(1_000, 2_000, 9_000, 0, 190_000, fast=False)
    assert at == (1_000 * 3_000_000 + 2_000 * 15_000_000 + 9_000 * 3_750_000 + 190_000 * 300_000) // 1000
    # One token more: every token of the request, output included, at the long-context rates.
    above = sonnet.cost_nanousd(1_001, 2_000, 9_000, 0, 190_000, fast=False)
    assert above == (1_001 * 6_000_000 + 2_000 * 22_500_000 + 9_000 * 7_500_000 + 190_000 * 600_000) // 1000
    assert above > 1.8 * at
    # Haiku 5.5's tier starts at 100k; models without long-context rates never switch.
    haiku = _price("claude-haiku-5-5")
    assert haiku.cost_nanousd(100_001, 0, 0, 0, 0, fast=False) == 100_001 * 500
    assert _price("claude-opus-4-5").cost_nanousd(900_000, 0, 0, 0, 0, fast=False) == 900_000 * 5_000


def test_fast_mode_multiplies_every_rate_where_the_model_has_one() -> None:
    opus = _price("claude-opus-4-6")
    standard = opus.cost_nanousd(1_000, 1_000, 1_000, 1_000, 1_000, fast=False)
    assert opus.cost_nanousd(1_000, 1_000, 1_000, 1_000, 1_000, fast=True) == 6 * standard
    sonnet = _price("claude-sonnet-4-5")
    assert sonnet.cost_nanousd(10, 10, 0, 0, 0, fast=True) == sonnet.cost_nanousd(10, 10, 0, 0, 0, fast=False)


def test_unknown_models_have_no_price_and_overrides_win() -> None:
    table = price_table()
    custom = PriceSpec(input=Decimal(1), output=Decimal(2), cache_write_5m=Decimal(1), cache_write_1h=Decimal(1),
                       cache_read=Decimal("0.1"))  # fmt: skip
    book = PriceBook(table, {"my-model": Price.compile("my-model", custom, source="override", version="override:x")})
    assert book.price(book.model_key("unknown-model-x")) is None
    assert book.price("my-model") is not None
    assert book.price("claude-opus-4-5") is table.prices["claude-opus-4-5"]


def test_prices_refuse_more_than_six_decimals_and_negative_rates() -> None:
    base = {"input": "1", "output": "2", "cache_write_5m": "1", "cache_write_1h": "1", "cache_read": "0.1"}
    PriceSpec.model_validate(base)
    with pytest.raises(ValidationError):
        PriceSpec.model_validate({**base, "input": "0.0000001"})
    with pytest.raises(ValidationError):
        PriceSpec.model_validate({**base, "output": "-1"})
    with pytest.raises(ValidationError):
        PriceSpec.model_validate({**base, "unknown_rate": "1"})
