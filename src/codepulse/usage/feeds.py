"""Selectables over usage's tables for upper slices' set-based SQL (the leaderboard's recompute,
organization boards): they compose these into their own statements instead of importing usage's
models. Each returns a fresh statement; nothing here runs a query."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Select, select

from codepulse.usage.models import UsageDaily, UsageSettings

_DAILY = UsageDaily.__table__.c


def daily_rows() -> Select[Any]:
    """Every usage_daily row as (user_id, day [the user's local date], tokens, cost, cache_read,
    cache_base): `tokens` is input + output + cache writes + cache reads (reasoning is part of
    output), `cost` nano-dollars, `cache_base` input + cache reads (the denominator of cache
    efficiency, as the dashboards compute it)."""
    return select(
        _DAILY.user_id,
        _DAILY.day,
        tokens_sum().label("tokens"),
        _DAILY.cost_nanousd.label("cost"),
        _DAILY.cache_read_tokens.label("cache_read"),
        (_DAILY.input_tokens + _DAILY.cache_read_tokens).label("cache_base"),
    )


def tokens_sum() -> ColumnElement[int]:
    # Every token count but reasoning, which is part of output (as the dashboards count).
    return (
        _DAILY.input_tokens
        + _DAILY.output_tokens
        + _DAILY.cache_creation_5m_tokens
        + _DAILY.cache_creation_1h_tokens
        + _DAILY.cache_read_tokens
    )


def not_sharing_user_ids() -> Select[Any]:
    """Users who opted out of sharing their usage with their organizations."""
    return select(UsageSettings.user_id).where(UsageSettings.share_usage_with_orgs.is_(False))


def daily_usage() -> Select[Any]:
    """`usage_daily` rows as (user_id, day [the user's local date], source, model, tokens,
    input_tokens, cache_read_tokens, cost_nanousd). Filter it through `.selected_columns` (the
    conditions then reach the table's own columns) and `.subquery()` it to group or join."""
    tokens = tokens_sum()
    return select(
        _DAILY.user_id,
        _DAILY.day,
        _DAILY.source,
        _DAILY.model,
        tokens.label("tokens"),
        _DAILY.input_tokens,
        _DAILY.cache_read_tokens,
        _DAILY.cost_nanousd,
    )
