"""Dependencies the leaderboard's routes share."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from codepulse.db.session import request_session_scope
from codepulse.leaderboard.service import LeaderboardService


def service_of(request: Request) -> LeaderboardService:
    """The request's service. Its session is made on first use: a read answered from the page
    cache opens none."""
    state = request.app.state
    return LeaderboardService(request_session_scope(request).session, state.settings, state.clock().date())


async def leaderboard_service(request: Request) -> LeaderboardService:
    return service_of(request)


LeaderboardServiceDep = Annotated[LeaderboardService, Depends(leaderboard_service)]
