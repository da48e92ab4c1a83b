"""Billing's background work: applying Stripe's webhook events (`billing.stripe_event`).

`register_tasks(registry)` is found by `tasks.discover_task_handlers`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from codepulse.billing.webhooks import TASK_KIND, handle_stripe_event

if TYPE_CHECKING:
    from codepulse.tasks import TaskRegistry


def register_tasks(registry: TaskRegistry) -> None:
    registry.register(TASK_KIND, handle_stripe_event)
