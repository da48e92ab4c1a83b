"""Tenant isolation over every route of the app, including routes later domains add.

Every route is classified below. A route with `{org}` is org-scoped automatically; a route with
an id of an org-owned object must name how to make that object (ORG_OBJECT_PARAMS); every other
route must be listed as not org-scoped (NOT_ORG_SCOPED). An unclassified route fails the test, so
a new route cannot skip the check. For org-scoped routes:
- a signed-in outsider gets 404 on every method (no existence leak);
- a viewer gets 403 on every write.

Every route under /api/v1/admin/ is for superusers only: a signed-in user who is not one gets 403
`superuser_required` on every method, whatever the path's ids (SUPERUSER_PARAMS).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.orgs.models import Organization
from codepulse.repositories.models import Repository
from tests.factories import FindingFactory, MakeMember, MakeOrg, MakeUser, RepositoryFactory, ScanFactory

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}

# Routes that belong to no organization (the caller's own account, public, or infrastructure).
NOT_ORG_SCOPED = {
    "/api/v1/health",
    "/api/v1/health/ready",
    "/api/v1/auth/register",
    "/api/v1/auth/login",
    "/api/v1/auth/me",
    "/api/v1/auth/logout",
    "/api/v1/auth/logout-all",
    "/api/v1/auth/sessions",
    "/api/v1/auth/sessions/{session_id}",
    "/api/v1/auth/tokens",
    "/api/v1/auth/password",
    "/api/v1/auth/verify-email/request",
    "/api/v1/auth/verify-email",
    "/api/v1/auth/password-reset/request",
    "/api/v1/auth/password-reset",
    "/api/v1/auth/oauth/github",
    "/api/v1/auth/oauth/github/link",
    "/api/v1/auth/oauth/github/callback",
    "/api/v1/auth/oauth/exchange",
    "/api/v1/auth/oauth/github/device",
    "/api/v1/auth/oauth/github/device/code",
    "/api/v1/auth/oauth/github/device/token",
    "/api/v1/users/me",
    "/api/v1/users/{username}",
    "/api/v1/orgs",
    "/api/v1/invitations",
    "/api/v1/invitations/accept",
    # the invitee's own invitations by id: someone else's answers 404 (tests/orgs/test_first_hour.py)
    "/api/v1/invitations/{invitation_id}/accept",
    "/api/v1/invitations/{invitation_id}/decline",
    # usage: the caller's own usage, public stats, and superuser pricing
    "/api/v1/sync",
    "/api/v1/dashboard/overview",
    "/api/v1/dashboard/trends",
    "/api/v1/dashboard/sources",
    "/api/v1/dashboard/models",
    "/api/v1/usage/settings",
    "/api/v1/users/{username}/stats",
    "/api/v1/admin/pricing",
    "/api/v1/admin/pricing/{model}",
    # auth: the superusers' account administration (the detail composed by codepulse.admin.users)
    "/api/v1/admin/users",
    "/api/v1/admin/users/{user_id}",
    # leaderboard: public boards, one public user's standings, the superusers' recompute
    "/api/v1/leaderboard",
    "/api/v1/leaderboard/users/{username}",
    "/api/v1/admin/leaderboard/recompute",
    # leaderboard: superusers' exclusions of accounts from every board
    "/api/v1/admin/users/{user_id}/leaderboard-exclusion",
    "/api/v1/admin/leaderboard/exclusions",
    # leaderboard: the public community benchmarks, and the caller's own standing in them
    "/api/v1/benchmarks",
    "/api/v1/benchmarks/me",
    # admin: the superusers' view of the task queue (tasks belong to no organization)
    "/api/v1/admin/tasks",
    "/api/v1/admin/tasks/{task_id}/retry",
    "/api/v1/admin/tasks/{task_id}/cancel",
    # admin: the superusers' platform statistics (every organization's figures, none in particular)
    "/api/v1/admin/stats",
    # billing: the public plans; a superuser's plan assignment (any organization, by id or slug)
    "/api/v1/billing/plans",
    "/api/v1/admin/orgs/{org_ref}/plan",
    # billing: Stripe's webhook (signed by Stripe, no bearer token)
    "/api/v1/webhooks/stripe",
    # notifications: the caller's own (another user's id is a 404)
    "/api/v1/notifications",
    "/api/v1/notifications/unread-count",
    "/api/v1/notifications/kinds",
    "/api/v1/notifications/preferences",
    "/api/v1/notifications/read-all",
    "/api/v1/notifications/{notification_id}/read",
    "/api/v1/notifications/{notification_id}",
    "/api/v1/notifications/stream",
    # a signed link for one user and kind; no sign-in (tests/notifications/test_mail.py)
    "/api/v1/notifications/unsubscribe",
}

Context = dict[str, Any]


async def _repository(context: Context) -> Repository:
    if "repository" not in context:
        context["repository"] = RepositoryFactory.create(org=context["org"])
        await context["session"].flush()
    repository: Repository = context["repository"]
    return repository


async def _repository_id(context: Context) -> str:
    return str((await _repository(context)).id)


async def _scan_id(context: Context) -> str:
    if "scan_id" not in context:
        scan = ScanFactory.create(repository=await _repository(context))
        await context["session"].flush()
        context["scan_id"] = str(scan.id)
    return str(context["scan_id"])


async def _finding_id(context: Context) -> str:
    if "finding_id" not in context:
        finding = FindingFactory.create(repository=await _repository(context))
        await context["session"].flush()
        context["finding_id"] = str(finding.id)
    return str(context["finding_id"])


# Path parameter -> how to produce a value for it inside the test organization.
ORG_OBJECT_PARAMS: dict[str, Callable[[Context], Awaitable[str]]] = {
    "repository_id": _repository_id,
    "scan_id": _scan_id,
    "finding_id": _finding_id,
}


async def _owner_id(context: Context) -> str:
    return str(context["owner"].user["id"])


async def _invitation_id(context: Context) -> str:
    client: httpx.AsyncClient = context["client"]
    response = await client.post(
        "/api/v1/orgs/engines/invitations", headers=context["owner"].headers, json={"email": "pending@example.com"}
    )
    if response.status_code == 409:  # already created for an earlier route
        listed = await client.get("/api/v1/orgs/engines/invitations", headers=context["owner"].headers)
        return str(listed.json()["items"][0]["id"])
    return str(response.json()["id"])


# Parameters that sit inside an `{org}` route and name something of that organization.
ORG_ROUTE_PARAMS: dict[str, Callable[[Context], Awaitable[str]]] = {
    "user_id": _owner_id,
    "invitation_id": _invitation_id,
}

_PARAM = re.compile(r"{(\w+)}")


def _api_routes(app: FastAPI) -> list[tuple[str, str]]:
    document = app.openapi()
    return [
        (path, method.upper())
        for path, operations in document["paths"].items()
        for method in operations
        if method.upper() != "HEAD"
    ]


def _classify(path: str) -> str:
    params = set(_PARAM.findall(path))
    if "org" in params:
        return "org"
    if params & set(ORG_OBJECT_PARAMS):
        return "org_object"
    if path in NOT_ORG_SCOPED:
        return "none"
    return "unclassified"


def test_every_route_is_classified(app: FastAPI) -> None:
    unclassified = sorted({path for path, _ in _api_routes(app) if _classify(path) == "unclassified"})
    assert unclassified == [], (
        "classify these routes in tests/test_isolation.py (org-scoped object id, or NOT_ORG_SCOPED)"
    )


async def _fill(path: str, context: Context) -> str:
    values = {}
    for name in _PARAM.findall(path):
        if name == "org":
            values[name] = "engines"
        elif name in ORG_OBJECT_PARAMS:
            values[name] = await ORG_OBJECT_PARAMS[name](context)
        elif name in ORG_ROUTE_PARAMS:
            values[name] = await ORG_ROUTE_PARAMS[name](context)
        else:
            raise AssertionError(f"{path}: add a value for {{{name}}} to ORG_ROUTE_PARAMS or ORG_OBJECT_PARAMS")
    return _PARAM.sub(lambda m: values[m.group(1)], path)


async def test_outsiders_get_404_and_viewers_403_on_writes(
    app: FastAPI,
    client: httpx.AsyncClient,
    session: AsyncSession,
    make_user: MakeUser,
    make_org: MakeOrg,
    make_member: MakeMember,
) -> None:
    owner = await make_user("owner")
    org: Organization = await make_org(owner, slug="engines")
    viewer = await make_member(org, "viewer", "viewer")
    outsider = await make_user("outsider")
    context: Context = {"client": client, "owner": owner, "org": org, "session": session}
    checked = 0
    for path, method in _api_routes(app):
        if _classify(path) not in ("org", "org_object"):
            continue
        url = await _fill(path, context)
        stranger = await client.request(method, url, headers=outsider.headers, json={})
        assert stranger.status_code == 404, f"{method} {path}: outsider got {stranger.status_code}"
        assert stranger.json()["code"].endswith("not_found")
        if method in WRITE_METHODS:
            response = await client.request(method, url, headers=viewer.headers, json={})
            assert response.status_code == 403, f"{method} {path}: viewer got {response.status_code}"
            assert response.json()["code"] == "insufficient_role"
        checked += 1
    assert checked >= 10


ADMIN_PREFIX = "/api/v1/admin/"

# Values for the path parameters of superuser routes: the refusal comes before any lookup.
SUPERUSER_PARAMS: dict[str, str] = {
    "model": "claude-sonnet-4",
    "org_ref": "engines",
    "user_id": str(uuid.uuid4()),
    "task_id": str(uuid.uuid4()),
}


def test_every_admin_route_is_not_org_scoped(app: FastAPI) -> None:
    admin = sorted({path for path, _ in _api_routes(app) if path.startswith(ADMIN_PREFIX)})
    assert admin, "no admin routes found"
    assert [path for path in admin if _classify(path) != "none"] == []


async def test_non_superusers_get_403_on_every_admin_route(
    app: FastAPI, client: httpx.AsyncClient, make_user: MakeUser, make_org: MakeOrg
) -> None:
    # An organization's owner is the strongest non-superuser there is.
    owner = await make_user("owner")
    await make_org(owner, slug="engines")
    checked = 0
    for path, method in _api_routes(app):
        if not path.startswith(ADMIN_PREFIX):
            continue
        missing = set(_PARAM.findall(path)) - set(SUPERUSER_PARAMS)
        assert not missing, f"{path}: add a value for {missing} to SUPERUSER_PARAMS"
        url = _PARAM.sub(lambda m: SUPERUSER_PARAMS[m.group(1)], path)
        response = await client.request(method, url, headers=owner.headers, json={})
        assert response.status_code == 403, f"{method} {path}: a non-superuser got {response.status_code}"
        assert response.json()["code"] == "superuser_required", f"{method} {path}"
        anonymous = await client.request(method, url, json={})
        assert anonymous.status_code == 401, f"{method} {path}: anonymous got {anonymous.status_code}"
        checked += 1
    assert checked >= 10
