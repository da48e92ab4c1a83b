"""factory-boy factories for model objects, and signed-in accounts built from them.

Pattern for every domain: subclass `ModelFactory[Model]`; `Factory.create(...)` builds the object
and adds it to the current test's session (bound by the `session` fixture), typed as the model;
`await session.flush()` when the test needs it in the database. `Factory.build(...)` makes one
without a session. Nothing is committed: the test's transaction is rolled back at the end.

Ids are assigned when an object is built (not at flush), so children can name their parents
before anything is flushed; pass the parent (`org=`, `user=`, `repository=`) or its ids. Flush
parents before children: the models declare no relationships for the unit of work to order by.

Tests about a rule build their data here instead of walking the HTTP flow (registration,
invitations): the async helpers below (`signed_in_user`, `organization`, `member`) flush what
they make, and the app sees it in the same test (its request sessions are savepoints of the
test's connection). They are the `make_user` / `make_org` / `make_member` fixtures of
tests/conftest.py.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Generic, Protocol, TypeVar, cast

from factory.alchemy import SQLAlchemyModelFactory
from factory.declarations import LazyAttribute, LazyFunction, SelfAttribute, Sequence
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth.models import AuthSession, SessionKind, User
from codepulse.auth.schemas import UserOut
from codepulse.auth.sessions import WEB_ABSOLUTE_LIFETIME, WEB_IDLE_LIFETIME
from codepulse.clock import utcnow
from codepulse.db import Base
from codepulse.orgs.models import Membership, Organization, Role
from codepulse.repositories.models import Provider, Repository, ScanSchedule
from codepulse.scans.models import Finding, Scan, ScanPhase, ScanStatus, ScanTrigger
from codepulse.scheduler import JobRun, JobRunStatus
from codepulse.security import hash_token, new_session_token
from tests.auth.helpers import SignedIn

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


_last_instant = utcnow()


def _ascending_now() -> datetime:
    """The current time, strictly later than the last one given: rows listed in creation order
    (members) come back in the order the test made them, even within one clock tick."""
    global _last_instant
    _last_instant = max(utcnow(), _last_instant + timedelta(microseconds=1))
    return _last_instant


@cache
def password_hash(password: str) -> str:
    """argon2id with the test settings' cost (tests/databases.py), so a login does not re-hash."""
    return PasswordHash((Argon2Hasher(time_cost=1, memory_cost=1024, parallelism=1),)).hash(password)


# --- auth ------------------------------------------------------------------------------------


class UserFactory(ModelFactory[User]):
    """A user with a verified email and no password (pass `password=` to set one)."""

    class Meta:
        model = User

    class Params:
        password: str | None = None

    id = LazyFunction(uuid.uuid4)
    username = Sequence(lambda n: f"user{n}")
    email = LazyAttribute(lambda user: f"{user.username}@example.com")
    name = LazyAttribute(lambda user: user.username.title())
    avatar_url = None
    password_hash = LazyAttribute(lambda user: password_hash(user.password) if user.password else None)
    email_verified_at = LazyFunction(utcnow)
    is_superuser = False
    timezone = "UTC"
    profile_public = True


class AuthSessionFactory(ModelFactory[AuthSession]):
    """A web session of `user` (or `user_id`) for the raw `token` (a new one by default); only
    its hash is stored, as the app stores it."""

    class Meta:
        model = AuthSession

    class Params:
        user: User | None = None
        token = LazyFunction(new_session_token)

    id = LazyFunction(uuid.uuid4)
    user_id = LazyAttribute(lambda auth: auth.user.id)
    token_hash = LazyAttribute(lambda auth: hash_token(auth.token))
    kind = SessionKind.WEB.value
    name = "test session"
    created_at = LazyFunction(utcnow)
    last_used_at = SelfAttribute("created_at")
    expires_at = LazyAttribute(lambda auth: auth.created_at + WEB_IDLE_LIFETIME)
    absolute_expires_at = LazyAttribute(lambda auth: auth.created_at + WEB_ABSOLUTE_LIFETIME)
    ip = None
    user_agent = None
    revoked_at = None


# --- orgs ------------------------------------------------------------------------------------


class OrganizationFactory(ModelFactory[Organization]):
    class Meta:
        model = Organization

    id = LazyFunction(uuid.uuid4)
    slug = Sequence(lambda n: f"org-{n}")
    name = LazyAttribute(lambda org: org.slug.replace("-", " ").title())
    avatar_url = None
    created_by = None
    deleted_at = None


class MembershipFactory(ModelFactory[Membership]):
    """`user` (or `user_id`) in `org` (or `org_id`) with `role` (member by default)."""

    class Meta:
        model = Membership

    class Params:
        org: Organization | None = None
        user: User | None = None

    id = LazyFunction(uuid.uuid4)
    org_id = LazyAttribute(lambda membership: membership.org.id)
    user_id = LazyAttribute(lambda membership: membership.user.id)
    role = Role.MEMBER.value
    created_at = LazyFunction(_ascending_now)
    updated_at = SelfAttribute("created_at")


