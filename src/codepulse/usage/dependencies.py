"""Dependencies the usage domain's routes share: its services over the request session."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from codepulse.db import DbSession
from codepulse.usage.dashboards import DashboardService
from codepulse.usage.price_overrides import PriceService
from codepulse.usage.sharing import SharingService
from codepulse.usage.sync import SyncService


async def sync_service(request: Request, session: DbSession) -> SyncService:
    return SyncService(session, request.app.state.clock)


async def dashboard_service(request: Request, session: DbSession) -> DashboardService:
    return DashboardService(session, request.app.state.clock)


async def sharing_service(request: Request, session: DbSession) -> SharingService:
    return SharingService(session, request.app.state.clock)


async def price_service(request: Request, session: DbSession) -> PriceService:
    return PriceService(session, request.app.state.clock)


SyncServiceDep = Annotated[SyncService, Depends(sync_service)]
DashboardServiceDep = Annotated[DashboardService, Depends(dashboard_service)]
SharingServiceDep = Annotated[SharingService, Depends(sharing_service)]
PriceServiceDep = Annotated[PriceService, Depends(price_service)]
