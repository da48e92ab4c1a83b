"""The client's commands under `codepulse`: `login`, `logout`, `whoami`, `sync`, `status`.

Each imports the HTTP layer (`codepulse.client.api`, httpx) only when it runs. Errors are one
line on stderr and exit status 1; nothing a command prints contains the token.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from codepulse.client.sources import SOURCE_NAMES

if TYPE_CHECKING:
    from pathlib import Path

    from codepulse.client.credentials import Credentials
    from codepulse.client.progress import SyncProgress
    from codepulse.client.records import UsageRecord

# Each command imports what it uses when it runs (the state's lock, the parsers, httpx): `codepulse
# --help` imports this module, and must start fast.

DEFAULT_SERVER = "http://127.0.0.1:8000"
CLI_TOKEN_DAYS = 365
BATCH = 5000
MACHINE_ID_FILE = "machine-id"


def _fail(message: str) -> typer.Exit:
    typer.echo(f"codepulse: {message}", err=True)
    return typer.Exit(1)


def _call(server: str, token: str | None, method: str, path: str, **options: Any) -> Any:
    from codepulse.client.api import Api, ApiError

    try:
        with Api(server, token) as api:
            return api.request(method, path, **options)
    except ApiError as error:
        raise _fail(error.detail) from None


def _credentials() -> tuple[Path, Credentials | None]:
    from codepulse.client.credentials import Credentials, config_dir

    directory = config_dir()
    return directory, Credentials.load(directory)


def login(
    server: Annotated[
        str | None, typer.Option(help=f"The codepulse server [default: the saved one, or {DEFAULT_SERVER}].")
    ] = None,
    token: Annotated[
        str | None, typer.Option("--token", help="A CLI token made in the dashboard, instead of a password.")
    ] = None,
    github: Annotated[
        bool, typer.Option("--github", help="Sign in with GitHub (enter a code on GitHub), when the server has it.")
    ] = False,
) -> None:
    """Sign in and keep a CLI token in your config directory (readable by you only)."""
    import socket

    from codepulse.client.credentials import Credentials

    directory, saved = _credentials()
    base = (server or (saved.server if saved else DEFAULT_SERVER)).rstrip("/")
    name = f"codepulse CLI on {socket.gethostname()}"[:100]
    if token is not None and github:
        raise _fail("use either --token or --github")
    if github:
        token = _github_token(base, name)
    elif token is None:
        login_name = typer.prompt("Email or username")
        password = typer.prompt("Password", hide_input=True)
        signed_in = _call(base, None, "POST", "/api/v1/auth/login", json={"login": login_name, "password": password})
        web_token = str(signed_in["token"])
        created = _call(
            base, web_token, "POST", "/api/v1/auth/tokens", json={"name": name, "expires_in_days": CLI_TOKEN_DAYS}
        )
        _call(base, web_token, "POST", "/api/v1/auth/logout")  # the password's session was only a step
        token = str(created["token"])
    me = _call(base, token, "GET", "/api/v1/auth/me")
    Credentials(base, token).save(directory)
    typer.echo(f"Signed in to {base} as {me['username']}.")


def _wait(seconds: float) -> None:
    """The pause between two polls of the device sign-in (a test replaces it, so as not to wait)."""
    import time

    time.sleep(seconds)


def _github_token(base: str, name: str) -> str:
    """GitHub's device flow through the server: the user enters a code on GitHub, the server
    answers a CLI token once they approve."""
    from codepulse.client.api import Api, ApiError
    from codepulse.client.github_login import sign_in_with_github

    def show(user_code: str, verification_uri: str) -> None:
        typer.echo(f"Open {verification_uri} and enter the code {user_code} (waiting for GitHub)...")

    try:
        with Api(base) as api:
            return sign_in_with_github(api, show, name=name, expires_in_days=CLI_TOKEN_DAYS, sleep=_wait)
    except ApiError as error:
        raise _fail(error.detail) from None


def logout() -> None:
    """Revoke the CLI token on the server and forget it here."""
    from codepulse.client.api import Api, ApiError
    from codepulse.client.credentials import Credentials

    directory, saved = _credentials()
    if saved is None:
        typer.echo("Not signed in.")
        return
    try:
        with Api(saved.server, saved.token, attempts=2) as api:
            api.request("POST", "/api/v1/auth/logout")
    except ApiError as error:
        if not error.unauthorized:  # already revoked or expired: nothing left to revoke
            raise _fail(f"{error.detail} (the token is kept; try again)") from None
    Credentials.delete(directory)
    typer.echo(f"Signed out of {saved.server}.")


def whoami() -> None:
    """Who the saved token signs in as, on which server."""
    from codepulse.client.api import Api, ApiError

    _directory, saved = _credentials()
    if saved is None:
        raise _fail("not signed in: run `codepulse login`")
    try:
        with Api(saved.server, saved.token) as api:
            me = api.request("GET", "/api/v1/auth/me")
    except ApiError as error:
        if error.unauthorized:
            raise _fail("your session has ended: run `codepulse login` again") from None
        raise _fail(error.detail) from None
    typer.echo(f"{me['username']} <{me['email']}> on {saved.server}")


def _machine_id(directory: Path) -> str:
    """A random id for this machine, made once: the server tells one machine's uploads from another's."""
    import uuid

    path = directory / MACHINE_ID_FILE
    try:
        known = path.read_text(encoding="utf-8").strip()
    except OSError:
        known = ""
    if known:
        return known
    directory.mkdir(parents=True, exist_ok=True)
    made = uuid.uuid4().hex
    path.write_text(made, encoding="utf-8")
    return made


def _upload(
    credentials: Credentials, records: list[UsageRecord], machine_id: str, progress: SyncProgress
) -> dict[str, Any]:
    """Every record in gzip batches of BATCH; the server's answers added up (totals: the last)."""
    import gzip

    import msgspec

    from codepulse import __version__
    from codepulse.client.api import Api, ApiError

    summary: dict[str, Any] = {"received": 0, "inserted": 0, "updated": 0, "unchanged": 0, "rejected": 0}
    client = {"name": "codepulse-cli", "version": __version__}
    progress.uploading(len(records))
    try:
        with Api(credentials.server, credentials.token) as api:
            for start in range(0, len(records), BATCH):
                # A record encodes as exactly the fields of `POST /api/v1/sync` (UsageRecord.payload).
                body = msgspec.json.encode(
                    {"client": client, "machine_id": machine_id, "records": records[start : start + BATCH]}
                )
                answer = api.request(
                    "POST",
                    "/api/v1/sync",
                    content=gzip.compress(body, compresslevel=6),
                    headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
                )
                for key in ("received", "inserted", "updated", "unchanged"):
                    summary[key] += int(answer[key])
                summary["rejected"] += len(answer["rejected"])
                summary["totals"] = answer["totals"]
                progress.uploaded(min(start + BATCH, len(records)), len(records))
    except ApiError as error:
        if error.unauthorized:
            raise _fail("your session has ended: run `codepulse login` again") from None
        raise _fail(f"{error.detail} (nothing is marked synced: the next sync sends it again)") from None
    return summary


