"""Dependencies the leaderboard's routes share."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from codepulse.db import DbSession
from codepulse.leaderboard.service import LeaderboardService


async def leaderboard_service(request: Request, session: DbSession) -> LeaderboardService:
    return LeaderboardService(session, request.app.state.settings, request.app.state.clock().date())


LeaderboardServiceDep = Annotated[LeaderboardService, Depends(leaderboard_service)]
