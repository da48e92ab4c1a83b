"""The `codepulse` command.

Typer rather than argparse: options come from type hints (the same habit as FastAPI), help text
and shell completion for free, and `typer.testing.CliRunner` for tests. Later domains add their
commands here (scans adds `worker`).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from codepulse import __version__
from codepulse.client import commands as client_commands

if TYPE_CHECKING:
    from codepulse.config import Settings

# Only typer and the standard library at import: `codepulse --help` and the CLI client's commands
# must start fast, so each server command imports what it needs (settings, SQLAlchemy, uvicorn,
# the domains) when it runs (tests/test_cli.py checks what `import codepulse.cli` loads).

# Plain help and errors: rich's rendering would import rich on every `--help` (about 80 ms).
app = typer.Typer(
    name="codepulse",
    help="codepulse: the backend server and the CLI client.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


def _settings() -> Settings:
    """The settings from the environment, with logging configured from them."""
    from codepulse.config import SettingsError, load_settings
    from codepulse.logging import configure_logging

    try:
        settings = load_settings()
    except SettingsError as error:
        # One line per bad variable, no traceback: this is an operator's mistake, not a bug.
        typer.echo(f"codepulse: configuration error: {error}", err=True)
        raise typer.Exit(2) from None
    configure_logging(settings)
    return settings


def _fail(message: str) -> typer.Exit:
    typer.echo(f"codepulse: {message}", err=True)
    return typer.Exit(1)


def _database_errors() -> tuple[type[Exception], ...]:
    from sqlalchemy.exc import SQLAlchemyError

    return (OSError, TimeoutError, SQLAlchemyError)


def _database_error(error: Exception) -> str:
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return f"cannot reach the database ({type(error).__name__}: {first_line[:200]})"


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind [default: HOST or 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [default: PORT or 8000].")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes [default: WEB_CONCURRENCY or 1].")] = None,
    reload: Annotated[bool, typer.Option(help="Restart on code changes (development).")] = False,
    migrate: Annotated[bool, typer.Option(help="Upgrade a PostgreSQL schema to head before serving.")] = False,
) -> None:
    """Run the API (and, unless disabled, the scheduler). Migrates an embedded SQLite database first."""
    from codepulse import migrations

    settings = _settings()
    try:
        if settings.is_sqlite or migrate:
            migrations.upgrade_database(settings)
        elif not migrations.schema_is_current(settings):
            raise _fail(
                "the database schema is not at the latest migration; "
                "run `codepulse migrate` first (or start with `codepulse serve --migrate`)"
            )
    except _database_errors() as error:
        raise _fail(_database_error(error)) from None
    import uvicorn

    uvicorn.run(
        "codepulse.app:create_app_from_env",
        factory=True,
        host=host or settings.HOST,
        port=port or settings.PORT,
        workers=None if reload else (workers or settings.WEB_CONCURRENCY),
        reload=reload,
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=True,
        forwarded_allow_ips=settings.FORWARDED_ALLOW_IPS,
        timeout_graceful_shutdown=settings.SHUTDOWN_GRACE_SECONDS,
    )


@app.command()
def migrate() -> None:
    """Upgrade the database schema to the latest migration."""
    from codepulse import migrations

    settings = _settings()
    try:
        migrations.upgrade_database(settings)
    except _database_errors() as error:
        raise _fail(_database_error(error)) from None
    typer.echo(f"database at {migrations.head_revision()}")


@app.command()
def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, max=64, help="Tasks run at once [default: WORKER_CONCURRENCY, or 2 when that is 0]."),
    ] = None,
) -> None:
    """Run background tasks (scans, ...) in a process of its own, to scale out; stops on SIGTERM."""
    import asyncio

    from codepulse import migrations
    from codepulse.app import register_hooks
    from codepulse.scans import runner as scans_runner
    from codepulse.tasks import run_worker_process

    settings = _settings()
    try:
        # A worker never migrates: that is `migrate`'s (or an SQLite `serve`'s) job.
        if not migrations.schema_is_current(settings):
            raise _fail("the database schema is not at the latest migration; run `codepulse migrate` first")
    except _database_errors() as error:
        raise _fail(_database_error(error)) from None
    # WORKER_CONCURRENCY=0 only turns off the workers inside `serve`; a dedicated worker still runs.
    default = settings.WORKER_CONCURRENCY or type(settings).model_fields["WORKER_CONCURRENCY"].default
    register_hooks()  # a task that dies settles its domain's state (a scan fails) here too
    scans_runner.prepare_process(settings)
    try:
        asyncio.run(run_worker_process(settings, concurrency=concurrency or default))
    finally:
        scans_runner.release_process()


@app.command()
def seed(
    users: Annotated[int, typer.Option(min=4, max=40, help="Demo users (at least one per role).")] = 6,
    days: Annotated[int, typer.Option(min=1, max=365, help="Days of usage per user, ending yesterday.")] = 30,
) -> None:
    """Fill the configured database with demo data: users (passwords printed), two organizations
    with every role, a scanned demo repository with test secrets, usage, leaderboards. Idempotent;
    refused when ENVIRONMENT=production. Migrates the database first."""
    from codepulse import migrations
    from codepulse.errors import DomainError
    from codepulse.seed import SeedError, refuse_production, render_report, seed_database

    settings = _settings()
    try:
        refuse_production(settings)  # before anything touches the database, migrations included
        migrations.upgrade_database(settings)
        report = seed_database(settings, users=users, days=days)
    except SeedError as error:
        raise _fail(str(error)) from None
    except DomainError as error:
        # A service refused (a demo username taken by another account, ...): say which rule.
        raise _fail(f"seed stopped: {error} ({error.instance_code})") from None
    except _database_errors() as error:
        raise _fail(_database_error(error)) from None
    typer.echo(render_report(report, settings))


usage_app = typer.Typer(name="usage", help="Usage analytics maintenance.", no_args_is_help=True)
app.add_typer(usage_app)


@usage_app.command("reprice")
def usage_reprice(
    since: Annotated[
        datetime | None,
        typer.Option(formats=["%Y-%m-%d"], help="Only records of this local day or later (YYYY-MM-DD)."),
    ] = None,
) -> None:
    """Recompute stored costs and daily aggregates with the prices in force (after a price change)."""
    from codepulse.usage.service import reprice_database

    settings = _settings()
    try:
        report = reprice_database(settings, since.date() if since else None)
    except _database_errors() as error:
        raise _fail(_database_error(error)) from None
    typer.echo(
        f"repriced {report.changed:,} of {report.records:,} records of {report.users:,} users; "
        f"cost changed by {report.cost_delta_usd} USD"
    )


billing_app = typer.Typer(name="billing", help="Plans of organizations.", no_args_is_help=True)
app.add_typer(billing_app)


class PlanChoice(StrEnum):
    free = "free"
    pro = "pro"
    team = "team"
    enterprise = "enterprise"
    default = "default"


@billing_app.command("set-plan")
def billing_set_plan(
    org: Annotated[str, typer.Argument(metavar="ORG", help="The organization's id or slug.")],
    plan: Annotated[PlanChoice, typer.Argument(metavar="PLAN", help="The plan; `default`: the DEFAULT_PLAN.")],
) -> None:
    """Put an organization on a plan (audited in its log as `billing.plan_changed`). What it has
    beyond the new limits stays; additions beyond them are refused."""
    from codepulse.billing.service import OrganizationNotFound, assign_plan_in_database

    settings = _settings()
    try:
        done = assign_plan_in_database(settings, org, None if plan is PlanChoice.default else plan.value)
    except OrganizationNotFound:
        raise _fail(f"no organization {org!r} (give its id or slug)") from None
    except _database_errors() as error:
        raise _fail(_database_error(error)) from None
    typer.echo(f"{done.slug}: {done.before} -> {done.after.id.value}")


class ScanFormat(StrEnum):
    table = "table"
    json = "json"
    sarif = "sarif"


class ScanSeverity(StrEnum):
    critical = "critical"
    high = "high"
    medium = "medium"
    low = "low"
    info = "info"


@app.command()
def scan(
    target: Annotated[str, typer.Argument(metavar="PATH_OR_URL", help="A directory, a file, or a repository URL.")],
    output_format: Annotated[ScanFormat, typer.Option("--format", "-f", help="Report format.")] = ScanFormat.table,
    fail_on: Annotated[
        ScanSeverity | None,
        typer.Option("--fail-on", help="Exit with 1 when a finding at or above this severity exists."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", dir_okay=False, help="Write the report here, not to stdout.")
    ] = None,
    ref: Annotated[str | None, typer.Option(help="Branch, tag or commit SHA to scan (URLs only).")] = None,
    engine: Annotated[
        list[str] | None, typer.Option("--engine", "-e", help="Run only this engine (repeatable; e.g. secrets).")
    ] = None,
    processes: Annotated[
        int | None,
        typer.Option(min=0, max=64, help="Engine processes (default: SCAN_PROCESSES; 0 = one per CPU core)."),
    ] = None,
    history: Annotated[
        bool,
        typer.Option(
            "--history",
            help="Scan every version of every file in the local repository's history (a secret deleted since "
            "is still leaked): each finding with the commit that introduced it, and whether HEAD still has it.",
        ),
    ] = False,
) -> None:
    """Scan a directory or repository for leaked secrets and insecure code, locally (no server).

    Exit codes: 0 clean (or no --fail-on), 1 findings at or above --fail-on, 2 usage error or failed scan.
    """
    from codepulse.scans import local

    code = local.main(
        target,
        output_format=output_format.value,
        fail_on=fail_on.value if fail_on is not None else None,
        output=output,
        ref=ref,
        engines=engine,
        processes=processes,
        history=history,
    )
    raise typer.Exit(code)


client_commands.register(app)


@app.command()
def version() -> None:
    """Print the codepulse version."""
    typer.echo(__version__)


def main() -> None:
    app()
