"""factory-boy factories for model objects.

Pattern for every domain: subclass `ModelFactory[Model]`; `Factory.create(...)` builds the object
and adds it to the current test's session (bound by the `session` fixture), typed as the model;
`await session.flush()` when the test needs it in the database. `Factory.build(...)` makes one
without a session. Nothing is committed: the test's transaction is rolled back at the end.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Generic, TypeVar, cast

from factory.alchemy import SQLAlchemyModelFactory
from factory.declarations import LazyAttribute, LazyFunction, Sequence
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.clock import utcnow
from codepulse.db import Base
from codepulse.scans.models import Finding
from codepulse.scheduler import JobRun, JobRunStatus

_session: AsyncSession | None = None


def bind_session(session: AsyncSession | None) -> None:
    global _session
    _session = session


def _current_session() -> AsyncSession:
    if _session is None:
        raise RuntimeError("factories need the `session` fixture (tests/conftest.py)")
    return _session


ModelT = TypeVar("ModelT", bound=Base)


class ModelFactory(SQLAlchemyModelFactory, Generic[ModelT]):
    class Meta:
        abstract = True
        sqlalchemy_session_factory = _current_session
        sqlalchemy_session_persistence = None

    @classmethod
    def create(cls, **kwargs: Any) -> ModelT:
        return cast(ModelT, super().create(**kwargs))

    @classmethod
    def build(cls, **kwargs: Any) -> ModelT:
        return cast(ModelT, super().build(**kwargs))


class JobRunFactory(ModelFactory[JobRun]):
    class Meta:
        model = JobRun

    job_id = Sequence(lambda n: f"test.job_{n}")
    scheduled_for = LazyFunction(utcnow)
    started_at = LazyAttribute(lambda run: run.scheduled_for)
    finished_at = LazyAttribute(lambda run: run.started_at + timedelta(seconds=1))
    status = JobRunStatus.SUCCEEDED.value
    runner: Any = "test-runner"
    error = None


class FindingFactory(ModelFactory[Finding]):
    """A tracked finding; pass `org_id` and `repository_id`."""

    class Meta:
        model = Finding

    fingerprint = Sequence(lambda n: f"{n:064x}")
    rule_id = "aws-access-key-id"
    engine = "secrets"
    severity = "critical"
    severity_rank = 0
    title = "AWS access key ID"
    message = "An AWS access key ID (AKIA************)."
    cwe = "CWE-798"
    path = "app/settings.py"
    start_line = 3
    end_line = 3
    start_column = 14
    end_column = 34
    snippet = 'AWS_KEY_ID = "AKIA************"'
    status = "open"
    first_seen_at = LazyFunction(utcnow)
    last_seen_at = LazyAttribute(lambda finding: finding.first_seen_at)
    reopened_count = 0
