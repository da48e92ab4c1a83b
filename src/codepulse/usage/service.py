"""What other domains and the CLI use of the usage domain, in one place; the rules live in the
modules named for what they do:

    sync              a CLI's batch of records applied exactly once (dedup, pricing, aggregation)
    dashboards        reads of the daily aggregates: dashboards, organization view, public stats
    sharing           whether a user's usage shows in their organizations' view
    price_overrides   the prices in force and the superusers' overrides
    repricing         stored costs recomputed with the prices in force
    metering          billable organization events, recorded and counted for billing
    feeds             selectables over usage's tables for upper slices' set-based SQL
    stats             platform figures for the superusers' statistics (sums of the aggregates)

Other domains call `record_event`, `count_events` and `shares_usage_with_orgs` inside their own
unit of work; the leaderboard builds its set-based statements on `daily_usage`, with `zone` for
users' local dates and `nanousd_to_usd` for money it renders. Nothing here commits.
"""

from __future__ import annotations

from codepulse.usage.feeds import daily_rows, daily_usage, not_sharing_user_ids
from codepulse.usage.metering import count_events, record_event
from codepulse.usage.pricing import nanousd_to_usd
from codepulse.usage.repricing import RepriceReport, reprice, reprice_database
from codepulse.usage.sharing import shares_usage_with_orgs
from codepulse.usage.stats import UsageDay, UsageStats, last_synced_at, rebuild_platform_sums, synced_since, usage_stats
from codepulse.usage.streaks import zone

__all__ = [
    "RepriceReport",
    "UsageDay",
    "UsageStats",
    "count_events",
    "daily_rows",
    "daily_usage",
    "last_synced_at",
    "nanousd_to_usd",
    "not_sharing_user_ids",
    "rebuild_platform_sums",
    "record_event",
    "reprice",
    "reprice_database",
    "shares_usage_with_orgs",
    "synced_since",
    "usage_stats",
    "zone",
]
