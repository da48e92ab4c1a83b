"""Model prices: the versioned table shipped in `pricing.toml`, superuser overrides, model-name
normalisation, and the cost of one record.

Units. Prices are `Decimal` USD per million tokens (at most 6 decimal places). Internally a rate
is an integer number of pico-dollars (10^-12 USD) per token, which is the same number as
micro-dollars per million tokens, so a record's cost is exact integer arithmetic; it is rounded
once, half up, to nano-dollars (10^-9 USD), the unit costs are stored in.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from codepulse.text import Line

RATE_FIELDS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
DEFAULT_LONG_CONTEXT_THRESHOLD = 200_000
PICO_PER_NANO = 1000
NANO_PER_USD = 1_000_000_000
PRICING_FILE = "pricing.toml"
MODEL_KEY_MEMO_SIZE = 10_000  # raw model names a PriceBook remembers the key of
_NANO = Decimal("0.000000001")

Rate = Annotated[
    Decimal, Field(ge=0, le=1_000_000, decimal_places=6, description="USD per million tokens.", examples=["3.75"])
]


class RatesSpec(BaseModel):
    """The five rates of one pricing tier, in USD per million tokens."""

    model_config = ConfigDict(extra="forbid")

    input: Rate = Field(description="Input tokens that were neither written to nor read from a cache.")
    output: Rate = Field(description="Output tokens, reasoning included.")
    cache_write_5m: Rate = Field(description="Prompt-cache writes with a 5-minute lifetime.")
    cache_write_1h: Rate = Field(description="Prompt-cache writes with a 1-hour lifetime.")
    cache_read: Rate = Field(description="Prompt-cache hits.")


class LongContextSpec(RatesSpec):
    threshold: int = Field(
        default=DEFAULT_LONG_CONTEXT_THRESHOLD,
        gt=0,
        description="A request whose prompt (input + cache writes + cache reads) exceeds this many tokens "
        "is billed entirely at these rates.",
    )


class PriceSpec(RatesSpec):
    """A model's prices: an entry of `pricing.toml`, or a superuser's override."""

    name: Line | None = Field(default=None, max_length=100, description="Display name, e.g. `Claude Opus 4.5`.")
    provider: Line | None = Field(default=None, max_length=50)
    long_context: LongContextSpec | None = None
    fast_multiplier: Decimal | None = Field(
        default=None, ge=1, le=100, decimal_places=3, description="Multiplies every rate of a fast-mode request."
    )


@dataclass(frozen=True, slots=True)
class Rates:
    """Pico-dollars per token."""

    input: int
    output: int
    cache_write_5m: int
    cache_write_1h: int
    cache_read: int

    @classmethod
    def of(cls, spec: RatesSpec, multiplier: Decimal = Decimal(1)) -> Rates:
        def pico(value: Decimal) -> int:
            return int((value * multiplier * 1_000_000).to_integral_value())

        return cls(*(pico(getattr(spec, name)) for name in RATE_FIELDS))


@dataclass(frozen=True, slots=True)
class Price:
    """A model's compiled prices and where they come from."""

    model: str
    spec: PriceSpec
    source: Literal["file", "override"]
    version: str
    base: Rates
    fast: Rates
    long: Rates | None
    long_fast: Rates | None
    long_threshold: int

    @classmethod
    def compile(cls, model: str, spec: PriceSpec, *, source: Literal["file", "override"], version: str) -> Price:
        fast = spec.fast_multiplier or Decimal(1)
        long = spec.long_context
        return cls(
            model=model,
            spec=spec,
            source=source,
            version=version,
            base=Rates.of(spec),
            fast=Rates.of(spec, fast),
            long=Rates.of(long) if long else None,
            long_fast=Rates.of(long, fast) if long else None,
            long_threshold=long.threshold if long else 0,
        )

    def cost_nanousd(
        self, input: int, output: int, cache_write_5m: int, cache_write_1h: int, cache_read: int, *, fast: bool
    ) -> int:
        """The cost of one request. Above the long-context threshold every token of the request is
        billed at the long-context rates; fast mode multiplies the rates of whichever tier applies."""
        rates = self.fast if fast else self.base
        if self.long is not None and input + cache_write_5m + cache_write_1h + cache_read > self.long_threshold:
            rates = self.long_fast if fast and self.long_fast is not None else self.long
        pico = (
            input * rates.input
            + output * rates.output
            + cache_write_5m * rates.cache_write_5m
            + cache_write_1h * rates.cache_write_1h
            + cache_read * rates.cache_read
        )
        return (pico + PICO_PER_NANO // 2) // PICO_PER_NANO


# --- model names -------------------------------------------------------------------------------

_BRACKET_SUFFIX = re.compile(r"\[[^\]]*\]$")  # claude-opus-4-6[1m]: Claude Code's 1M-context marker
_BEDROCK_PREFIX = re.compile(r"^(?:[a-z]{2,4}\.)?anthropic\.")  # us.anthropic.claude-...
_BEDROCK_VERSION = re.compile(r"-v\d+(?::\d+)?$")  # ...-v1:0
_VERTEX_VERSION = re.compile(r"@.*$")  # claude-sonnet-4@20250514
_VERSION_DOT = re.compile(r"(?<=\d)\.(?=\d)")  # 4.5 -> 4-5
_DATE_SUFFIX = re.compile(r"-(?:\d{8}|\d{4}-\d{2}-\d{2})$")  # -20250929, -2025-08-07


def normalise_model(raw: str) -> str:
    """A model name as pricing and aggregates key it, without the alias table: lower case, no
    provider prefix (`anthropic/`, `models/`, Bedrock's `us.anthropic.`), no date or deployment
    suffix (`-20250929`, `-2025-08-07`, `@20250514`, `-v1:0`, `[1m]`), dotted versions written
    with a dash (`claude-3.5-sonnet` -> `claude-3-5-sonnet`)."""
    name = raw.strip().lower()
    name = _BRACKET_SUFFIX.sub("", name)
    name = name.rsplit("/", 1)[-1]
    name = _BEDROCK_PREFIX.sub("", name)
    name = _BEDROCK_VERSION.sub("", name)
    name = _VERTEX_VERSION.sub("", name)
    name = _VERSION_DOT.sub("-", name)
    return _DATE_SUFFIX.sub("", name).strip() or raw.strip().lower()


class _PricingFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(min_length=1, max_length=30)
    taken: date
    currency: Literal["USD"]
    sources: list[str]
    aliases: dict[str, str] = Field(default_factory=dict)
    models: dict[str, PriceSpec]


@dataclass(frozen=True)
class PriceTable:
    """The shipped price list: prices by normalised name, aliases, and its version."""

    version: str
    taken: date
    sources: tuple[str, ...]
    prices: Mapping[str, Price]
    aliases: Mapping[str, str]

    @classmethod
    def parse(cls, text: str) -> PriceTable:
        data = _PricingFile.model_validate(tomllib.loads(text, parse_float=Decimal))
        for key in [*data.models, *data.aliases]:
            if normalise_model(key) != key:
                raise ValueError(f"pricing: {key!r} is not a normalised model name ({normalise_model(key)!r})")
        for alias, target in data.aliases.items():
            if alias in data.models:
                raise ValueError(f"pricing: alias {alias!r} is also a priced model")
            if target not in data.models:
                raise ValueError(f"pricing: alias {alias!r} points at {target!r}, which has no price")
        prices = {
            key: Price.compile(key, spec, source="file", version=data.version) for key, spec in data.models.items()
        }
        return cls(data.version, data.taken, tuple(data.sources), prices, dict(data.aliases))

    def model_key(self, raw: str) -> str:
        """The key a model name is priced and aggregated under (normalised, then aliased)."""
        name = normalise_model(raw)
        return self.aliases.get(name, name)


@cache
def price_table() -> PriceTable:
    """The price list shipped in the package (read once per process)."""
    text = resources.files("codepulse.usage").joinpath(PRICING_FILE).read_text(encoding="utf-8")
    return PriceTable.parse(text)


def override_version(updated_at: datetime) -> str:
    return f"override:{updated_at:%Y%m%dT%H%M%SZ}"


class PriceBook:
    """The prices in force: the shipped table, with superuser overrides on top."""

    def __init__(self, table: PriceTable, overrides: Mapping[str, Price]) -> None:
        self.table = table
        self.overrides = overrides
        self._keys: dict[str, str] = {}

    @classmethod
    def with_overrides(cls, table: PriceTable, rows: list[tuple[str, dict[str, Any], datetime]]) -> PriceBook:
        overrides = {
            model: Price.compile(
                model, PriceSpec.model_validate(price), source="override", version=override_version(updated_at)
            )
            for model, price, updated_at in rows
        }
        return cls(table, overrides)

    def model_key(self, raw: str) -> str:
        key = self._keys.get(raw)
        if key is None:
            if len(self._keys) >= MODEL_KEY_MEMO_SIZE:
                # A book lives as long as the overrides it was compiled from (see the sync), and
                # model names come from clients: the memo must not grow without bound.
                self._keys.clear()
            key = self._keys[raw] = self.table.model_key(raw)
        return key

    def price(self, model_key: str) -> Price | None:
        return self.overrides.get(model_key) or self.table.prices.get(model_key)

    def display_name(self, model_key: str) -> str | None:
        price = self.price(model_key)
        return price.spec.name if price is not None else None


def nanousd_to_usd(nanousd: int) -> Decimal:
    """Nano-dollars as a USD Decimal with 9 decimal places (exact)."""
    return Decimal(nanousd).scaleb(-9).quantize(_NANO)


def usd_to_nanousd(usd: Decimal) -> int:
    return int((usd * NANO_PER_USD).to_integral_value())
