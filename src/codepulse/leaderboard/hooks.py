"""The leaderboard's reactions to events of the slices below it (see `codepulse.hooks`): a
profile changed (made private, renamed) or deleted drops this process's cached board pages once
the change commits, so the boards leave it out at once (other replicas within
LEADERBOARD_CACHE_SECONDS)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from codepulse import events
from codepulse.auth import service as auth_service
from codepulse.auth.service import User
from codepulse.db import after_commit
from codepulse.leaderboard.best_rank import best_ranks
from codepulse.leaderboard.cache import board_cache


async def forget_cached_boards(session: AsyncSession, _user: User) -> None:
    after_commit(session, board_cache.clear)


def register_hooks() -> None:
    """Called by `create_app` at start-up; registering again is a no-op."""
    auth_service.on_user_update(forget_cached_boards)
    auth_service.on_user_delete(forget_cached_boards)
    events.provide_best_ranks(best_ranks)
