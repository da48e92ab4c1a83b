"""The client's commands under `codepulse`: `login`, `logout`, `whoami` (sync and status next).

Each imports the HTTP layer (`codepulse.client.api`, httpx) only when it runs. Errors are one
line on stderr and exit status 1; nothing a command prints contains the token.
"""

from __future__ import annotations

import socket
from typing import Annotated, Any

import typer

from codepulse.client.credentials import Credentials, config_dir

DEFAULT_SERVER = "http://127.0.0.1:8000"
CLI_TOKEN_DAYS = 365


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


def login(
    server: Annotated[
        str | None, typer.Option(help=f"The codepulse server [default: the saved one, or {DEFAULT_SERVER}].")
    ] = None,
    token: Annotated[
        str | None, typer.Option("--token", help="A CLI token made in the dashboard, instead of a password.")
    ] = None,
) -> None:
    """Sign in and keep a CLI token in your config directory (readable by you only)."""
    directory = config_dir()
    saved = Credentials.load(directory)
    base = (server or (saved.server if saved else DEFAULT_SERVER)).rstrip("/")
    if token is None:
        login_name = typer.prompt("Email or username")
        password = typer.prompt("Password", hide_input=True)
        signed_in = _call(base, None, "POST", "/api/v1/auth/login", json={"login": login_name, "password": password})
        web_token = str(signed_in["token"])
        name = f"codepulse CLI on {socket.gethostname()}"[:100]
        created = _call(
            base, web_token, "POST", "/api/v1/auth/tokens", json={"name": name, "expires_in_days": CLI_TOKEN_DAYS}
        )
        _call(base, web_token, "POST", "/api/v1/auth/logout")  # the password's session was only a step
        token = str(created["token"])
    me = _call(base, token, "GET", "/api/v1/auth/me")
    Credentials(base, token).save(directory)
    typer.echo(f"Signed in to {base} as {me['username']}.")


def logout() -> None:
    """Revoke the CLI token on the server and forget it here."""
    from codepulse.client.api import Api, ApiError

    directory = config_dir()
    saved = Credentials.load(directory)
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

    saved = Credentials.load(config_dir())
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


def register(app: typer.Typer) -> None:
    """Add the client's commands to the `codepulse` command."""
    app.command()(login)
    app.command()(logout)
    app.command()(whoami)
