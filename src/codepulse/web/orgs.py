"""Organizations in the browser: my organizations (with my pending invitations) and creating one,
an organization's settings (rename; delete, typing the slug) and its audit log — through the orgs
slice's `OrgService`, as `/api/v1/orgs` does, with the same role rules.

Every `/orgs/{slug}/...` page and form resolves the organization with `OrgService.access`: an
outsider (or a missing organization) gets the 404 page, a role below the route's the 403 page.
Forms check the CSRF token first (`SessionCsrf`), then the organization.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Path, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from codepulse.auth import service as auth_service
from codepulse.auth.dependencies import device_of
from codepulse.errors import Conflict, ValidationFailed
from codepulse.orgs.dependencies import InvitationServiceDep, OrgServiceDep
from codepulse.orgs.invitations import InvitationService
from codepulse.orgs.schemas import OrgCreate, OrgDelete, OrgUpdate
from codepulse.orgs.service import OrgAccess, OrgService, Role
from codepulse.pagination import MAX_CURSOR_LENGTH, PageRequest
from codepulse.routing import DomainRouter
from codepulse.web.forms import MAX_FORM_BYTES, FieldErrors, field_errors, read_form, validation_errors
from codepulse.web.rendering import render
from codepulse.web.session import SessionCsrf, SignedIn, Viewer

router = DomainRouter(tags=["web"])

ORGS_PATH = "/orgs"
LIST_LIMIT = 100
AUDIT_PAGE = 50

OrgSlug = Annotated[str, Path(min_length=1, max_length=60)]
Cursor = Annotated[str | None, Query(max_length=MAX_CURSOR_LENGTH)]


def org_path(access: OrgAccess, page: str = "members") -> str:
    return f"{ORGS_PATH}/{access.org.slug}/{page}"


def redirect(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=status.HTTP_303_SEE_OTHER)


# --- the organization of a page or form ---------------------------------------------------


async def _org_page(slug: OrgSlug, viewer: SignedIn, orgs: OrgServiceDep) -> OrgAccess:
    return await orgs.access(viewer.user, slug, Role.VIEWER)


async def _org_form(slug: OrgSlug, viewer: SessionCsrf, orgs: OrgServiceDep) -> OrgAccess:
    """A form's organization, after its CSRF token was checked."""
    return await orgs.access(viewer.user, slug, Role.VIEWER)


OrgPage = Annotated[OrgAccess, Depends(_org_page)]
OrgForm = Annotated[OrgAccess, Depends(_org_form)]


async def org_context(orgs: OrgService, access: OrgAccess, tab: str) -> dict[str, Any]:
    """What every organization page's header and tabs read: the switcher's organizations, the
    current one, my role in it."""
    mine, _ = await orgs.list_mine(access.user, PageRequest(limit=LIST_LIMIT))
    return {
        "org": access.org,
        "role": access.role,
        "my_orgs": mine,
        "tab": tab,
        "is_admin": access.role.at_least(Role.ADMIN),
        "is_owner": access.role is Role.OWNER,
    }


# --- my organizations ---------------------------------------------------------------------


