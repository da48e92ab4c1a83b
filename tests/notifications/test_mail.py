"""Notification mail: sent per the user's email preference for the kind (defaults per kind), once
per event, only to verified addresses, with a signed one-click unsubscribe link that works without
signing in (GET from the mail, RFC 8058 POST from a mail client)."""

from __future__ import annotations

import re
from email.message import Message

import httpx
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.config import Settings
from codepulse.notifications.mail import unsubscribe_token
from codepulse.notifications.models import Notification, NotificationPreference
from codepulse.notifications.service import notify
from tests.factories import Account, MakeUser
from tests.helpers import FakeClock, Mailbox

API = "/api/v1/notifications"


async def _notify(session: AsyncSession, clock: FakeClock, user: Account, kind: str, key: str) -> None:
    await notify(session, [user.model.id], kind, f"Title {key}", f"Body {key}", {"key": key}, key, now=clock())


def _unsubscribe_link(message: Message) -> str:
    header = str(message["List-Unsubscribe"])
    match = re.fullmatch(r"<http://127\.0\.0\.1:8000(/api/v1/notifications/unsubscribe\?token=[\w.\-]+)>", header)
    assert match is not None, header
    return match.group(1)


async def _preference(session: AsyncSession, user: Account, kind: str) -> NotificationPreference | None:
    return await session.scalar(
        select(NotificationPreference).where(
            NotificationPreference.user_id == user.model.id, NotificationPreference.kind == kind
        )
    )


async def test_a_kind_mailed_by_default_is_mailed_once_with_an_unsubscribe_link(
    session: AsyncSession, make_user: MakeUser, mailbox: Mailbox, clock: FakeClock
) -> None:
    ada = await make_user("ada")
    await _notify(session, clock, ada, "scan_failed", "scan-1")
    await _notify(session, clock, ada, "scan_failed", "scan-1")  # the same event again
    await _notify(session, clock, ada, "scan_completed", "scan-2")  # not mailed by default
    await mailbox.deliver()
    [message] = mailbox.messages
    assert message["To"] == "ada@example.com"
    assert message["Subject"] == "Title scan-1"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    body = str(message.get_payload())
    assert "Body scan-1" in body
    assert _unsubscribe_link(message) in body
    mailbox.clear()
    await mailbox.deliver()  # nothing left: never twice
    assert mailbox.messages == []


async def test_the_unsubscribe_link_turns_that_kinds_mail_off_without_signing_in(
    client: httpx.AsyncClient, session: AsyncSession, make_user: MakeUser, mailbox: Mailbox, clock: FakeClock
) -> None:
    ada = await make_user("ada")
    await _notify(session, clock, ada, "scan_failed", "scan-1")
    await mailbox.deliver()
    link = _unsubscribe_link(mailbox.messages[-1])

    page = await client.get(link)  # no Authorization header
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "A scan you started failed." in page.text
    preference = await _preference(session, ada, "scan_failed")
    assert preference is not None
    assert (preference.email, preference.in_app) == (False, True)
    assert (await client.get(link)).status_code == 200  # idempotent

    mailbox.clear()
    await _notify(session, clock, ada, "scan_failed", "scan-2")
    await mailbox.deliver()
    assert mailbox.messages == []
    assert await session.scalar(select(Notification.title).where(Notification.dedup_key == "scan-2")) == "Title scan-2"
    # Other kinds still mail.
    await _notify(session, clock, ada, "new_critical_findings", "scan-3")
    await mailbox.deliver()
    assert [m["Subject"] for m in mailbox.messages] == ["Title scan-3"]


async def test_one_click_post_from_a_mail_client(
    client: httpx.AsyncClient, session: AsyncSession, make_user: MakeUser, settings: Settings
) -> None:
    ada = await make_user("ada")
    token = unsubscribe_token(settings, ada.model.id, "weekly_summary")
    response = await client.post(
        f"{API}/unsubscribe",
        params={"token": token},
        content="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 204
    preference = await _preference(session, ada, "weekly_summary")
    assert preference is not None
    assert preference.email is False


async def test_a_forged_or_altered_link_is_refused(
    client: httpx.AsyncClient, session: AsyncSession, make_user: MakeUser, settings: Settings
) -> None:
    ada = await make_user("ada")
    token = unsubscribe_token(settings, ada.model.id, "scan_failed")
    forged = unsubscribe_token(
        settings.model_copy(update={"SECRET_KEY": SecretStr("another-key-" * 4)}), ada.model.id, "scan_failed"
    )
    for bad in (token[:-2] + "xx", forged, "nonsense", unsubscribe_token(settings, ada.model.id, "no_such_kind")):
        response = await client.get(f"{API}/unsubscribe", params={"token": bad})
        assert response.status_code == 400
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "invalid_unsubscribe_token"
    assert await _preference(session, ada, "scan_failed") is None


async def test_mail_follows_the_email_preference_not_the_in_app_one(
    client: httpx.AsyncClient, session: AsyncSession, make_user: MakeUser, mailbox: Mailbox, clock: FakeClock
) -> None:
    ada = await make_user("ada")
    changes = [
        {"kind": "scan_completed", "in_app": False, "email": True},  # mail only
        {"kind": "scan_failed", "email": False},  # in the app only
    ]
    assert (await client.put(f"{API}/preferences", headers=ada.headers, json={"items": changes})).status_code == 200
    await _notify(session, clock, ada, "scan_completed", "done-1")
    await _notify(session, clock, ada, "scan_failed", "failed-1")
    await mailbox.deliver()
    assert [m["Subject"] for m in mailbox.messages] == ["Title done-1"]
    titles = list(await session.scalars(select(Notification.title).where(Notification.user_id == ada.model.id)))
    assert titles == ["Title failed-1"]


async def test_an_unverified_address_is_never_mailed(
    session: AsyncSession, make_user: MakeUser, mailbox: Mailbox, clock: FakeClock
) -> None:
    unverified = await make_user("eve", email_verified_at=None)
    await _notify(session, clock, unverified, "scan_failed", "scan-1")
    await mailbox.deliver()
    assert mailbox.messages == []
    assert await session.scalar(select(Notification.title)) == "Title scan-1"  # in the app all the same
