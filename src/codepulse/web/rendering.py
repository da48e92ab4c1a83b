"""Templates: one Jinja2 environment (autoescaped, compiled once per process) and `render`."""

from __future__ import annotations

from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from codepulse import __version__
from codepulse.config import Settings

WEB_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = WEB_DIR / "templates"
STATIC_DIR = WEB_DIR / "static"
STATIC_PREFIX = "/static"


def static_url(path: str) -> str:
    """A static file's URL, stamped with the version (browsers may cache it for long)."""
    return f"{STATIC_PREFIX}/{path}?v={__version__}"


def number(value: int | float | Decimal | None) -> str:
    return "—" if value is None else f"{value:,}"


def compact(value: int | None) -> str:
    """1234 -> 1.2K, 5600000 -> 5.6M."""
    if value is None:
        return "—"
    for size, suffix in ((1_000_000_000_000, "T"), (1_000_000_000, "B"), (1_000_000, "M"), (1_000, "K")):
        if abs(value) >= size:
            return f"{value / size:.1f}".rstrip("0").rstrip(".") + suffix
    return str(value)


def usd(value: Decimal | float | None) -> str:
    if value is None:
        return "—"
    amount = Decimal(value)
    if not amount:
        return "$0.00"
    if abs(amount) < Decimal("0.0001"):
        return "<$0.0001"
    if abs(amount) < 1:
        return f"${amount:.4f}"
    return f"${amount:,.2f}"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}\u202f%"


@cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.globals["static"] = static_url
    env.globals["version"] = __version__
    env.filters.update(number=number, compact=compact, usd=usd, percent=percent)
    return env


def render_text(template: str, context: dict[str, Any]) -> str:
    return environment().get_template(template).render(context)


def page_context(request: Request, **context: Any) -> dict[str, Any]:
    """What every page's layout reads: the viewer (when signed in), the CSRF token of its forms,
    whether GitHub sign-in is offered."""
    settings: Settings = request.app.state.settings
    viewer = getattr(request.state, "web_viewer", None)
    base: dict[str, Any] = {
        "viewer": viewer,
        "csrf_token": viewer.csrf_token if viewer is not None else context.get("csrf_token", ""),
        "github_sign_in": bool(settings.GITHUB_CLIENT_ID),
        "request_id": getattr(request.state, "request_id", None),
        "path": request.url.path,
        "page_scripts": (),
        "page_styles": (),
    }
    return base | context


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    html = render_text(template, page_context(request, status_code=status_code, **context))
    return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})
