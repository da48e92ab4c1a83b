"""HTTP endpoints of the usage domain: /sync, /dashboard, /orgs/{org}/usage, /users/{username}/stats,
/usage/settings, and the superusers' /admin/pricing."""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import Header, Path, Query, Request, Response, status

from codepulse.auth.dependencies import CurrentUser, Limiter, OptionalUser, Superuser
from codepulse.config import SYNC_BODY_BYTES_CEILING, Settings
from codepulse.orgs.dependencies import OrgAdmin, OrgServiceDep
from codepulse.query import inline_schema
from codepulse.ratelimit import Rule
from codepulse.routing import DomainRouter
from codepulse.usage.dependencies import DashboardServiceDep, PriceServiceDep, SharingServiceDep, SyncServiceDep
from codepulse.usage.ingest import SyncLimits, parse_batch
from codepulse.usage.pricing import PriceSpec, nanousd_to_usd
from codepulse.usage.schemas import (
    COUNTING_RULES,
    BurntopStats,
    BurntopSyncIn,
    BurntopSyncOut,
    Granularity,
    ModelBreakdown,
    OrgUsage,
    Overview,
    PriceList,
    PriceOut,
    PublicStats,
    Range,
    SourceBreakdown,
    SyncIn,
    SyncOut,
    SyncTotals,
    Trends,
    UsageSettingsOut,
    UsageSettingsUpdate,
)
from codepulse.usage.sync import SyncResult
from codepulse.usage.upload import read_body

router = DomainRouter(tags=["usage"])
pricing_router = DomainRouter(prefix="/admin/pricing", tags=["pricing"])

# Bodies larger than this (decompressed) are parsed and checked in a worker thread, so a large
# upload does not stall the event loop.
THREAD_THRESHOLD_BYTES = 1_048_576

RangeParam = Annotated[Range, Query(alias="range", description="`7d`, `30d`, `90d`, `365d` or `all`.")]
ModelParam = Annotated[str, Path(min_length=1, max_length=200, description="A model name; normalised.")]


_SYNC_BODY = {
    "requestBody": {
        "required": True,
        "description": "The codepulse CLI's body, or the Burntop CLI's v2 body (detected by its `messages`); "
        "either may be sent with `Content-Encoding: gzip`.",
        "content": {"application/json": {"schema": {"oneOf": [inline_schema(SyncIn), inline_schema(BurntopSyncIn)]}}},
    }
}


def _native_out(result: SyncResult) -> SyncOut:
    return SyncOut(
        received=result.batch.received,
        inserted=result.inserted,
        updated=result.updated,
        unchanged=result.unchanged,
        rejected=result.batch.rejected,
        totals=SyncTotals(
            tokens=result.total_tokens,
            cost_usd=nanousd_to_usd(result.total_cost_nanousd),
            current_streak=result.streaks.current,
            longest_streak=result.streaks.longest,
        ),
    )


def _burntop_out(result: SyncResult) -> BurntopSyncOut:
    batch = result.batch
    synced = result.inserted + result.updated
    message = f"Synced {synced:,} of {batch.received:,} messages ({result.inserted:,} new, {result.updated:,} updated)"
    if batch.rejected:
        message += f"; {len(batch.rejected):,} rejected as invalid"
    return BurntopSyncOut(
        success=True,
        message=message + ".",
        messagesReceived=batch.received,
        messagesSynced=synced,
        recordsProcessed=batch.received - len(batch.rejected),
        newRecords=result.inserted,
        updatedRecords=result.updated,
        stats=BurntopStats(
            totalTokens=result.total_tokens,
            totalCost=float(nanousd_to_usd(result.total_cost_nanousd)),
            currentStreak=result.streaks.current,
            longestStreak=result.streaks.longest,
        ),
    )


@router.post(
    "/sync",
    summary="Upload usage records from a CLI (codepulse or Burntop)",
    description=(
        "Bearer token of a web or CLI session. Records are deduplicated on (source, message_id, request_id): "
        "a record seen again with larger token counts replaces the stored one (the largest value of each count "
        "is kept) and only the difference reaches the totals; equal or smaller counts change nothing, so "
        "replaying a batch is harmless. Each invalid record is reported in `rejected` with its index and a "
        "reason; the others are stored. Costs are computed on the server.\n\n"
        f"{COUNTING_RULES}\n\n"
        "Limits: 5,000 records and 10 MB (decompressed) per request for the codepulse shape, 100,000 messages "
        "and 50 MB for the Burntop shape (configurable); beyond, 413 `payload_too_large` or "
        "`too_many_records`: split the upload. Syncs are rate-limited per user (429 with Retry-After). "
        "A Burntop body (`version` 2.x, `messages`) is answered in Burntop's shape."
    ),
    max_body_size=SYNC_BODY_BYTES_CEILING,
    openapi_extra=_SYNC_BODY,
)
async def sync(
    request: Request,
    user: CurrentUser,
    service: SyncServiceDep,
    limiter: Limiter,
    content_encoding: Annotated[
        str | None, Header(description="`gzip` to send a compressed body; omit otherwise.")
    ] = None,
) -> SyncOut | BurntopSyncOut:
    settings: Settings = request.app.state.settings
    await limiter.hit([Rule("sync:user", str(user.id), settings.SYNC_RATE_LIMIT)])
    limits = SyncLimits.of(settings)
    body = await read_body(request.stream(), content_encoding, limits.max_any_body_bytes)
    now = service.clock()
    if len(body) > THREAD_THRESHOLD_BYTES:
        batch = await anyio.to_thread.run_sync(parse_batch, body, limits, now)
    else:
        batch = parse_batch(body, limits, now)
    result = await service.sync(user, batch)
    return _burntop_out(result) if batch.shape == "burntop" else _native_out(result)


