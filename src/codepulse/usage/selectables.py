"""The daily aggregates as a SQL selectable, for other slices' set-based computations (the
leaderboard's benchmarks): they filter, group and join it without reading usage's models."""

from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy import Select, select

from codepulse.usage.models import UsageDaily


def daily_usage() -> Select[uuid.UUID, date, str, str, int, int, int, int]:
    """`usage_daily` rows as (user_id, day [the user's local date], source, model, tokens,
    input_tokens, cache_read_tokens, cost_nanousd). Filter it through `.selected_columns` (the
    conditions then reach the table's own columns) and `.subquery()` it to group or join."""
    # Every token count but reasoning, which is part of output (as the dashboards count).
    tokens = (
        UsageDaily.input_tokens
        + UsageDaily.output_tokens
        + UsageDaily.cache_creation_5m_tokens
        + UsageDaily.cache_creation_1h_tokens
        + UsageDaily.cache_read_tokens
    )
    return select(
        UsageDaily.user_id,
        UsageDaily.day,
        UsageDaily.source,
        UsageDaily.model,
        tokens.label("tokens"),
        UsageDaily.input_tokens,
        UsageDaily.cache_read_tokens,
        UsageDaily.cost_nanousd,
    )
