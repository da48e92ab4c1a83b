"""The mail outbox: queue in the sender's transaction, deliver through the task queue, once.

    await queue_mail(session, MailMessage(to=..., subject=..., text=...), settings=..., now=..., category=...)

writes an outbox row and a `mail.deliver` task in the caller's transaction: a request that rolls
back sends nothing, and a message committed while SMTP is down waits in the queue, retried with
the queue's backoff, until SMTP is back (`sent`) or MAIL_MAX_ATTEMPTS attempts have failed
(`failed`). A 5xx answer (an address the server refuses) fails the message at once, and so
does MAIL_DISABLED (nothing is sent; the row says why). Production without SMTP_HOST never
counts a message as sent: it is retried as after an SMTP error (settings refuse to start so).

Never twice: a run takes the message with a conditional UPDATE (`queued` -> `sending`, with a
lease), so of two workers or replicas running the same message only one sends it; the other
finds it `sending` or `sent`. A sender that dies mid-send leaves its lease to expire, and the next
run sends again (SMTP has no exactly-once; the stable Message-ID lets the receiving side see the
duplicate). Bodies are sealed at rest (they hold single-use links) and dropped
MAIL_BODY_RETENTION_HOURS after the message is sent or failed; rows go after MAIL_OUTBOX_RETENTION_DAYS.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from email.utils import parseaddr
from functools import lru_cache
from typing import cast

import aiosmtplib
import structlog
from sqlalchemy import Table, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.config import Settings
from codepulse.db import rowcount, upsert
from codepulse.integrations.mailer import MailDisabled, MailMessage, build_mailer
from codepulse.mail.models import MailStatus, OutboxMail
from codepulse.security import SecretBox
from codepulse.tasks import EndedTask, PermanentTaskError, TaskContext, enqueue, on_task_ended

log = structlog.get_logger("codepulse.mail")

DELIVER_TASK = "mail.deliver"
ERROR_MAX_LENGTH = 500
OUTBOX = cast(Table, OutboxMail.__table__)


class MailNotSentYet(Exception):
    """Another run holds the message's lease: try again after it (the task's retry)."""


@lru_cache(maxsize=4)
def _box(secret_key: str) -> SecretBox:
    # Deriving the key costs an HKDF per box: one per SECRET_KEY, not one per message.
    return SecretBox(secret_key)


def _seal(box: SecretBox, message: MailMessage) -> str:
    return box.encrypt(json.dumps({"text": message.text, "headers": [list(pair) for pair in message.headers]}))


def _unseal(box: SecretBox, row: OutboxMail) -> MailMessage:
    if row.sealed is None:
        raise PermanentTaskError("the message body is gone (past its retention)")
    opened = json.loads(box.decrypt(row.sealed))
    headers = tuple((str(name), str(value)) for name, value in opened["headers"])
    return MailMessage(to=row.to_address, subject=row.subject, text=opened["text"], headers=headers)


def message_id(outbox_id: uuid.UUID, settings: Settings) -> str:
    """Stable per outbox row: a message sent again after a crash carries the same Message-ID."""
    domain = parseaddr(settings.MAIL_FROM)[1].rpartition("@")[2] or "codepulse.localhost"
    return f"<{outbox_id.hex}@{domain}>"


async def queue_mail(
    session: AsyncSession,
    message: MailMessage,
    *,
    settings: Settings,
    now: datetime,
    category: str,
    dedup_key: str | None = None,
) -> uuid.UUID | None:
    """Queue `message` in the caller's transaction; its outbox id, or None when a message with
    `dedup_key` was queued before (one event never mails twice)."""
    outbox_id = uuid.uuid4()
    values = {
        "id": outbox_id,
        "to_address": message.to,
        "subject": message.subject[:300],
        "sealed": _seal(_box(settings.secret_key), message),
        "category": category[:64],
        "dedup_key": dedup_key[:200] if dedup_key is not None else None,
        "status": MailStatus.QUEUED.value,
        "attempts": 0,
        "last_error": None,
        "locked_until": None,
        "created_at": now,
        "updated_at": now,
        "sent_at": None,
    }
    if dedup_key is None:
        await session.execute(OUTBOX.insert().values(values))
    else:
        inserted = await session.execute(
            upsert(session, OUTBOX, conflict=["dedup_key"]).values(values).returning(OUTBOX.c.id)
        )
        if inserted.scalar_one_or_none() is None:
            return None
    payload = {"outbox_id": str(outbox_id)}
    await enqueue(session, DELIVER_TASK, payload, now=now, max_attempts=settings.MAIL_MAX_ATTEMPTS)
    log.info("mail.queued", outbox_id=str(outbox_id), category=category)
    return outbox_id


@dataclass(frozen=True)
class _Taken:
    row: OutboxMail
    attempts: int


async def _take(context: TaskContext, outbox_id: uuid.UUID, now: datetime) -> _Taken | None:
    """queued (or `sending` with an expired lease) -> sending, for this run; None when the message
    is sent or failed already. Raises MailNotSentYet while another run holds it."""
    lease = timedelta(seconds=context.settings.SMTP_TIMEOUT_SECONDS * 2 + 30)
    async with context.database.transaction() as session:
        taken = await session.execute(
            update(OutboxMail)
            .where(
                OutboxMail.id == outbox_id,
                or_(
                    OutboxMail.status == MailStatus.QUEUED.value,
                    (OutboxMail.status == MailStatus.SENDING.value) & (OutboxMail.locked_until < now),
                ),
            )
            .values(
                status=MailStatus.SENDING.value,
                locked_until=now + lease,
                attempts=OutboxMail.attempts + 1,
                updated_at=now,
            )
        )
        row = await session.get(OutboxMail, outbox_id, populate_existing=True)
        if row is None:
            return None  # pruned, or its sender's data deleted
        if rowcount(taken) == 1:
            session.expunge(row)
            return _Taken(row, row.attempts)
        if row.status == MailStatus.SENDING.value:
            raise MailNotSentYet(f"another run is sending mail {outbox_id}")
        return None


async def _settle(
    context: TaskContext, taken: _Taken, status: MailStatus, *, now: datetime, error: str | None = None
) -> None:
    # Fenced on this run's attempt: a run whose lease expired cannot overwrite a newer one.
    async with context.database.transaction() as session:
        await session.execute(
            update(OutboxMail)
            .where(
                OutboxMail.id == taken.row.id,
                OutboxMail.status == MailStatus.SENDING.value,
                OutboxMail.attempts == taken.attempts,
            )
            .values(
                status=status.value,
                locked_until=None,
                last_error=error[:ERROR_MAX_LENGTH] if error else None,
                sent_at=now if status is MailStatus.SENT else None,
                updated_at=now,
            )
        )


def _is_permanent(error: Exception) -> bool:
    """A 5xx answer: the server refuses the message or its address; retrying will not help."""
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        return all(refused.code >= 500 for refused in error.recipients)
    return isinstance(error, aiosmtplib.SMTPResponseException) and error.code >= 500


async def deliver(context: TaskContext) -> None:
    """The `mail.deliver` task: send one outbox message, once."""
    outbox_id = uuid.UUID(str(context.payload["outbox_id"]))
    taken = await _take(context, outbox_id, context.clock())
    if taken is None:
        return
    settings = context.settings
    message = _unseal(_box(settings.secret_key), taken.row)
    message = replace(message, headers=(("Message-ID", message_id(outbox_id, settings)), *message.headers))
    try:
        await build_mailer(settings).send(message)
    except MailDisabled as error:
        # The operator's choice, not a failure of the task: no retry, no failed task to alert on.
        await _settle(context, taken, MailStatus.FAILED, now=context.clock(), error=str(error))
        log.warning("mail.not_sent", outbox_id=str(outbox_id), category=taken.row.category, reason=str(error))
        return
    except Exception as error:
        reason = f"{type(error).__name__}: {error}"
        permanent = _is_permanent(error)
        # Back to queued for the task's retry (a dead task fails it: `fail_dead_deliveries`).
        await _settle(
            context, taken, MailStatus.FAILED if permanent else MailStatus.QUEUED, now=context.clock(), error=reason
        )
        log.warning("mail.attempt_failed", outbox_id=str(outbox_id), attempt=taken.attempts, error=reason[:300])
        if permanent:
            raise PermanentTaskError(reason) from error
        raise
    await _settle(context, taken, MailStatus.SENT, now=context.clock())
    log.info("mail.sent", outbox_id=str(outbox_id), category=taken.row.category, attempt=taken.attempts)


async def fail_dead_deliveries(session: AsyncSession, ended: EndedTask) -> None:
    """A `mail.deliver` task out of attempts (or lost with its worker): the message is `failed`."""
    if ended.kind != DELIVER_TASK:
        return
    try:
        outbox_id = uuid.UUID(str(ended.payload.get("outbox_id")))
    except ValueError:
        return
    await session.execute(
        update(OutboxMail)
        .where(OutboxMail.id == outbox_id, OutboxMail.status.in_([MailStatus.QUEUED.value, MailStatus.SENDING.value]))
        .values(
            status=MailStatus.FAILED.value,
            locked_until=None,
            last_error=ended.error[:ERROR_MAX_LENGTH] or None,
            updated_at=ended.finished_at,
        )
    )
    log.error("mail.failed", outbox_id=str(outbox_id), error=ended.error[:300])


async def prune_outbox(session: AsyncSession, *, now: datetime, body_retention: timedelta, retention: timedelta) -> int:
    """Drop the bodies of messages sent or failed more than `body_retention` ago and the rows of
    those older than `retention`; how many rows were deleted."""
    finished = OutboxMail.status.in_([MailStatus.SENT.value, MailStatus.FAILED.value])
    await session.execute(
        update(OutboxMail)
        .where(finished, OutboxMail.sealed.is_not(None), OutboxMail.updated_at < now - body_retention)
        .values(sealed=None)
    )
    result = await session.execute(delete(OutboxMail).where(finished, OutboxMail.updated_at < now - retention))
    return rowcount(result)


async def outbox_status(session: AsyncSession, outbox_id: uuid.UUID) -> OutboxMail | None:
    return await session.scalar(select(OutboxMail).where(OutboxMail.id == outbox_id))


def register_hooks() -> None:
    """Called at start-up (`create_app`, `codepulse worker`); registering again is a no-op."""
    on_task_ended(fail_dead_deliveries)
