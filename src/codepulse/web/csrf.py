"""CSRF tokens: every state-changing form or htmx request of a page carries one, checked before
anything else runs.

Signed in, the token is an HMAC of the web session's id (it changes with the session, and a
signed-out session's tokens die with it); before sign-in (the sign-in and sign-up forms), of a
random value in a cookie of its own (`codepulse_csrf`), so a cross-site page can forge neither.
The token travels in the form's hidden `csrf_token` field, or in the `X-CSRF-Token` header that
htmx sends (from the page's `<meta name="csrf-token">`, see static/app.js).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
ANONYMOUS_COOKIE = "codepulse_csrf"


class CsrfRefused(Exception):
    """A state-changing request without the right CSRF token: answered by a 403 page."""


def _sign(secret_key: str, purpose: str, value: str) -> str:
    message = f"codepulse.csrf:{purpose}:{value}".encode()
    return hmac.new(secret_key.encode(), message, hashlib.sha256).hexdigest()


def session_token(secret_key: str, session_id: uuid.UUID) -> str:
    return _sign(secret_key, "session", str(session_id))


def anonymous_token(secret_key: str, cookie_value: str) -> str:
    return _sign(secret_key, "anonymous", cookie_value)


def new_anonymous_cookie() -> str:
    return secrets.token_urlsafe(32)


def check(expected: str | None, submitted: str | None) -> None:
    """Raise CsrfRefused unless `submitted` is the expected token (compared in constant time)."""
    if not expected or not submitted or not hmac.compare_digest(expected.encode(), submitted.encode()):
        raise CsrfRefused