# --- repositories ----------------------------------------------------------------------------


class RepositoryFactory(ModelFactory[Repository]):
    """A public GitHub repository of `org` (or `org_id`)."""

    class Meta:
        model = Repository

    class Params:
        org: Organization | None = None

    id = LazyFunction(uuid.uuid4)
    org_id = LazyAttribute(lambda repository: repository.org.id)
    name = Sequence(lambda n: f"octo/repo-{n}")
    provider = Provider.GITHUB.value
    canonical_url = LazyAttribute(lambda repository: f"https://github.com/{repository.name}")
    clone_url = LazyAttribute(lambda repository: f"{repository.canonical_url}.git")
    default_branch = None
    external_id = None
    private = False
    scan_schedule = ScanSchedule.NONE.value
    created_by = None
    archived = False


# --- scans -----------------------------------------------------------------------------------


class ScanFactory(ModelFactory[Scan]):
    """A finished scan of `repository` (or `org_id` + `repository_id`) on its default branch.
    An active one (queued, running) must be unique per repository and ref."""

    class Meta:
        model = Scan

    class Params:
        repository: Repository | None = None

    id = LazyFunction(uuid.uuid4)
    org_id = LazyAttribute(lambda scan: scan.repository.org_id)
    repository_id = LazyAttribute(lambda scan: scan.repository.id)
    requested_by = None
    trigger = ScanTrigger.MANUAL.value
    ref = None
    ref_key = ""
    commit_sha = Sequence(lambda n: f"{n:040x}")
    status = ScanStatus.SUCCEEDED.value
    phase = ScanPhase.DONE.value
    queued_at = LazyFunction(utcnow)
    started_at = SelfAttribute("queued_at")
    finished_at = LazyAttribute(lambda scan: scan.started_at + timedelta(seconds=1))
    duration_ms = 1000


class FindingFactory(ModelFactory[Finding]):
    """A tracked open finding of `repository` (or `org_id` + `repository_id`)."""

    class Meta:
        model = Finding

    class Params:
        repository: Repository | None = None

    id = LazyFunction(uuid.uuid4)
    org_id = LazyAttribute(lambda finding: finding.repository.org_id)
    repository_id = LazyAttribute(lambda finding: finding.repository.id)
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


# --- platform --------------------------------------------------------------------------------


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


# --- signed-in accounts, organizations and members, flushed ---------------------------------


@dataclass
class Account(SignedIn):
    """A user the factories made, signed in: what signing up through the API gives (`token`,
    `headers`, the `user` as the API renders it), plus the model."""

    model: User


def user_json(user: User) -> dict[str, Any]:
    """`user` as the API renders it (after a flush: created_at is set then)."""
    return UserOut.model_validate(user).model_dump(mode="json")


async def signed_in_user(username: str | None = None, **fields: Any) -> Account:
    """A user (UserFactory `fields`) with a web session whose bearer token the app accepts."""
    session = _current_session()
    user = UserFactory.create(**fields, **({"username": username} if username else {}))
    await session.flush()
    token = new_session_token()
    AuthSessionFactory.create(user=user, token=token)
    await session.flush()
    return Account(token, user_json(user), user)


async def organization(owner: SignedIn | User | None = None, **fields: Any) -> Organization:
    """An organization (OrganizationFactory `fields`) with `owner` as its owner, if given: an
    account of these factories, a user model, or anyone signed in through the API."""
    session = _current_session()
    if isinstance(owner, Account):
        user: User | None = owner.model
    elif isinstance(owner, SignedIn):
        user = await session.get_one(User, uuid.UUID(owner.user["id"]))
    else:
        user = owner
    org = OrganizationFactory.create(**({"created_by": user.id} if user else {}), **fields)
    await session.flush()
    if user is not None:
        MembershipFactory.create(org=org, user=user, role=Role.OWNER.value)
        await session.flush()
    return org


async def member(
    org: Organization, role: Role | str = Role.MEMBER, username: str | None = None, **fields: Any
) -> Account:
    """A new signed-in user who is a member of `org` with `role`."""
    account = await signed_in_user(username, **fields)
    MembershipFactory.create(org=org, user=account.model, role=Role(role).value)
    await _current_session().flush()
    return account


class MakeUser(Protocol):
    async def __call__(self, username: str | None = None, **fields: Any) -> Account: ...


class MakeOrg(Protocol):
    async def __call__(self, owner: SignedIn | User | None = None, **fields: Any) -> Organization: ...


class MakeMember(Protocol):
    async def __call__(
        self, org: Organization, role: Role | str = Role.MEMBER, username: str | None = None, **fields: Any
    ) -> Account: ...