def _since(value: datetime | None) -> datetime | None:
    from datetime import UTC

    return None if value is None else value.replace(tzinfo=value.tzinfo or UTC)


def sync(
    source: Annotated[
        list[str] | None, typer.Option("--source", help=f"Only this tool (repeatable): {', '.join(SOURCE_NAMES)}.")
    ] = None,
    since: Annotated[
        datetime | None, typer.Option(formats=["%Y-%m-%d"], help="Only usage from this day on (YYYY-MM-DD).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Read and count, send nothing.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON only (the figures, or the server's summary).")
    ] = False,
) -> None:
    """Read your AI coding assistants' local logs and upload what is new."""
    names = source or list(SOURCE_NAMES)
    unknown = [name for name in names if name not in SOURCE_NAMES]
    if unknown:
        raise _fail(f"unknown source {unknown[0]!r} (known: {', '.join(SOURCE_NAMES)})")
    import contextlib
    import json
    from datetime import UTC

    from codepulse.client.collect import collect
    from codepulse.client.credentials import config_dir, state_dir
    from codepulse.client.progress import SyncProgress, wanted
    from codepulse.client.state import SyncAlreadyRunning, SyncState, sync_lock

    _directory, credentials = _credentials()
    if not dry_run and credentials is None:
        raise _fail("not signed in: run `codepulse login`")
    directory = state_dir()
    progress = SyncProgress(wanted(as_json))
    summary: dict[str, Any] | None = None
    try:
        # A dry run writes nothing: it reads the state (replaced atomically) without the lock.
        with contextlib.nullcontext() if dry_run else sync_lock(directory):
            state = SyncState.load(directory)
            collection = collect(names, state, since=_since(since), on_files=progress.found, progress=progress.read)
            if not dry_run and credentials is not None:
                records = list(collection.records)
                summary = _upload(credentials, records, _machine_id(config_dir()), progress) if records else None
                now = datetime.now(UTC).isoformat()
                for name in names:
                    collection.state.last_sync[name] = now
                collection.state.save(directory)
    except SyncAlreadyRunning as error:
        raise _fail(str(error)) from None
    finally:
        progress.close()
    # Never fatal, always said: what could not be read, and lines that are not JSON.
    for name, count in collection.malformed.items():
        typer.echo(f"codepulse: warning: {name}: skipped {count:,} malformed line(s)", err=True)
    if collection.unreadable:
        typer.echo(f"codepulse: warning: {len(collection.unreadable):,} file(s) could not be read:", err=True)
        for path, reason in collection.unreadable:
            typer.echo(f"  {path}: {reason}", err=True)
    if dry_run:  # the state stays as it was
        typer.echo(json.dumps(collection.summary()) if as_json else _figures_text(collection.summary()))
        return
    if as_json:
        typer.echo(json.dumps(summary or {"received": 0}))
    elif summary is None:
        typer.echo("Nothing new to sync.")
    else:
        totals = summary.get("totals", {})
        typer.echo(
            f"Synced {summary['received']:,} records: {summary['inserted']:,} new, {summary['updated']:,} updated, "
            f"{summary['unchanged']:,} unchanged, {summary['rejected']:,} rejected. "
            f"All time: {int(totals.get('tokens', 0)):,} tokens, ${totals.get('cost_usd', '0')}; "
            f"streak {totals.get('current_streak', 0)} days."
        )


