"""Authlib, imported quietly.

Authlib 1.9 warns at import that it would rather use the `httpx2` package; the stack uses httpx.
Importing `authlib.deprecate` installs Authlib's own "always" filter for its warnings, so ours
must come after it to take precedence.
"""

import warnings

from authlib.deprecate import AuthlibDeprecationWarning

warnings.filterwarnings("ignore", message="The httpx module is deprecated", category=AuthlibDeprecationWarning)

from authlib.integrations.base_client import MismatchingStateError, OAuthError  # noqa: E402
from authlib.integrations.starlette_client import OAuth  # noqa: E402

__all__ = ["MismatchingStateError", "OAuth", "OAuthError"]
