"""Billing's hooks on the slices below it (see `codepulse.hooks`)."""

from __future__ import annotations

from codepulse.billing.service import enforce_plan
from codepulse.orgs import quotas


def register_hooks() -> None:
    # Every quota in the product (seats, repositories, scans a month) is answered by the plan.
    quotas.on_quota_check(enforce_plan)
