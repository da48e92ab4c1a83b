"""`codepulse seed`: demo data on a fresh install, idempotently, never in production.

What it makes (each piece found before it is made, so a second run the same day changes nothing):

- users `demo-owner`, `demo-admin`, `demo-member`, `demo-viewer` (and `demo-user-N` beyond four),
  emails at example.com, verified, public profiles, passwords `demo-password-N` (`people`);
- organizations `acme-demo` and `globex-demo` on the team plan, with every role in each (`people`);
- a Git repository under VAR_DIR with planted test secrets (`gitrepo`), connected to `acme-demo`
  as a file:// URL and scanned by the real scan worker, a head scan and a history scan;
- usage over the last D days for every user, synced as the CLI would (`usage`), then the
  leaderboards and community benchmarks recomputed once.

A file:// repository needs ALLOW_LOCAL_REPOSITORIES: the seed turns it on for its own run (it
refuses production, the one place the setting is unsafe) and leaves the deployment's setting
alone; rescanning the demo repository from the API needs the server started with it.

The top layer (beside `cli` and `app`): it calls every slice's services, never their tables.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC

from codepulse.app import register_hooks
from codepulse.clock import ClockFunc, utcnow
from codepulse.config import Settings
from codepulse.db import Database
from codepulse.leaderboard.benchmarks import compute_benchmarks
from codepulse.leaderboard.ranking import recompute_rankings
from codepulse.scans import runner as scans_runner
from codepulse.security import PasswordHasher
from codepulse.seed import people, usage
from codepulse.seed.people import SeedError
from codepulse.seed.repository import SeededRepository, ensure_scanned_repository
from codepulse.seed.usage import UsageTotals

__all__ = ["SeedError", "SeedReport", "refuse_production", "render_report", "seed", "seed_database"]

DEFAULT_USERS = 6
DEFAULT_DAYS = 30


@dataclass(frozen=True)
class SeededUser:
    email: str
    username: str
    password: str | None  # None: changed since it was seeded
    created: bool
    roles: dict[str, str]  # organization slug -> role


@dataclass
class SeedReport:
    users: list[SeededUser] = field(default_factory=list)
    orgs: list[tuple[str, str]] = field(default_factory=list)  # (slug, name)
    repository: SeededRepository | None = None
    usage: UsageTotals = field(default_factory=UsageTotals)
    days: int = 0


def refuse_production(settings: Settings) -> None:
    """Raise SeedError in production: demo accounts with published passwords do not belong there."""
    if settings.is_production:
        raise SeedError(
            "seed refuses to run with ENVIRONMENT=production: it creates accounts whose passwords it prints"
        )


async def seed(
    database: Database,
    settings: Settings,
    *,
    users: int = DEFAULT_USERS,
    days: int = DEFAULT_DAYS,
    clock: ClockFunc = utcnow,
) -> SeedReport:
    """Fill `database` (migrated) with the demo; safe to run again. Raises SeedError."""
    refuse_production(settings)
    if not 1 <= days <= 365:
        raise SeedError("--days must be within 1..365 (the sync accepts records up to 400 days old)")
    settings = settings.model_copy(update={"ALLOW_LOCAL_REPOSITORIES": True})
    register_hooks()  # quotas, the orgs' rules on accounts, scan notifications: as in the app
    report = SeedReport(days=days)
    user_specs = people.demo_users(users)
    org_specs = people.demo_orgs(user_specs)
    hasher = PasswordHasher(settings)
    async with database.transaction() as session:
        made = {spec.username: await people.ensure_user(session, settings, hasher, clock, spec) for spec in user_specs}
        accounts = {username: ensured.user for username, ensured in made.items()}
        for org_spec in org_specs:
            access = await people.ensure_org(session, settings, clock, org_spec, accounts)
            report.orgs.append((access.org.slug, access.org.name))
    for spec in user_specs:
        ensured = made[spec.username]
        password = spec.password if ensured.password_works else None
        roles = {org.slug: _role_of(org, spec.username) for org in org_specs}
        report.users.append(SeededUser(ensured.user.email, ensured.user.username, password, ensured.created, roles))
    owner = accounts[org_specs[0].owner]
    report.repository = await ensure_scanned_repository(database, settings, clock, owner, org_specs[0].slug)
    today = clock().astimezone(UTC).date()
    dates = usage.usage_days(today, days)
    for index, spec in enumerate(user_specs):
        records = usage.user_records(index, spec.username, dates)
        _add(report.usage, await usage.sync_usage(database, settings, clock, accounts[spec.username], records))
    # The boards and benchmarks read snapshots the scheduler refreshes; one run now fills them.
    now = clock()
    await recompute_rankings(database, settings, now)
    await compute_benchmarks(database, settings, now)
    return report


def _role_of(org: people.DemoOrg, username: str) -> str:
    return "owner" if org.owner == username else org.roles[username].value


def _add(total: UsageTotals, part: UsageTotals) -> None:
    total.records += part.records
    total.inserted += part.inserted
    total.updated += part.updated
    total.unchanged += part.unchanged


def seed_database(settings: Settings, *, users: int = DEFAULT_USERS, days: int = DEFAULT_DAYS) -> SeedReport:
    """`seed` on the configured database (blocking; for the CLI), with the scan engine processes
    and clone directories it starts cleaned up at the end."""

    async def run() -> SeedReport:
        database = Database.from_settings(settings)
        try:
            return await seed(database, settings, users=users, days=days)
        finally:
            await database.dispose()

    refuse_production(settings)
    scans_runner.prepare_process(settings)
    try:
        return asyncio.run(run())
    finally:
        scans_runner.release_process()


def render_report(report: SeedReport, settings: Settings) -> str:
    """What was seeded and what to open, for the terminal."""
    base = f"http://{settings.HOST}:{settings.PORT}"
    lines = ["Demo data is in place.", "", "Users (sign in with the email or the username):"]
    width = max(len(user.username) for user in report.users)
    for user in report.users:
        roles = ", ".join(f"{role} of {slug}" for slug, role in user.roles.items())
        password = user.password or "(changed since)"
        lines.append(f"  {user.username:<{width}}  {user.email:<28}  {password:<18}  {roles}")
    slugs = max(len(slug) for slug, _name in report.orgs)
    lines += ["", "Organizations (team plan):", *(f"  {slug:<{slugs}}  {name}" for slug, name in report.orgs)]
    repository = report.repository
    if repository is not None:
        lines += ["", "Repository:", *repository.describe()]
    totals = report.usage
    lines += [
        "",
        f"Usage: {totals.records:,} records over the last {report.days} days "
        f"({totals.inserted:,} new, {totals.updated:,} updated, {totals.unchanged:,} already there); "
        "leaderboards and benchmarks recomputed.",
        "",
        "Next: `uv run codepulse serve`, then open",
        f"  {base}/docs  (Authorize: POST /api/v1/auth/login with a login and password above, then paste the token)",
        *(f"  {base}{path}" for path in _PATHS),
    ]
    return "\n".join(lines)


_PATHS: Sequence[str] = (
    "/api/v1/dashboard/overview, /dashboard/trends, /dashboard/sources, /dashboard/models  (signed in)",
    "/api/v1/leaderboard?period=30d&metric=tokens  and  /api/v1/benchmarks?range=30d",
    "/api/v1/orgs  and  /api/v1/orgs/acme-demo/members, /orgs/acme-demo/usage, /orgs/acme-demo/leaderboard",
    "/api/v1/orgs/acme-demo/repositories, then /api/v1/repositories/{id}/findings",
)
