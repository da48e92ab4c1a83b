"""Where the CLI keeps its server and session token, and its sync state.

The credentials file (`credentials.json` in the user's config directory, from platformdirs; or
`CODEPULSE_CONFIG_DIR`) holds the server URL and the bearer token: it is created with mode 0600
(never readable by other users, not even for a moment) and replaced atomically. The sync state
lives in the user's state directory (or `CODEPULSE_STATE_DIR`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from platformdirs import user_config_path, user_state_path

APP = "codepulse"
CREDENTIALS_FILE = "credentials.json"


def config_dir(environ: Mapping[str, str] = os.environ) -> Path:
    configured = environ.get("CODEPULSE_CONFIG_DIR", "").strip()
    return Path(configured).expanduser() if configured else user_config_path(APP)


def state_dir(environ: Mapping[str, str] = os.environ) -> Path:
    configured = environ.get("CODEPULSE_STATE_DIR", "").strip()
    return Path(configured).expanduser() if configured else user_state_path(APP)


@dataclass(frozen=True)
class Credentials:
    server: str
    token: str

    def __repr__(self) -> str:  # the token never lands in a traceback or a log
        return f"Credentials(server={self.server!r}, token=<hidden>)"

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = directory / CREDENTIALS_FILE
        temporary = directory / f".{CREDENTIALS_FILE}.{os.getpid()}"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                json.dump({"server": self.server, "token": self.token}, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, directory: Path) -> Credentials | None:
        """The saved credentials; None when there are none or the file is not ours."""
        try:
            raw = json.loads((directory / CREDENTIALS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(raw, dict) or not isinstance(raw.get("server"), str) or not isinstance(raw.get("token"), str):
            return None
        return cls(raw["server"], raw["token"])

    @staticmethod
    def delete(directory: Path) -> bool:
        """Forget the credentials; False when there were none."""
        try:
            (directory / CREDENTIALS_FILE).unlink()
        except FileNotFoundError:
            return False
        return True
