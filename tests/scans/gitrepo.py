"""Real git repositories for the pipeline's tests: made in tmp_path with git itself, no network."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

GIT_ENV = {
    **{key: value for key, value in os.environ.items() if not key.startswith("GIT_")},
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}

# A random-looking AWS access key id the secrets engine reports (not a real key).
AWS_KEY = "AKIAQ3EGRT7XKZ2MPL5N"


def git(root: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=root, env=GIT_ENV, capture_output=True, check=True)
    return result.stdout.decode().strip()


class Repo:
    """A repository in a directory; `url` is its file:// URL."""

    def __init__(self, root: Path, branch: str = "main") -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        git(root, "init", "-q", "-b", branch)

    @property
    def url(self) -> str:
        return self.root.resolve().as_uri()

    def write(self, files: Mapping[str, str | bytes]) -> None:
        for name, content in files.items():
            path = self.root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)

    def commit(self, files: Mapping[str, str | bytes] | None = None, message: str = "change") -> str:
        self.write(files or {})
        git(self.root, "add", "-A")
        git(self.root, "commit", "-q", "--allow-empty", "-m", message)
        return git(self.root, "rev-parse", "HEAD")

    def symlink(self, name: str, target: str) -> None:
        (self.root / name).symlink_to(target)

    def tag(self, name: str) -> None:
        git(self.root, "tag", name)

    def branch(self, name: str) -> None:
        git(self.root, "checkout", "-q", "-b", name)

    def checkout(self, name: str) -> None:
        git(self.root, "checkout", "-q", name)

    def add_gitlink(self, path: str, sha: str) -> None:
        """A submodule entry (mode 160000) without a .gitmodules file or a clone behind it."""
        git(self.root, "update-index", "--add", "--cacheinfo", f"160000,{sha},{path}")
        git(self.root, "commit", "-q", "-m", "submodule")
