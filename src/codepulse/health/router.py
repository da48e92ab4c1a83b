from __future__ import annotations

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from codepulse.health.schemas import HEALTH_CONTENT_TYPE, HealthStatus, Liveness, Readiness
from codepulse.health.service import ReadinessProbe
from codepulse.routing import DomainRouter, FastMatchRoute

# Liveness answers without I/O and readiness through its own probe: no request session, so the
# routes skip the session owner (monitoring polls them).
router = DomainRouter(prefix="/health", tags=["health"], route_class=FastMatchRoute)


class HealthJSONResponse(JSONResponse):
    media_type = HEALTH_CONTENT_TYPE


_LIVE_BODY = Liveness().model_dump_json().encode()
_NO_STORE = {"Cache-Control": "no-store"}


@router.get(
    "",
    response_model=Liveness,
    response_class=HealthJSONResponse,
    summary="Liveness: the process answers (no I/O)",
)
async def liveness() -> Response:
    return Response(_LIVE_BODY, media_type=HEALTH_CONTENT_TYPE, headers=_NO_STORE)


@router.head("", response_class=HealthJSONResponse, summary="Liveness, headers only")
async def liveness_head() -> Response:
    return Response(media_type=HEALTH_CONTENT_TYPE, headers=_NO_STORE)


async def _readiness(request: Request) -> tuple[int, Readiness]:
    probe: ReadinessProbe = request.app.state.readiness
    result = await probe.check()
    return (200 if result.status is not HealthStatus.FAIL else 503), result


@router.get(
    "/ready",
    response_model=Readiness,
    response_class=HealthJSONResponse,
    summary="Readiness: database round-trip, schema at head, scheduler running",
    responses={503: {"model": Readiness, "description": "Not ready"}},
)
async def readiness(request: Request) -> Response:
    status, result = await _readiness(request)
    return HealthJSONResponse(result.model_dump(mode="json", by_alias=True), status_code=status, headers=_NO_STORE)


@router.head("/ready", response_class=HealthJSONResponse, summary="Readiness, headers only")
async def readiness_head(request: Request) -> Response:
    status, _result = await _readiness(request)
    return Response(status_code=status, media_type=HEALTH_CONTENT_TYPE, headers=_NO_STORE)
