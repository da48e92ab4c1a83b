"""factory-boy factories for model objects.

Pattern for every domain: subclass `ModelFactory`; calling a factory builds the object and
adds it to the current test's session (bound by the `session` fixture); `await session.flush()`
when the test needs it in the database. Nothing is committed: the test's transaction is rolled
back at the end.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import factory
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.db import utcnow
from codepulse.scheduler import JobRun, JobRunStatus

_session: AsyncSession | None = None


def bind_session(session: AsyncSession | None) -> None:
    global _session
    _session = session


def _current_session() -> AsyncSession:
    if _session is None:
        raise RuntimeError("factories need the `session` fixture (tests/conftest.py)")
    return _session


class ModelFactory(factory.alchemy.SQLAlchemyModelFactory):  # type: ignore[misc]
    class Meta:
        abstract = True
        sqlalchemy_session_factory = _current_session
        sqlalchemy_session_persistence = None


class JobRunFactory(ModelFactory):
    class Meta:
        model = JobRun

    job_id = factory.Sequence(lambda n: f"test.job_{n}")
    scheduled_for = factory.LazyFunction(utcnow)
    started_at = factory.LazyAttribute(lambda run: run.scheduled_for)
    finished_at = factory.LazyAttribute(lambda run: run.started_at + timedelta(seconds=1))
    status = JobRunStatus.SUCCEEDED.value
    runner: Any = "test-runner"
    error = None
