"""The demo's Git repository: a small service with planted *test* secrets, made with real `git`.

The secrets are generated at run time from a seeded generator (the source holds only their
shapes, so no token-looking string is ever committed here), and every commit has fixed authors
and dates: the same repository, down to its commit SHAs, on every machine and every run. It lives
under VAR_DIR and is made once; a later run finds it and leaves it alone.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import string
import subprocess
import tempfile
from pathlib import Path

from codepulse.seed.people import SeedError

DIRECTORY = "demo-repository"
BRANCH = "main"
_SEED = "codepulse-demo-repository"
_ALPHABETS = {
    "base32": string.ascii_uppercase + "234567",
    "base64": string.ascii_letters + string.digits + "+/",
    "alnum": string.ascii_letters + string.digits,
}
# A random value spelling one of these would be taken for a placeholder by the secrets engine.
_STOPWORDS = ("example", "dummy", "changeme", "redacted", "notreal", "password", "secret", "test")


def _token(rng: random.Random, alphabet: str, length: int) -> str:
    """`length` characters of `alphabet` that read as random: letters and digits mixed, varied
    (the secrets engine drops low-entropy values as placeholders)."""
    chars = _ALPHABETS[alphabet]
    while True:
        value = "".join(rng.choice(chars) for _ in range(length))
        counts = [value.count(c) for c in set(value)]
        entropy = -sum(k / length * math.log2(k / length) for k in counts)
        mixed = any(c.isdigit() for c in value) and any(c.isalpha() for c in value)
        if (
            mixed
            and entropy >= 0.8 * math.log2(min(length, len(chars)))
            and not any(word in value.lower() for word in _STOPWORDS)
        ):
            return value


def _commits() -> list[tuple[str, str, dict[str, str | None]]]:
    """(date, message, files) per commit; a None file is deleted."""
    rng = random.Random(_SEED)  # noqa: S311 - reproducible demo values, fake on purpose
    aws_key_id = "AKIA" + _token(rng, "base32", 16)
    aws_secret = _token(rng, "base64", 40)
    github_token = "ghp_" + _token(rng, "alnum", 36)
    stripe_secret = "whsec_" + _token(rng, "alnum", 32)
    notice = "# Demo data planted by `codepulse seed`: generated test values, not real credentials.\n"
    readme = "# demo-service\n\nA tiny service with leaked *test* secrets, for codepulse's scanner to find.\n"
    tasks = (
        "import subprocess\n\n\n"
        "def run(command: str) -> int:\n"
        "    # A shell runs whatever the caller passes: the scanner's python engine flags it.\n"
        "    return subprocess.call(command, shell=True)\n"
    )
    return [
        ("2026-01-05T09:00:00+00:00", "Start the demo service", {"README.md": readme, "app/__init__.py": ""}),
        (
            "2026-01-06T10:30:00+00:00",
            "Add settings, tasks and billing",
            {
                "app/settings.py": f'{notice}AWS_ACCESS_KEY_ID = "{aws_key_id}"\n'
                f'aws_secret_access_key = "{aws_secret}"\nREGION = "eu-west-1"\n',
                "app/tasks.py": tasks,
                "app/billing.py": f'{notice}STRIPE_WEBHOOK_SECRET = "{stripe_secret}"\n',
                ".env": f"{notice}GITHUB_TOKEN={github_token}\n",
            },
        ),
        # Deleted, but still in the history: a history scan reports it as `in_history`.
        ("2026-01-07T16:45:00+00:00", "Read the Stripe secret from the environment", {"app/billing.py": None}),
    ]


def _git(root: Path, when: str, *args: str) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Olivia Owner",
        "GIT_AUTHOR_EMAIL": "demo-owner@example.com",
        "GIT_COMMITTER_NAME": "Olivia Owner",
        "GIT_COMMITTER_EMAIL": "demo-owner@example.com",
        "GIT_AUTHOR_DATE": when,
        "GIT_COMMITTER_DATE": when,
    }
    try:
        # Fixed arguments; git from PATH, as the scanner runs it.
        subprocess.run(["git", *args], cwd=root, env=env, capture_output=True, text=True, check=True)  # noqa: S603, S607
    except FileNotFoundError:
        raise SeedError("git is not installed (the demo repository is made with it)") from None
    except subprocess.CalledProcessError as error:
        raise SeedError(f"git {args[0]} failed: {error.stderr.strip()[:300]}") from None


def _is_repository(path: Path) -> bool:
    env = {"PATH": os.environ.get("PATH", ""), "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    try:
        result = subprocess.run(  # noqa: S603 - fixed arguments
            ["git", "rev-parse", "--verify", "-q", f"refs/heads/{BRANCH}"],  # noqa: S607 - git from PATH
            cwd=path,
            env=env,
            capture_output=True,
            check=False,
        )
    except FileNotFoundError:
        raise SeedError("git is not installed (the demo repository is made with it)") from None
    return result.returncode == 0


def ensure_demo_repository(var_dir: Path) -> tuple[Path, bool]:
    """The demo repository under `var_dir` (made when missing), and whether it was made now.
    Blocking: run it in a thread."""
    path = (var_dir / DIRECTORY).resolve()
    if path.exists():
        if not path.is_dir() or not _is_repository(path):
            raise SeedError(f"{path} exists but is not the demo repository; remove it and seed again")
        return path, False
    try:
        _build(path)
    except OSError as error:  # not a database error: say where
        raise SeedError(f"cannot make the demo repository at {path}: {error}") from None
    return path, True


def _build(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Built aside and renamed into place: an interrupted run leaves no half-made repository.
    building = Path(tempfile.mkdtemp(prefix=f".{DIRECTORY}-", dir=path.parent))
    try:
        commits = _commits()
        _git(building, commits[0][0], "init", "-q", "-b", BRANCH)
        for when, message, files in commits:
            for name, content in files.items():
                target = building / name
                if content is None:
                    target.unlink()
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content)
            _git(building, when, "add", "-A")
            _git(building, when, "commit", "-q", "-m", message)
        building.rename(path)
    finally:
        shutil.rmtree(building, ignore_errors=True)
