"""Notification mail and its one-click unsubscribe.

`notify()` queues one `notifications.mail` task per event with the recipients whose email
preference for the kind is on; the task writes one outbox message per recipient with a verified
email (the outbox delivers it). Each message's key is (user, kind, dedup_key): a task run again, or
the same event notified twice, mails once.

Every message carries a signed unsubscribe link for its kind (`List-Unsubscribe`, with RFC 8058's
one-click `List-Unsubscribe-Post`): opening it (GET) or a mail client's one-click POST turns that
kind's email off for that user, without signing in. The link never expires: it can only turn
mail off, and is signed with SECRET_KEY (a forged or altered one is a 400).
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import structlog
from itsdangerous import BadSignature, URLSafeSerializer

from codepulse.auth import service as auth_service
from codepulse.config import Settings
from codepulse.integrations.mailer import MailMessage
from codepulse.mail.outbox import queue_mail
from codepulse.notifications.kinds import KINDS, Kind
from codepulse.tasks import TaskContext

log = structlog.get_logger("codepulse.notifications")

UNSUBSCRIBE_SALT = "codepulse.notifications.unsubscribe"
UNSUBSCRIBE_PATH = "/api/v1/notifications/unsubscribe"


def _serializer(settings: Settings) -> URLSafeSerializer:
    return URLSafeSerializer(settings.secret_key, salt=UNSUBSCRIBE_SALT)


def unsubscribe_token(settings: Settings, user_id: uuid.UUID, kind: str) -> str:
    return str(_serializer(settings).dumps([str(user_id), kind]))


def read_unsubscribe_token(settings: Settings, token: str) -> tuple[uuid.UUID, str] | None:
    """(user id, kind) of a token this server signed; None for anything else."""
    try:
        user_id, kind = _serializer(settings).loads(token)
        return uuid.UUID(str(user_id)), str(kind)
    except (BadSignature, ValueError, TypeError):
        return None


def unsubscribe_url(settings: Settings, user_id: uuid.UUID, kind: str) -> str:
    return f"{settings.PUBLIC_API_URL}{UNSUBSCRIBE_PATH}?token={unsubscribe_token(settings, user_id, kind)}"


def _text(settings: Settings, spec: Kind, body: str, unsubscribe: str) -> str:
    return (
        f"{body}\n\nOpen codepulse: {settings.FRONTEND_URL}/notifications\n\n"
        f"-- \nYou get this mail because email is on for: {spec.description}\n"
        f"Stop these emails: {unsubscribe}\n"
        f"All your choices: {settings.FRONTEND_URL}/notifications/preferences\n"
    )


def _outbox_key(user_id: uuid.UUID, kind: str, dedup_key: str) -> str:
    return "notification:" + hashlib.sha256(f"{user_id}:{kind}:{dedup_key}".encode()).hexdigest()


async def send_notification_mail(context: TaskContext) -> None:
    """The `notifications.mail` task: one outbox message per recipient with a verified email."""
    payload: dict[str, Any] = context.payload
    kind = str(payload["kind"])
    spec = KINDS.get(kind)
    if spec is None:
        return  # a kind removed since the task was queued
    settings = context.settings
    user_ids = [uuid.UUID(value) for value in payload["user_ids"]]
    queued = 0
    async with context.database.transaction() as session:
        users = await auth_service.users_by_ids(session, user_ids)
        for user_id in user_ids:
            user = users.get(user_id)
            if user is None or not user.email_verified:
                continue  # gone, or an address nobody proved to own: never mailed
            unsubscribe = unsubscribe_url(settings, user_id, kind)
            message = MailMessage(
                to=user.email,
                subject=str(payload["title"]),
                text=_text(settings, spec, str(payload["body"]), unsubscribe),
                headers=(
                    ("List-Unsubscribe", f"<{unsubscribe}>"),
                    ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
                ),
            )
            outbox_id = await queue_mail(
                session,
                message,
                settings=settings,
                now=context.clock(),
                category=f"notification.{kind}",
                dedup_key=_outbox_key(user_id, kind, str(payload["dedup_key"])),
            )
            queued += outbox_id is not None
    log.info("notifications.mail_queued", kind=kind, count=queued)
