"""Helpers for tests that need organizations and members."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth.models import User
from codepulse.orgs.models import Organization
from tests.auth.helpers import SignedIn, register
from tests.helpers import Mailbox


async def create_org(
    client: httpx.AsyncClient, owner: SignedIn, slug: str = "engines", name: str = "Engines"
) -> dict[str, Any]:
    response = await client.post("/api/v1/orgs", headers=owner.headers, json={"name": name, "slug": slug})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def put_on_plan(session: AsyncSession, slug: str, plan: str) -> None:
    """Put an organization on a billing plan, as an operator would (for tests that need more than
    the free plan allows)."""
    await session.execute(update(Organization).where(Organization.slug == slug).values(plan=plan))
    await session.flush()


async def verify_email(session: AsyncSession, username: str) -> None:
    await session.execute(update(User).where(User.username == username).values(email_verified_at=User.created_at))
    await session.flush()


async def add_member(
    client: httpx.AsyncClient,
    session: AsyncSession,
    mailbox: Mailbox,
    admin: SignedIn,
    org: str,
    username: str,
    role: str = "member",
) -> SignedIn:
    """Register `username`, verify the email, invite and accept: a real member with `role`, for
    tests about that flow. A test about a rule needs only the membership: `make_member`."""
    member = await register(client, username)
    await verify_email(session, username)
    invited = await client.post(
        f"/api/v1/orgs/{org}/invitations",
        headers=admin.headers,
        json={"email": f"{username}@example.com", "role": role},
    )
    assert invited.status_code == 201, invited.text
    await mailbox.deliver()
    token = mailbox.link_token_in_path(mailbox.messages_to(f"{username}@example.com")[-1], "/invitations/")
    accepted = await client.post("/api/v1/invitations/accept", headers=member.headers, json={"token": token})
    assert accepted.status_code == 200, accepted.text
    return member
