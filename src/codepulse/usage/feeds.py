"""Selectables over usage's tables for upper slices' set-based SQL (the leaderboard's recompute,
organization boards): they compose these into their own statements instead of importing usage's
models. Each returns a fresh statement; nothing here runs a query."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Select, cast, func, select

from codepulse.usage.models import UsageDaily, UsageSettings

_DAILY = UsageDaily.__table__.c


def daily_rows() -> Select[Any]:
    """Every usage_daily row as (user_id, day, tokens, cost, cache_read, cache_base), with the
    meanings of `user_day_totals` but one row per (user, day, source, model)."""
    return select(
        _DAILY.user_id,
        _DAILY.day,
        _tokens().label("tokens"),
        _DAILY.cost_nanousd.label("cost"),
        _DAILY.cache_read_tokens.label("cache_read"),
        (_DAILY.input_tokens + _DAILY.cache_read_tokens).label("cache_base"),
    )


def _tokens() -> ColumnElement[int]:
    return (
        _DAILY.input_tokens
        + _DAILY.output_tokens
        + _DAILY.cache_creation_5m_tokens
        + _DAILY.cache_creation_1h_tokens
        + _DAILY.cache_read_tokens
    )


def user_day_totals() -> Select[Any]:
    """One row per (user_id, day): `tokens` (input + output + cache writes + cache reads; reasoning
    is part of output), `cost` (nano-dollars), `cache_read` and `cache_base` (input + cache reads:
    the denominator of cache efficiency, as the dashboards compute it)."""
    tokens = _tokens()
    # Sums cast back to BIGINT: PostgreSQL sums BIGINT into NUMERIC, slow to add up again.
    return select(
        _DAILY.user_id,
        _DAILY.day,
        cast(func.sum(tokens), BigInteger).label("tokens"),
        cast(func.sum(_DAILY.cost_nanousd), BigInteger).label("cost"),
        cast(func.sum(_DAILY.cache_read_tokens), BigInteger).label("cache_read"),
        cast(func.sum(_DAILY.input_tokens + _DAILY.cache_read_tokens), BigInteger).label("cache_base"),
    ).group_by(_DAILY.user_id, _DAILY.day)


def not_sharing_user_ids() -> Select[Any]:
    """Users who opted out of sharing their usage with their organizations."""
    return select(UsageSettings.user_id).where(UsageSettings.share_usage_with_orgs.is_(False))