# --- dashboards ----------------------------------------------------------------------------


@router.get("/dashboard/overview", summary="My usage today, over 7 and 30 days and all time, with streaks")
async def dashboard_overview(user: CurrentUser, service: DashboardServiceDep) -> Overview:
    """Days are the local dates of the time zone you had when each record was first synced;
    changing your time zone later does not move past usage."""
    return await service.overview(user)


@router.get("/dashboard/trends", summary="My usage per day or week, zero-filled")
async def dashboard_trends(
    user: CurrentUser,
    service: DashboardServiceDep,
    range_: RangeParam = Range.D30,
    granularity: Granularity = Granularity.DAY,
) -> Trends:
    return await service.trends(user, range_, granularity)


@router.get("/dashboard/sources", summary="My usage per tool (Claude Code, Codex, ...)")
async def dashboard_sources(
    user: CurrentUser, service: DashboardServiceDep, range_: RangeParam = Range.D30
) -> SourceBreakdown:
    return await service.sources(user, range_)


@router.get("/dashboard/models", summary="My usage per model, with shares and unpriced counts")
async def dashboard_models(
    user: CurrentUser, service: DashboardServiceDep, range_: RangeParam = Range.D30
) -> ModelBreakdown:
    return await service.models(user, range_)


# --- organizations, public stats, settings -----------------------------------------------


@router.get("/orgs/{org}/usage", summary="Usage of the organization's members who share it (admin+)")
async def org_usage(
    access: OrgAdmin, orgs: OrgServiceDep, service: DashboardServiceDep, range_: RangeParam = Range.D30
) -> OrgUsage:
    """Members who turned `share_usage_with_orgs` off are left out (and counted in
    `members_not_sharing`)."""
    return await service.org_usage(access, orgs, range_)


@router.get("/users/{username}/stats", summary="A user's public usage stats")
async def public_stats(
    username: Annotated[str, Path(min_length=1, max_length=30)], viewer: OptionalUser, service: DashboardServiceDep
) -> PublicStats:
    """404 unless the profile is public (or it is yours)."""
    return await service.public_stats(username, viewer)


@router.get("/usage/settings", summary="My usage settings")
async def get_settings(user: CurrentUser, service: SharingServiceDep) -> UsageSettingsOut:
    return UsageSettingsOut(share_usage_with_orgs=await service.share_setting(user))


@router.patch("/usage/settings", summary="Change my usage settings")
async def update_settings(body: UsageSettingsUpdate, user: CurrentUser, service: SharingServiceDep) -> UsageSettingsOut:
    share = body.share_usage_with_orgs
    if share is None:
        return UsageSettingsOut(share_usage_with_orgs=await service.share_setting(user))
    return UsageSettingsOut(share_usage_with_orgs=await service.set_share_setting(user, share))


# --- pricing (superusers) --------------------------------------------------------------------


@pricing_router.get("", summary="Every model price in force (superuser)")
async def list_prices(_admin: Superuser, service: PriceServiceDep) -> PriceList:
    return await service.price_list()


@pricing_router.get("/{model:path}", summary="A model's price in force (superuser)")
async def get_price(model: ModelParam, _admin: Superuser, service: PriceServiceDep) -> PriceOut:
    return await service.price(model)


@pricing_router.put("/{model:path}", summary="Set or replace a model's price (superuser)")
async def set_price(model: ModelParam, body: PriceSpec, admin: Superuser, service: PriceServiceDep) -> PriceOut:
    """Overrides the shipped price list for this (normalised) model name. New syncs use it at once;
    run `codepulse usage reprice [--since DATE]` to recompute records already stored."""
    return await service.set_price(model, body, admin)


@pricing_router.delete(
    "/{model:path}", status_code=status.HTTP_204_NO_CONTENT, summary="Remove a price override (superuser)"
)
async def delete_price(model: ModelParam, admin: Superuser, service: PriceServiceDep) -> Response:
    await service.delete_price(model, admin)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
