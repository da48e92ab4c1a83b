"""The demo's people: fixed accounts and two organizations with every role, found before made.

Everything goes through the slices' services (registration, profile, memberships, plans), so
the rows are the ones the API would have written. Nothing here commits.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth import service as auth_service
from codepulse.auth.schemas import RegisterIn, UserUpdate
from codepulse.auth.service import AuthService, User
from codepulse.auth.sessions import Device
from codepulse.billing.service import BillingService
from codepulse.clock import ClockFunc
from codepulse.config import Settings
from codepulse.errors import DomainError
from codepulse.orgs.schemas import OrgCreate
from codepulse.orgs.service import OrgAccess, OrgService, Role, get_membership
from codepulse.security import PasswordHasher

# Room for every demo member (the free plan has 3 seats), and what a team would buy.
DEMO_PLAN = "team"
MIN_USERS = 4  # one per role
MAX_USERS = 40  # within the team plan's 50 seats
# The device registration records for the session it opens (nobody ever sees that token).
SEED_DEVICE = Device(ip=None, user_agent="codepulse seed")


class SeedError(Exception):
    """The demo cannot be (re)built as asked; the message says why and what to do."""


@dataclass(frozen=True)
class DemoUser:
    username: str
    name: str
    password: str

    @property
    def email(self) -> str:
        return f"{self.username}@example.com"


@dataclass(frozen=True)
class DemoOrg:
    slug: str
    name: str
    owner: str  # the username that creates it (and stays its owner)
    roles: dict[str, Role]  # every other member's role, by username


_NAMED = (
    ("demo-owner", "Olivia Owner"),
    ("demo-admin", "Adrian Admin"),
    ("demo-member", "Mia Member"),
    ("demo-viewer", "Victor Viewer"),
)


def demo_users(count: int) -> list[DemoUser]:
    """The first `count` demo accounts; passwords pass the policy (10+ characters, not common)."""
    if not MIN_USERS <= count <= MAX_USERS:
        raise SeedError(f"--users must be within {MIN_USERS}..{MAX_USERS} (one per role, within the team plan)")
    names = list(_NAMED) + [(f"demo-user-{n}", f"Demo User {n}") for n in range(len(_NAMED) + 1, count + 1)]
    return [DemoUser(username, name, f"demo-password-{n}") for n, (username, name) in enumerate(names[:count], 1)]


def demo_orgs(users: list[DemoUser]) -> list[DemoOrg]:
    """Two organizations with every role, the four named users holding different roles in each
    (sign in as one person, see two views); further users are members of one, viewers of the other."""
    extra = [user.username for user in users[len(_NAMED) :]]
    acme = {"demo-admin": Role.ADMIN, "demo-member": Role.MEMBER, "demo-viewer": Role.VIEWER}
    globex = {"demo-viewer": Role.ADMIN, "demo-owner": Role.MEMBER, "demo-member": Role.VIEWER}
    return [
        DemoOrg("acme-demo", "Acme (demo)", "demo-owner", acme | dict.fromkeys(extra, Role.MEMBER)),
        DemoOrg("globex-demo", "Globex (demo)", "demo-admin", globex | dict.fromkeys(extra, Role.VIEWER)),
    ]


@dataclass(frozen=True)
class EnsuredUser:
    user: User
    created: bool
    password_works: bool  # False: someone changed it since; the report does not print it


async def ensure_user(
    session: AsyncSession, settings: Settings, hasher: PasswordHasher, clock: ClockFunc, spec: DemoUser
) -> EnsuredUser:
    """The account with the demo email (registered when missing), verified and public (the public
    boards and benchmarks show public profiles only). An existing account keeps its password."""
    auth = AuthService(session, settings, hasher, clock)
    user = await auth_service.user_by_email(session, spec.email)
    created = user is None
    if user is None:
        data = RegisterIn(email=spec.email, password=spec.password, username=spec.username, name=spec.name)
        user = (await auth.accounts.register(data, SEED_DEVICE, mail_verification=False)).user
        works = True
    else:
        works = user.password_hash is not None and (await hasher.verify(spec.password, user.password_hash))[0]
    await auth.accounts.confirm_email(user)
    if not user.profile_public:
        await auth.accounts.update_profile(user, UserUpdate(profile_public=True))
    return EnsuredUser(user, created, works)


async def ensure_org(
    session: AsyncSession, settings: Settings, clock: ClockFunc, spec: DemoOrg, users: dict[str, User]
) -> OrgAccess:
    """The organization with the demo slug, on the demo plan, with exactly the demo roles for the
    demo users (a role changed since is set back; other members are left alone)."""
    orgs = OrgService(session, settings, clock)
    owner = users[spec.owner]
    org = await orgs.resolve(spec.slug)
    if org is None:
        access = await orgs.create(owner, OrgCreate(name=spec.name, slug=spec.slug), ip=None)
    else:
        try:
            access = await orgs.access(owner, org, Role.OWNER)
        except DomainError:
            raise SeedError(
                f"the organization {spec.slug!r} exists but {owner.username} does not own it; "
                "rename or delete it, or seed another database"
            ) from None
    if access.org.plan != DEMO_PLAN:
        await BillingService(session, settings, clock).assign_plan(access.org, DEMO_PLAN, None, None, source="seed")
    for username, role in spec.roles.items():
        user = users[username]
        membership = await get_membership(session, access.org.id, user.id)
        if membership is None:
            await orgs.add_member(access, user, role, ip=None)
        elif membership.role != role.value:
            await orgs.change_role(access, user.id, role, ip=None)
    return access
