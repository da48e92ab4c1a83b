"""Dependencies the usage domain's routes share."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from codepulse.db import DbSession
from codepulse.usage.service import UsageService


def usage_service(request: Request, session: DbSession) -> UsageService:
    return UsageService(session, request.app.state.settings, request.app.state.clock)


UsageServiceDep = Annotated[UsageService, Depends(usage_service)]
