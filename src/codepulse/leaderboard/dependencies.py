"""Dependencies the leaderboard's routes share."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from codepulse.db.session import RequestScope
from codepulse.leaderboard.service import LeaderboardService


async def leaderboard_service(request: Request, scope: RequestScope) -> LeaderboardService:
    # The session is made on first use: a read answered from the page cache opens none.
    return LeaderboardService(scope.session, request.app.state.settings, request.app.state.clock().date())


LeaderboardServiceDep = Annotated[LeaderboardService, Depends(leaderboard_service)]
