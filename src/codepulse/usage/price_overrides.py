"""The prices in force (the shipped table with the superusers' overrides on top) and their
administration by superusers.

The price book a sync uses is compiled from the overrides it reads; `compiled_book` keeps the last
one compiled, keyed on the overrides' JSON text.
"""

from __future__ import annotations

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth.service import User
from codepulse.clock import ClockFunc
from codepulse.errors import NotFound
from codepulse.usage.pricing import PriceBook, PriceSpec, PriceTable, price_table
from codepulse.usage.repository import UsageRepository, parse_overrides
from codepulse.usage.schemas import PriceList, PriceOut

log = structlog.get_logger("codepulse.usage")


async def load_price_book(session: AsyncSession) -> PriceBook:
    """The shipped price table with the superusers' overrides on top."""
    return PriceBook.with_overrides(price_table(), await UsageRepository(session).price_overrides())


class _CompiledBooks:
    """The price book compiled from the overrides last read, by their exact JSON text: a sync
    reads the overrides with its lock on every batch it writes, and compiling them costs more than
    comparing the text. Keyed on the text (and the shipped table), never stale."""

    def __init__(self) -> None:
        self._last: tuple[PriceTable, str, PriceBook] | None = None

    def get(self, overrides: str) -> PriceBook:
        table = price_table()
        last = self._last
        if last is not None and last[0] is table and last[1] == overrides:
            return last[2]
        book = PriceBook.with_overrides(table, parse_overrides(overrides))
        self._last = (table, overrides, book)
        return book


_compiled_books = _CompiledBooks()


def compiled_book(overrides: str) -> PriceBook:
    """The price book of the overrides `lock_unless_stored` read, as JSON text."""
    return _compiled_books.get(overrides)


class PriceService:
    """Prices in force, and the superusers' overrides."""

    def __init__(self, session: AsyncSession, clock: ClockFunc) -> None:
        self.session = session
        self.repo = UsageRepository(session)
        self.clock = clock

    async def price_list(self) -> PriceList:
        book = await load_price_book(self.session)
        models = sorted({*book.table.prices, *book.overrides})
        table = book.table
        return PriceList(
            version=table.version,
            taken=table.taken,
            sources=list(table.sources),
            aliases=dict(table.aliases),
            items=[_price_out(book, model) for model in models],
        )

    async def price(self, model: str) -> PriceOut:
        book = await load_price_book(self.session)
        key = book.model_key(model)
        if book.price(key) is None:
            raise NotFound("model_price", f"No price for {key!r}: it is counted as unpriced (0 USD).")
        return _price_out(book, key)

    async def set_price(self, model: str, spec: PriceSpec, admin: User) -> PriceOut:
        key = price_table().model_key(model)
        await self.repo.save_price_override(key, spec.model_dump(mode="json"), admin.id, self.clock())
        log.info("usage.price_overridden", model=key, admin_id=str(admin.id))
        return _price_out(await load_price_book(self.session), key)

    async def delete_price(self, model: str, admin: User) -> None:
        key = price_table().model_key(model)
        if not await self.repo.delete_price_override(key):
            raise NotFound("price_override", f"{key!r} has no override.")
        log.info("usage.price_override_deleted", model=key, admin_id=str(admin.id))


def _price_out(book: PriceBook, model: str) -> PriceOut:
    price = book.price(model)
    if price is None:  # pragma: no cover - callers check
        raise NotFound("model_price")
    spec = price.spec
    file_price = book.table.prices.get(model)
    return PriceOut(
        model=model,
        source=price.source,
        version=price.version,
        name=spec.name,
        provider=spec.provider,
        input=spec.input,
        output=spec.output,
        cache_write_5m=spec.cache_write_5m,
        cache_write_1h=spec.cache_write_1h,
        cache_read=spec.cache_read,
        long_context=spec.long_context,
        fast_multiplier=spec.fast_multiplier,
        file_price=file_price.spec if price.source == "override" and file_price is not None else None,
    )
