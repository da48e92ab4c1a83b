"""The usage slice's reactions to events of the slices below it (see `codepulse.hooks`)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth import service as auth_service
from codepulse.auth.service import User
from codepulse.usage.repository import UsageRepository


async def take_out_of_platform_sums(session: AsyncSession, user: User) -> None:
    """An account about to be deleted (its daily aggregates and sync batches go with it, ON
    DELETE CASCADE): they leave the platform's sums in the same transaction. Under the user's
    sync lock, so a sync of theirs still running commits first and is taken out too."""
    repo = UsageRepository(session)
    await repo.lock_user(user.id)
    rows = await repo.daily_rows_of(user.id)
    syncs = await repo.sync_days_of(user.id)
    await repo.add_to_platform(
        [(day, source, model, *(-value for value in sums)) for day, source, model, *sums in rows],
        [(day, -count) for day, count in syncs],
    )


def register_hooks() -> None:
    """Called by `create_app` at start-up; registering again is a no-op."""
    auth_service.on_user_delete(take_out_of_platform_sums)
