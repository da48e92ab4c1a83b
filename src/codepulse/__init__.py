"""codepulse: the backend of a SaaS for software teams (code scanning, AI-usage analytics)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("codepulse")
except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
    __version__ = "0.0.0+unknown"