async def my_orgs_page(
    request: Request, viewer: Viewer, service: InvitationService, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    mine, _ = await service.orgs.list_mine(viewer.user, PageRequest(limit=LIST_LIMIT))
    invitations, _ = await service.invitations_for(viewer.user, PageRequest(limit=LIST_LIMIT))
    context.setdefault("values", {})
    context.setdefault("errors", {})
    context.setdefault("notice", None)
    return render(
        request,
        "orgs.html",
        status_code=status_code,
        my_orgs=mine,
        invitations=invitations,
        cannot_accept=service.acceptable(viewer.user),
        **context,
    )


@router.get(ORGS_PATH, include_in_schema=False, response_class=HTMLResponse)
async def orgs_page(
    request: Request,
    viewer: SignedIn,
    invitations: InvitationServiceDep,
    declined: bool = False,
    verified: bool = False,
) -> HTMLResponse:
    notice = "Invitation declined." if declined else "Your email is verified." if verified else None
    return await my_orgs_page(request, viewer, invitations, notice=notice)


@router.post(ORGS_PATH, include_in_schema=False, response_class=HTMLResponse, max_body_size=MAX_FORM_BYTES)
async def create_org(request: Request, viewer: SessionCsrf, invitations: InvitationServiceDep) -> Response:
    form = await read_form(request)
    values = {"name": form.get("name", ""), "slug": form.get("slug", "")}
    errors: FieldErrors
    try:
        body = OrgCreate.model_validate({"name": values["name"], "slug": values["slug"].strip() or None})
        access = await invitations.orgs.create(viewer.user, body, ip_of(request))
    except ValidationError as error:
        errors, status_code = validation_errors(error), 422
    except Conflict as error:
        errors, status_code = {"slug": [error.detail or error.title]}, error.status
    else:
        return redirect(org_path(access))
    return await my_orgs_page(request, viewer, invitations, status_code=status_code, values=values, errors=errors)


@router.get(ORGS_PATH + "/{slug}", include_in_schema=False, response_class=HTMLResponse)
async def org_home(access: OrgPage) -> Response:
    return redirect(org_path(access))


# --- settings: rename, delete -------------------------------------------------------------


async def _settings_page(
    request: Request, access: OrgAccess, orgs: OrgService, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    context.setdefault("values", {"name": access.org.name, "slug": access.org.slug})
    context.setdefault("errors", {})
    layout = await org_context(orgs, access, "settings")
    return render(request, "org_settings.html", status_code=status_code, **layout, **context)


@router.get(ORGS_PATH + "/{slug}/settings", include_in_schema=False, response_class=HTMLResponse)
async def settings_page(request: Request, access: OrgPage, orgs: OrgServiceDep) -> HTMLResponse:
    access.require(Role.ADMIN)  # as PATCH /orgs/{org}
    return await _settings_page(request, access, orgs)


@router.post(
    ORGS_PATH + "/{slug}/settings", include_in_schema=False, response_class=HTMLResponse, max_body_size=MAX_FORM_BYTES
)
async def rename_org(request: Request, access: OrgForm, orgs: OrgServiceDep) -> Response:
    access.require(Role.ADMIN)
    form = await read_form(request)
    values = {"name": form.get("name", ""), "slug": form.get("slug", "")}
    errors: FieldErrors
    try:
        body = OrgUpdate.model_validate({"name": values["name"], "slug": values["slug"].strip() or None})
        await orgs.update(access, body, ip_of(request))
    except ValidationError as error:
        errors, status_code = validation_errors(error), 422
    except Conflict as error:
        errors, status_code = {"slug": [error.detail or error.title]}, error.status
    else:
        return redirect(org_path(access, "settings"))
    return await _settings_page(request, access, orgs, status_code=status_code, values=values, errors=errors)


@router.post(
    ORGS_PATH + "/{slug}/delete", include_in_schema=False, response_class=HTMLResponse, max_body_size=MAX_FORM_BYTES
)
async def delete_org(request: Request, access: OrgForm, orgs: OrgServiceDep) -> Response:
    access.require(Role.OWNER)  # as DELETE /orgs/{org}
    form = await read_form(request)
    values = {"confirm_slug": form.get("confirm_slug", "")}
    errors: FieldErrors
    try:
        body = OrgDelete.model_validate(values)
        await orgs.delete(access, body.confirm_slug, ip_of(request))
    except ValidationError as error:
        errors = validation_errors(error)
    except ValidationFailed as error:
        errors = field_errors(error.errors)
    else:
        return redirect(ORGS_PATH)
    # Beside the rename form's fields (its values unchanged): the one field of its own.
    values |= {"name": access.org.name, "slug": access.org.slug}
    return await _settings_page(request, access, orgs, status_code=422, values=values, errors=errors)


# --- the audit log ------------------------------------------------------------------------


@router.get(ORGS_PATH + "/{slug}/audit", include_in_schema=False, response_class=HTMLResponse)
async def audit_page(request: Request, access: OrgPage, orgs: OrgServiceDep, cursor: Cursor = None) -> HTMLResponse:
    access.require(Role.ADMIN)  # as GET /orgs/{org}/audit-log
    page = PageRequest(limit=AUDIT_PAGE, cursor=cursor, signer=request.app.state.cursor_signer)
    events, next_cursor = await orgs.audit_log(access, None, page)
    actor_ids = {event.actor_id for event in events if event.actor_id is not None}
    actors = await auth_service.users_by_ids(orgs.session, actor_ids) if actor_ids else {}
    return render(
        request,
        "org_audit.html",
        **(await org_context(orgs, access, "audit")),
        events=events,
        actors={user_id: user.username for user_id, user in actors.items()},
        next_cursor=next_cursor,
        first_page=cursor is None,
    )


def ip_of(request: Request) -> str | None:
    return device_of(request).ip
