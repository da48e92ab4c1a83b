"""The mail outbox against a real local SMTP server: queued in the sender's transaction, retried
while SMTP is down, sent once by two workers, failed after its attempts, bodies sealed and pruned.

Each test has a fresh database with real commits (two engines where two workers race); time
moves with an injected clock, nothing sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from codepulse.config import Environment, Settings
from codepulse.db import Database
from codepulse.integrations.mailer import MailMessage
from codepulse.mail import jobs as mail_jobs
from codepulse.mail.models import MailStatus, OutboxMail
from codepulse.mail.outbox import DELIVER_TASK, prune_outbox, queue_mail, register_hooks
from codepulse.tasks import Task, TaskRegistry, TaskStatus, Worker, enqueue
from tests.databases import DatabaseServer, build_settings
from tests.helpers import FakeClock
from tests.stubs.smtp import SmtpServer

BACKOFF = 10.0


@dataclass
class Outbox:
    settings: Settings
    clock: FakeClock
    smtp: SmtpServer
    databases: list[Database] = field(default_factory=list)

    @property
    def database(self) -> Database:
        return self.databases[0]

    def open(self) -> Database:
        database = Database.from_settings(self.settings)
        self.databases.append(database)
        return database

    async def queue(self, to: str = "ada@example.com", text: str = "hello", **options: object) -> uuid.UUID | None:
        async with self.database.transaction() as session:
            message = MailMessage(to=to, subject="Hello", text=text)
            return await queue_mail(
                session,
                message,
                settings=self.settings,
                now=self.clock(),
                category="test",
                **options,  # type: ignore[arg-type]
            )

    def worker(self, database: Database | None = None, name: str = "w1") -> Worker:
        registry = TaskRegistry()
        mail_jobs.register_tasks(registry)
        return Worker(database or self.database, self.settings, registry, clock=self.clock, worker_id=name)

    async def run(self) -> int:
        return await self.worker().run_until_idle()

    async def row(self, outbox_id: uuid.UUID | None) -> OutboxMail:
        async with self.database.session(write=False) as session:
            row = await session.get(OutboxMail, outbox_id)
            assert row is not None
            return row

    async def tasks(self) -> list[Task]:
        async with self.database.session(write=False) as session:
            return list(await session.scalars(select(Task).where(Task.kind == DELIVER_TASK)))


@pytest.fixture
async def outbox(database_server: DatabaseServer, clock: FakeClock) -> AsyncIterator[Outbox]:
    register_hooks()
    smtp = SmtpServer()  # not started: SMTP is down until a test starts it
    url = await database_server.clone("mail")
    settings = build_settings(url, TASK_RETRY_BACKOFF_SECONDS=BACKOFF, MAIL_MAX_ATTEMPTS=3, **smtp.settings())
    box = Outbox(settings, clock, smtp)
    box.open()
    try:
        yield box
    finally:
        smtp.close()
        for database in box.databases:
            await database.dispose()


async def test_mail_waits_while_smtp_is_down_and_goes_once_it_is_back(outbox: Outbox) -> None:
    outbox_id = await outbox.queue(text="your link: https://example.test/verify?token=secret-token-123")
    assert await outbox.run() == 1  # refused: nothing listens
    row = await outbox.row(outbox_id)
    assert (row.status, row.attempts) == (MailStatus.QUEUED.value, 1)
    assert row.last_error is not None
    assert "Connect" in row.last_error
    assert row.sealed is not None
    assert "secret-token-123" not in row.sealed  # sealed at rest
    [task] = await outbox.tasks()
    assert task.status == TaskStatus.QUEUED.value
    assert task.run_at == outbox.clock() + timedelta(seconds=BACKOFF)

    outbox.smtp.start()
    assert await outbox.run() == 0  # not due before its backoff
    outbox.clock.advance(seconds=BACKOFF)
    assert await outbox.run() == 1
    [message] = outbox.smtp.messages
    assert message["To"] == "ada@example.com"
    assert "secret-token-123" in str(message.get_payload())
    assert message["Message-ID"] == f"<{outbox_id.hex}@codepulse.localhost>"  # type: ignore[union-attr]
    row = await outbox.row(outbox_id)
    assert (row.status, row.attempts, row.sent_at, row.last_error) == ("sent", 2, outbox.clock(), None)
    outbox.clock.advance(days=1)
    assert await outbox.run() == 0
    assert len(outbox.smtp.messages) == 1


async def test_a_message_fails_after_its_last_attempt(outbox: Outbox) -> None:
    outbox_id = await outbox.queue()
    for attempt in range(3):
        assert await outbox.run() == 1
        outbox.clock.advance(seconds=BACKOFF * 2**attempt)
    row = await outbox.row(outbox_id)
    assert (row.status, row.attempts) == (MailStatus.FAILED.value, 3)
    assert row.last_error is not None
    [task] = await outbox.tasks()
    assert task.status == TaskStatus.DEAD.value
    outbox.smtp.start()
    assert await outbox.run() == 0
    assert outbox.smtp.messages == []


async def test_an_address_the_server_refuses_fails_at_once(outbox: Outbox) -> None:
    outbox.smtp.start()
    outbox.smtp.refuse("gone@example.com")
    refused = await outbox.queue(to="gone@example.com")
    delivered = await outbox.queue(to="here@example.com")
    assert await outbox.run() == 2
    row = await outbox.row(refused)
    assert (row.status, row.attempts) == (MailStatus.FAILED.value, 1)
    assert row.last_error is not None
    assert "550" in row.last_error
    assert (await outbox.row(delivered)).status == MailStatus.SENT.value
    assert [m["To"] for m in outbox.smtp.messages] == ["here@example.com"]


Logs = Callable[[str], list[dict[str, object]]]


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    """Everything logged, event dicts included (the `logs` fixture's source; structlog's
    capture_logs misses loggers an earlier test already cached)."""
    return caplog.text + repr([record.msg for record in caplog.records])


# base_settings: logging configured as the app has it (structlog into stdlib, where caplog reads).
@pytest.mark.usefixtures("base_settings")
async def test_disabled_mail_fails_each_message_at_once_and_says_why(
    outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    outbox.smtp.start()  # configured, but the operator turned mail off
    outbox.settings = outbox.settings.model_copy(update={"MAIL_DISABLED": True})
    outbox_id = await outbox.queue(text="reset: https://example.test/reset?token=secret-token-9")
    assert await outbox.run() == 1
    row = await outbox.row(outbox_id)
    assert (row.status, row.attempts, row.sent_at) == (MailStatus.FAILED.value, 1, None)
    assert row.last_error == "mail is disabled (MAIL_DISABLED=true)"
    [task] = await outbox.tasks()
    assert task.status == TaskStatus.SUCCEEDED.value  # the operator's choice, not a task to retry
    assert outbox.smtp.messages == []
    [warning] = [r for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == "mail.not_sent"]
    assert warning.levelno == logging.WARNING
    assert "secret-token-9" not in _logged(caplog)


# base_settings: logging configured as the app has it (structlog into stdlib, where caplog reads).
@pytest.mark.usefixtures("base_settings")
async def test_production_without_smtp_never_counts_a_message_sent(
    outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    # Settings refuse this; settings built around the check still must not lose the message.
    outbox.settings = outbox.settings.model_copy(update={"ENVIRONMENT": Environment.PRODUCTION, "SMTP_HOST": None})
    outbox_id = await outbox.queue(text="verify: https://example.test/verify?token=secret-token-7")
    caplog.set_level(logging.DEBUG)
    assert await outbox.run() == 1
    row = await outbox.row(outbox_id)
    assert (row.status, row.attempts, row.sent_at) == (MailStatus.QUEUED.value, 1, None)
    assert row.last_error is not None
    assert row.last_error.startswith("MailNotConfigured: SMTP_HOST is not set")
    assert "secret-token-7" not in _logged(caplog)
    # Retried as after an SMTP error, then failed after its last attempt.
    for attempt in range(1, 3):
        outbox.clock.advance(seconds=BACKOFF * 2**attempt)
        assert await outbox.run() == 1
    row = await outbox.row(outbox_id)
    assert (row.status, row.attempts) == (MailStatus.FAILED.value, 3)


# base_settings: logging configured as the app has it (structlog into stdlib, where caplog reads).
@pytest.mark.usefixtures("base_settings")
async def test_development_without_smtp_logs_the_message_with_its_link(outbox: Outbox, logs: Logs) -> None:
    outbox.settings = outbox.settings.model_copy(update={"SMTP_HOST": None})
    outbox_id = await outbox.queue(text="verify: https://example.test/verify?token=dev-token-1")
    assert await outbox.run() == 1
    row = await outbox.row(outbox_id)
    assert (row.status, row.sent_at) == (MailStatus.SENT.value, outbox.clock())
    [logged] = logs("mail.logged")
    assert "dev-token-1" in str(logged["body"])


async def test_two_workers_deliver_one_outbox_without_a_duplicate(outbox: Outbox) -> None:
    outbox.smtp.start()
    ids = [await outbox.queue(to=f"user{number}@example.com") for number in range(24)]
    # A second task for the same message, as a retry racing a slow first run would be.
    async with outbox.database.transaction() as session:
        for outbox_id in ids[:6]:
            await enqueue(session, DELIVER_TASK, {"outbox_id": str(outbox_id)}, now=outbox.clock())
    first, second = outbox.worker(name="w1"), outbox.worker(outbox.open(), name="w2")
    runs = sum(await asyncio.gather(first.run_until_idle(), second.run_until_idle()))
    # A duplicate that found its message mid-send by the other worker tries again after a backoff.
    while any(task.status != TaskStatus.SUCCEEDED.value for task in await outbox.tasks()):
        outbox.clock.advance(seconds=BACKOFF)
        runs += sum(await asyncio.gather(first.run_until_idle(), second.run_until_idle()))
    assert runs >= 30
    received = sorted(str(m["To"]) for m in outbox.smtp.messages)
    assert received == sorted(f"user{number}@example.com" for number in range(24))
    for outbox_id in ids:
        assert (await outbox.row(outbox_id)).status == MailStatus.SENT.value


async def test_a_run_takes_over_only_after_the_senders_lease(outbox: Outbox) -> None:
    outbox.smtp.start()
    outbox_id = await outbox.queue()
    async with outbox.database.transaction() as session:
        row = await session.get(OutboxMail, outbox_id)
        assert row is not None
        # Another worker is sending it (and may have died doing so).
        row.status, row.locked_until, row.attempts = MailStatus.SENDING.value, outbox.clock() + timedelta(minutes=1), 1
    assert await outbox.run() == 1
    assert outbox.smtp.messages == []
    [task] = await outbox.tasks()
    assert task.status == TaskStatus.QUEUED.value  # tried again later
    outbox.clock.advance(minutes=2)
    assert await outbox.run() == 1
    assert len(outbox.smtp.messages) == 1
    assert (await outbox.row(outbox_id)).status == MailStatus.SENT.value


async def test_a_rolled_back_sender_queues_nothing_and_a_dedup_key_mails_once(outbox: Outbox) -> None:
    async def failing_sender() -> None:
        async with outbox.database.transaction() as session:
            message = MailMessage(to="ada@example.com", subject="x", text="y")
            await queue_mail(session, message, settings=outbox.settings, now=outbox.clock(), category="test")
            raise RuntimeError("the sender's change failed")

    with pytest.raises(RuntimeError):
        await failing_sender()
    assert await outbox.tasks() == []
    assert await outbox.queue(dedup_key="event-1") is not None
    assert await outbox.queue(dedup_key="event-1") is None
    async with outbox.database.session(write=False) as session:
        assert await session.scalar(select(func.count()).select_from(OutboxMail)) == 1
    assert len(await outbox.tasks()) == 1


async def test_bodies_are_dropped_after_their_retention_and_rows_after_theirs(outbox: Outbox) -> None:
    outbox.smtp.start()
    sent = await outbox.queue()
    await outbox.run()
    waiting = await outbox.queue(to="later@example.com")
    async with outbox.database.transaction() as session:
        args = {"body_retention": timedelta(hours=72), "retention": timedelta(days=30)}
        assert await prune_outbox(session, now=outbox.clock() + timedelta(hours=71), **args) == 0
        assert (await outbox.row(sent)).sealed is not None
        assert await prune_outbox(session, now=outbox.clock() + timedelta(hours=73), **args) == 0
    assert (await outbox.row(sent)).sealed is None
    assert (await outbox.row(waiting)).sealed is not None  # not sent yet: kept
    async with outbox.database.transaction() as session:
        assert await prune_outbox(session, now=outbox.clock() + timedelta(days=31), **args) == 1
    assert (await outbox.row(waiting)).status == MailStatus.QUEUED.value