def _figures_text(summary: dict[str, Any]) -> str:
    lines = []
    for name, figures in summary["sources"].items():
        lines.append(
            f"{name}: {figures['files']:,} files, {figures['records']:,} records, "
            f"{figures['input_tokens']:,} input, {figures['output_tokens']:,} output, "
            f"{figures['cache_creation_tokens']:,} cache writes, {figures['cache_read_tokens']:,} cache reads"
        )
    return "\n".join(lines)


def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """The server, who you are, and per tool the last sync and what is waiting to be synced."""
    import json

    from codepulse.client.collect import SOURCES, pending
    from codepulse.client.credentials import state_dir
    from codepulse.client.state import SyncState

    _directory, saved = _credentials()
    report: dict[str, Any] = {"server": saved.server if saved else None, "reachable": None, "user": None}
    if saved is not None:
        from codepulse.client.api import Api, ApiError  # httpx: only to ask a server

        with Api(saved.server, saved.token, attempts=1, timeout=10) as api:
            try:
                api.request("GET", "/api/v1/health")
                report["reachable"] = True
                report["user"] = api.request("GET", "/api/v1/auth/me")["username"]
            except ApiError as error:
                report["reachable"] = error.status is not None
                report["error"] = error.detail
    state = SyncState.load(state_dir())
    waiting = pending(SOURCES, state)
    report["sources"] = {
        name: {"last_sync": state.last_sync.get(name), "pending_files": w.files, "pending_bytes": w.bytes}
        for name, w in waiting.items()
    }
    if as_json:
        typer.echo(json.dumps(report))
        return
    if saved is None:
        typer.echo("Not signed in: run `codepulse login`.")
    else:
        reach = "reachable" if report["reachable"] else "not reachable"
        who = f"signed in as {report['user']}" if report["user"] else report.get("error", "")
        typer.echo(f"{saved.server}: {reach}; {who}")
    for name, figures in report["sources"].items():
        last = figures["last_sync"] or "never"
        typer.echo(
            f"{name}: last sync {last}; {figures['pending_files']:,} files ({figures['pending_bytes']:,} bytes) waiting"
        )


def register(app: typer.Typer) -> None:
    """Add the client's commands to the `codepulse` command."""
    app.command()(login)
    app.command()(logout)
    app.command()(whoami)
    app.command()(sync)
    app.command()(status)
