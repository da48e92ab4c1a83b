from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.app import register_hooks
from codepulse.config import Settings
from codepulse.errors import Conflict, Forbidden, QuotaExceeded
from codepulse.orgs.models import AuditEvent, Invitation, Organization
from codepulse.orgs.service import OrgService, Role
from codepulse.repositories.models import Repository
from tests.factories import MakeMember, MakeOrg, MakeUser, RepositoryFactory
from tests.helpers import FakeClock, Mailbox
from tests.orgs.helpers import add_member, create_org, verify_email


async def test_create_and_read_by_id_or_slug(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    ada = await make_user("ada")
    org = await create_org(client, ada, "Engines-Ltd", "Engines")
    assert (org["slug"], org["name"], org["role"]) == ("engines-ltd", "Engines", "owner")
    by_slug = await client.get("/api/v1/orgs/engines-ltd", headers=ada.headers)
    by_id = await client.get(f"/api/v1/orgs/{org['id']}", headers=ada.headers)
    assert by_slug.json() == by_id.json() == org
    mine = await client.get("/api/v1/orgs", headers=ada.headers)
    assert [(o["slug"], o["role"]) for o in mine.json()["items"]] == [("engines-ltd", "owner")]


async def test_new_users_have_no_organization(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    ada = await make_user("ada")
    assert (await client.get("/api/v1/orgs", headers=ada.headers)).json() == {"items": [], "next_cursor": None}


@pytest.mark.parametrize("slug", ["ab", "x" * 41, "-engines", "engines-", "en--gines", "en gines", "settings", "API"])
async def test_slug_rules(client: httpx.AsyncClient, make_user: MakeUser, slug: str) -> None:
    ada = await make_user("ada")
    response = await client.post("/api/v1/orgs", headers=ada.headers, json={"name": "X", "slug": slug})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body.slug"


async def test_slug_is_unique(client: httpx.AsyncClient, make_user: MakeUser, make_org: MakeOrg) -> None:
    ada = await make_user("ada")
    await make_org(ada, slug="engines")
    taken = await client.post("/api/v1/orgs", headers=ada.headers, json={"name": "Y", "slug": "ENGINES"})
    assert taken.status_code == 409
    assert taken.json()["code"] == "slug_taken"


async def test_outsider_gets_404_and_viewer_403(
    client: httpx.AsyncClient, make_user: MakeUser, make_org: MakeOrg, make_member: MakeMember
) -> None:
    engines = await make_org(await make_user("ada"), slug="engines")
    grace = await make_user("grace")
    for path in ("/api/v1/orgs/engines", "/api/v1/orgs/nonexistent"):
        response = await client.get(path, headers=grace.headers)
        assert response.status_code == 404
        assert response.json()["code"] == "organization_not_found"
    viewer = await make_member(engines, "viewer", "vic")
    assert (await client.get("/api/v1/orgs/engines", headers=viewer.headers)).json()["role"] == "viewer"
    refused = await client.patch("/api/v1/orgs/engines", headers=viewer.headers, json={"name": "Mine now"})
    assert refused.status_code == 403
    assert refused.json()["code"] == "insufficient_role"


async def test_superuser_sees_every_organization(
    client: httpx.AsyncClient, make_user: MakeUser, make_org: MakeOrg
) -> None:
    await make_org(await make_user("ada"), slug="engines")
    root = await make_user("rooted", is_superuser=True)
    response = await client.get("/api/v1/orgs/engines", headers=root.headers)
    assert response.status_code == 200
    assert response.json()["role"] is None


async def test_update_and_slug_change(client: httpx.AsyncClient, make_user: MakeUser, make_org: MakeOrg) -> None:
    ada = await make_user("ada")
    await make_org(ada, slug="engines")
    updated = await client.patch(
        "/api/v1/orgs/engines", headers=ada.headers, json={"name": "Engines Ltd", "slug": "engines-ltd"}
    )
    assert updated.status_code == 200
    assert (updated.json()["name"], updated.json()["slug"]) == ("Engines Ltd", "engines-ltd")
    # The old slug no longer resolves and is free for others.
    assert (await client.get("/api/v1/orgs/engines", headers=ada.headers)).status_code == 404
    await create_org(client, ada, "engines", "Another")


async def test_delete_needs_the_slug_and_frees_it(
    client: httpx.AsyncClient, make_user: MakeUser, make_org: MakeOrg
) -> None:
    ada = await make_user("ada")
    org = await make_org(ada, slug="engines")
    wrong = await client.request("DELETE", "/api/v1/orgs/engines", headers=ada.headers, json={"confirm_slug": "nope"})
    assert wrong.status_code == 422
    assert wrong.json()["errors"][0]["code"] == "slug_mismatch"
    done = await client.request("DELETE", "/api/v1/orgs/engines", headers=ada.headers, json={"confirm_slug": "engines"})
    assert done.status_code == 204
    assert (await client.get(f"/api/v1/orgs/{org.id}", headers=ada.headers)).status_code == 404
    assert (await client.get("/api/v1/orgs", headers=ada.headers)).json()["items"] == []
    await create_org(client, ada, "engines")


async def test_delete_removes_repositories(
    client: httpx.AsyncClient, session: AsyncSession, make_user: MakeUser, make_org: MakeOrg
) -> None:
    ada = await make_user("ada")
    engines = await make_org(ada, slug="engines")
    RepositoryFactory.create(org=engines)
    await session.flush()
    assert await session.scalar(select(func.count()).select_from(Repository)) == 1
    await client.request("DELETE", "/api/v1/orgs/engines", headers=ada.headers, json={"confirm_slug": "engines"})
    remaining = await session.scalar(select(func.count()).select_from(Repository))
    assert remaining == 0


async def test_only_owners_delete(
    client: httpx.AsyncClient, make_user: MakeUser, make_org: MakeOrg, make_member: MakeMember
) -> None:
    engines = await make_org(await make_user("ada"), slug="engines")
    admin = await make_member(engines, "admin", "adam")
    refused = await client.request(
        "DELETE", "/api/v1/orgs/engines", headers=admin.headers, json={"confirm_slug": "engines"}
    )
    assert refused.status_code == 403


async def test_members_and_roles(
    client: httpx.AsyncClient, make_user: MakeUser, make_org: MakeOrg, make_member: MakeMember
) -> None:
    ada = await make_user("ada")
    engines = await make_org(ada, slug="engines")
    admin = await make_member(engines, "admin", "adam")
    member = await make_member(engines, "member", "mia")
    listed = await client.get("/api/v1/orgs/engines/members", headers=member.headers)
    assert [(m["user"]["username"], m["role"]) for m in listed.json()["items"]] == [
        ("ada", "owner"),
        ("adam", "admin"),
        ("mia", "member"),
    ]
    mia_id, ada_id = member.user["id"], ada.user["id"]
    promoted = await client.patch(
        f"/api/v1/orgs/engines/members/{mia_id}", headers=admin.headers, json={"role": "viewer"}
    )
    assert promoted.json()["role"] == "viewer"
    # Admins cannot touch owners or make owners.
    for target, role in ((ada_id, "member"), (mia_id, "owner")):
        response = await client.patch(
            f"/api/v1/orgs/engines/members/{target}", headers=admin.headers, json={"role": role}
        )
        assert response.status_code == 403
    removed_owner = await client.delete(f"/api/v1/orgs/engines/members/{ada_id}", headers=admin.headers)
    assert removed_owner.status_code == 403
    # Members cannot manage anyone.
    refused = await client.delete(f"/api/v1/orgs/engines/members/{admin.user['id']}", headers=member.headers)
    assert refused.status_code == 403
    unknown = await client.patch(
        "/api/v1/orgs/engines/members/00000000-0000-0000-0000-000000000000", headers=ada.headers, json={"role": "admin"}
    )
    assert unknown.status_code == 404


async def test_last_owner_rules(
    client: httpx.AsyncClient, make_user: MakeUser, make_org: MakeOrg, make_member: MakeMember
) -> None:
    ada = await make_user("ada")
    engines = await make_org(ada, slug="engines")
    ada_id = ada.user["id"]
    for response in (
        await client.delete(f"/api/v1/orgs/engines/members/{ada_id}", headers=ada.headers),
        await client.patch(f"/api/v1/orgs/engines/members/{ada_id}", headers=ada.headers, json={"role": "admin"}),
        await client.delete("/api/v1/users/me", headers=ada.headers),
    ):
        assert response.status_code == 409
        assert response.json()["code"] == "last_owner"
    grace = await make_member(engines, "owner", "grace")
    assert (await client.delete(f"/api/v1/orgs/engines/members/{ada_id}", headers=ada.headers)).status_code == 204
    assert (await client.get("/api/v1/orgs/engines", headers=ada.headers)).status_code == 404
    assert (await client.get("/api/v1/orgs/engines", headers=grace.headers)).json()["role"] == "owner"
    assert (await client.delete("/api/v1/users/me", headers=ada.headers)).status_code == 204


async def test_members_can_leave(
    client: httpx.AsyncClient, make_user: MakeUser, make_org: MakeOrg, make_member: MakeMember
) -> None:
    engines = await make_org(await make_user("ada"), slug="engines")
    viewer = await make_member(engines, "viewer", "vic")
    left = await client.delete(f"/api/v1/orgs/engines/members/{viewer.user['id']}", headers=viewer.headers)
    assert left.status_code == 204
    assert (await client.get("/api/v1/orgs/engines", headers=viewer.headers)).status_code == 404


async def test_invitation_flow(
    client: httpx.AsyncClient, session: AsyncSession, mailbox: Mailbox, make_user: MakeUser, make_org: MakeOrg
) -> None:
    ada = await make_user("ada")
    await make_org(ada, slug="engines", name="Engines")
    invited = await client.post(
        "/api/v1/orgs/engines/invitations", headers=ada.headers, json={"email": "Grace@Example.com", "role": "admin"}
    )
    assert invited.status_code == 201
    assert invited.json()["email"] == "grace@example.com"
    await mailbox.deliver()
    [message] = mailbox.messages_to("grace@example.com")
    assert "Engines" in message["Subject"]
    token = mailbox.link_token_in_path(message, "http://127.0.0.1:8000/invitations/")
    pending = await client.get("/api/v1/orgs/engines/invitations", headers=ada.headers)
    assert [i["email"] for i in pending.json()["items"]] == ["grace@example.com"]
    again = await client.post(
        "/api/v1/orgs/engines/invitations", headers=ada.headers, json={"email": "grace@example.com"}
    )
    assert again.json()["code"] == "already_invited"

    grace = await make_user("grace", email_verified_at=None)
    # Before verification: listed, without the organization, and not acceptable yet.
    listed = (await client.get("/api/v1/invitations", headers=grace.headers)).json()["items"]
    assert [(i["org"], i["role"], i["can_accept"], i["reason"]) for i in listed] == [
        (None, "admin", False, "email_not_verified")
    ]
    unverified = await client.post("/api/v1/invitations/accept", headers=grace.headers, json={"token": token})
    assert unverified.status_code == 403
    assert unverified.json()["code"] == "email_not_verified"
    await verify_email(session, "grace")
    mine = await client.get("/api/v1/invitations", headers=grace.headers)
    assert [(i["org"]["slug"], i["role"], i["can_accept"]) for i in mine.json()["items"]] == [
        ("engines", "admin", True)
    ]

    other = await make_user("mallory")
    stolen = await client.post("/api/v1/invitations/accept", headers=other.headers, json={"token": token})
    assert stolen.status_code == 403
    assert stolen.json()["code"] == "invitation_email_mismatch"

    accepted = await client.post("/api/v1/invitations/accept", headers=grace.headers, json={"token": token})
    assert accepted.status_code == 200
    assert (accepted.json()["slug"], accepted.json()["role"]) == ("engines", "admin")
    replay = await client.post("/api/v1/invitations/accept", headers=grace.headers, json={"token": token})
    assert replay.status_code == 400
    assert replay.json()["code"] == "invalid_invitation"
    assert "grace" in str((await client.get("/api/v1/orgs/engines/members", headers=ada.headers)).json())


async def test_invitation_rules(
    client: httpx.AsyncClient,
    mailbox: Mailbox,
    clock: FakeClock,
    make_user: MakeUser,
    make_org: MakeOrg,
    make_member: MakeMember,
) -> None:
    ada = await make_user("ada")
    engines = await make_org(ada, slug="engines")
    admin = await make_member(engines, "admin", "adam")
    above = await client.post(
        "/api/v1/orgs/engines/invitations", headers=admin.headers, json={"email": "x@example.com", "role": "owner"}
    )
    assert above.status_code == 403
    member_again = await client.post(
        "/api/v1/orgs/engines/invitations", headers=ada.headers, json={"email": "adam@example.com"}
    )
    assert member_again.json()["code"] == "already_member"
    invited = await client.post(
        "/api/v1/orgs/engines/invitations", headers=admin.headers, json={"email": "late@example.com"}
    )
    await mailbox.deliver()
    token = mailbox.link_token_in_path(mailbox.messages_to("late@example.com")[-1], "/invitations/")
    late = await make_user("late")
    clock.advance(days=7, seconds=1)
    expired = await client.post("/api/v1/invitations/accept", headers=late.headers, json={"token": token})
    assert expired.status_code == 400
    revoke_missing = await client.delete(
        f"/api/v1/orgs/engines/invitations/{invited.json()['id']}", headers=admin.headers
    )
    assert revoke_missing.status_code == 204  # expired but never used: still revocable


async def test_revoked_invitation_cannot_be_accepted(
    client: httpx.AsyncClient, mailbox: Mailbox, make_user: MakeUser, make_org: MakeOrg
) -> None:
    ada = await make_user("ada")
    await make_org(ada, slug="engines")
    invited = await client.post(
        "/api/v1/orgs/engines/invitations", headers=ada.headers, json={"email": "grace@example.com"}
    )
    await mailbox.deliver()
    token = mailbox.link_token_in_path(mailbox.messages[-1], "/invitations/")
    assert (
        await client.delete(f"/api/v1/orgs/engines/invitations/{invited.json()['id']}", headers=ada.headers)
    ).status_code == 204
    grace = await make_user("grace")
    response = await client.post("/api/v1/invitations/accept", headers=grace.headers, json={"token": token})
    assert response.status_code == 400


async def test_seat_limit_counts_pending_invitations(
    client: httpx.AsyncClient, mailbox: Mailbox, make_user: MakeUser, make_org: MakeOrg
) -> None:
    ada = await make_user("ada")
    await make_org(ada, slug="engines")
    limit = 3  # the free plan's seats
    for n in range(limit - 1):
        response = await client.post(
            "/api/v1/orgs/engines/invitations", headers=ada.headers, json={"email": f"p{n}@example.com"}
        )
        assert response.status_code == 201
    full = await client.post("/api/v1/orgs/engines/invitations", headers=ada.headers, json={"email": "x@example.com"})
    assert full.status_code == 402
    body = full.json()
    assert (body["code"], body["resource"], body["limit"], body["used"]) == ("quota_exceeded", "seats", 3, 3)
    assert (body["plan"], body["upgrade_to"]) == ("free", "pro")


async def test_a_declined_invitation_is_told_apart_and_frees_its_seat(
    client: httpx.AsyncClient,
    session: AsyncSession,
    mailbox: Mailbox,
    make_user: MakeUser,
    make_org: MakeOrg,
    make_member: MakeMember,
) -> None:
    ada = await make_user("ada")
    engines = await make_org(ada, slug="engines")
    await make_member(engines, "viewer", "vic")
    grace = await make_user("grace")
    invited = await client.post(
        "/api/v1/orgs/engines/invitations", headers=ada.headers, json={"email": "grace@example.com"}
    )
    assert invited.status_code == 201
    invitation_id = invited.json()["id"]
    await mailbox.deliver()
    token = mailbox.link_token_in_path(mailbox.messages_to("grace@example.com")[-1], "/invitations/")
    seats = (await client.get("/api/v1/orgs/engines/billing", headers=ada.headers)).json()["usage"]["seats"]
    assert seats == {"used": 3, "limit": 3, "remaining": 0}  # ada, vic and grace's invitation

    declined = await client.post(f"/api/v1/invitations/{invitation_id}/decline", headers=grace.headers)
    assert declined.status_code == 204
    row = await session.scalar(select(Invitation).where(Invitation.id == uuid.UUID(invitation_id)))
    assert row is not None
    await session.refresh(row)
    assert row.declined_at is not None
    assert row.revoked_at is None  # an admin's revoke is another thing

    # No longer pending anywhere: the admins' list, the invitee's list, the seat count.
    assert (await client.get("/api/v1/orgs/engines/invitations", headers=ada.headers)).json()["items"] == []
    assert (await client.get("/api/v1/invitations", headers=grace.headers)).json()["items"] == []
    seats = (await client.get("/api/v1/orgs/engines/billing", headers=ada.headers)).json()["usage"]["seats"]
    assert seats == {"used": 2, "limit": 3, "remaining": 1}
    # Neither accepted with the mailed link, declined twice nor revoked afterwards.
    late = await client.post("/api/v1/invitations/accept", headers=grace.headers, json={"token": token})
    assert (late.status_code, late.json()["code"]) == (400, "invalid_invitation")
    again = await client.post(f"/api/v1/invitations/{invitation_id}/decline", headers=grace.headers)
    assert again.status_code == 404
    revoke = await client.delete(f"/api/v1/orgs/engines/invitations/{invitation_id}", headers=ada.headers)
    assert revoke.status_code == 404
    # The freed seat takes a new invitation, to the same email too (the open-invitation index
    # leaves declined ones out).
    reinvited = await client.post(
        "/api/v1/orgs/engines/invitations", headers=ada.headers, json={"email": "grace@example.com"}
    )
    assert reinvited.status_code == 201
    assert [i["id"] for i in (await client.get("/api/v1/invitations", headers=grace.headers)).json()["items"]] == [
        reinvited.json()["id"]
    ]


async def test_audit_log(
    client: httpx.AsyncClient,
    session: AsyncSession,
    mailbox: Mailbox,
    clock: FakeClock,
    make_user: MakeUser,
    make_member: MakeMember,
) -> None:
    ada = await make_user("ada")
    engines = await create_org(client, ada, "engines")  # through the API: "org.created" is logged
    clock.advance(seconds=1)
    mia = await add_member(client, session, mailbox, ada, "engines", "mia")  # invites, then accepts
    clock.advance(seconds=1)
    await client.patch(f"/api/v1/orgs/engines/members/{mia.user['id']}", headers=ada.headers, json={"role": "admin"})
    clock.advance(seconds=1)
    await client.patch("/api/v1/orgs/engines", headers=ada.headers, json={"name": "Engines Ltd"})
    log = await client.get("/api/v1/orgs/engines/audit-log", headers=ada.headers)
    actions = [event["action"] for event in log.json()["items"]]
    # Invite and accept happen at the same (frozen) instant: their order is not defined.
    assert actions[:2] == ["org.updated", "member.role_changed"]
    assert set(actions[2:4]) == {"member.joined", "invitation.created"}
    assert actions[4:] == ["org.created"]
    changed = log.json()["items"][1]
    assert changed["metadata"] == {"from": "member", "to": "admin"}
    assert changed["actor_id"] == ada.user["id"]
    assert changed["ip"] == "127.0.0.1"
    members_only = await client.get("/api/v1/orgs/engines/audit-log", headers=ada.headers, params={"action": "member."})
    assert [e["action"] for e in members_only.json()["items"]] == ["member.role_changed", "member.joined"]
    assert (await client.get("/api/v1/orgs/engines/audit-log", headers=ada.headers, params={"action": "x%"})).json()[
        "items"
    ] == []
    viewer = await make_member(await session.get_one(Organization, uuid.UUID(engines["id"])), "viewer", "vic")
    assert (await client.get("/api/v1/orgs/engines/audit-log", headers=viewer.headers)).status_code == 403


async def test_operators_add_existing_accounts_without_an_invitation(
    session: AsyncSession, settings: Settings, clock: FakeClock, make_user: MakeUser, make_org: MakeOrg,
    make_member: MakeMember,
) -> None:  # fmt: skip
    register_hooks()  # billing's seat quota, as in the app
    ada = await make_user("ada")
    org = await make_org(ada, slug="engines")
    admin = await make_member(org, "admin", "adm")
    service = OrgService(session, settings, clock)
    access = await service.access(admin.model, org)
    bob = await make_user("bob")
    with pytest.raises(Forbidden):
        await service.add_member(access, bob.model, Role.OWNER, None)  # above the admin's own role
    added = await service.add_member(access, bob.model, Role.MEMBER, None)
    assert (added.user.id, added.membership.role) == (bob.model.id, "member")
    with pytest.raises(Conflict) as again:
        await service.add_member(access, bob.model, Role.VIEWER, None)
    assert again.value.instance_code == "already_member"
    with pytest.raises(QuotaExceeded):  # the free plan's 3 seats: ada, adm, bob
        await service.add_member(access, (await make_user("cy")).model, Role.VIEWER, None)
    actions = await session.scalars(select(AuditEvent.action).where(AuditEvent.org_id == org.id))
    assert list(actions) == ["member.added"]
