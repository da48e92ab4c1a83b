"""Where VS Code-based editors keep an extension's global storage: the editors' `User` folders
on every platform (portable mode, `VSCODE_APPDATA`, `%APPDATA%`, macOS's Application Support,
`$XDG_CONFIG_HOME`, remote servers' data folders), a `customStoragePath` setting, and the task
folders under them (Cline, Roo Code, Kilo Code: `vscode_tasks` reads them).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

UI_MESSAGES = "ui_messages.json"

# VS Code forks' product folders under the user-data root (VS Code's `productName`).
EDITORS = (
    "Code",
    "Code - Insiders",
    "Cursor",
    "Windsurf",
    "VSCodium",
    "VSCodium - Insiders",
    "Positron",
    "Antigravity",
)
# Remote (SSH, WSL, containers) servers keep their user data under `~/<folder>/data/User`.
SERVER_FOLDERS = (".vscode-server", ".vscode-server-insiders", ".cursor-server", ".windsurf-server", ".vscodium-server")


def folder_of(value: str | None) -> Path | None:
    """A folder named by an environment variable or setting (`~` expanded), None when blank."""
    return Path(value.strip()).expanduser() if value and value.strip() else None


def user_dirs(environ: Mapping[str, str], home: Path) -> list[Path]:
    """Every editor `User` folder that may exist, by VS Code's own rules: portable mode, then
    `VSCODE_APPDATA`, then the platform's (`%APPDATA%`, `~/Library/Application Support`,
    `$XDG_CONFIG_HOME` or `~/.config`); all platforms' are probed, as missing ones cost a stat."""
    found: list[Path] = []
    portable = folder_of(environ.get("VSCODE_PORTABLE"))
    if portable is not None:
        found.append(portable / "user-data" / "User")
    roots = [folder_of(environ.get("VSCODE_APPDATA")), folder_of(environ.get("APPDATA"))]
    profile = folder_of(environ.get("USERPROFILE"))
    if profile is not None and roots[1] is None:
        roots.append(profile / "AppData" / "Roaming")
    roots.append(home / "Library" / "Application Support")
    roots.append(folder_of(environ.get("XDG_CONFIG_HOME")) or home / ".config")
    found.extend(root / editor / "User" for root in roots if root is not None for editor in EDITORS)
    found.extend(home / server / "data" / "User" for server in SERVER_FOLDERS)
    return list(dict.fromkeys(found))


def custom_storage(user_dir: Path, prefixes: Iterable[str]) -> list[Path]:
    """`<prefix>.customStoragePath` from the editor's settings.json (JSON with comments: the one
    key is picked out, not the document parsed)."""
    try:
        text = (user_dir / "settings.json").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    found = []
    for prefix in prefixes:
        pattern = rf'"{re.escape(prefix)}\.customStoragePath"\s*:\s*("(?:[^"\\]|\\.)*")'
        for match in re.finditer(pattern, text):
            try:
                folder = folder_of(json.loads(match.group(1)))
            except ValueError:
                continue
            if folder is not None:
                found.append(folder)
    return found


def task_files(storage: Iterable[Path]) -> list[Path]:
    """`tasks/<id>/ui_messages.json` under each storage folder, each file once."""
    found: dict[Path, Path] = {}
    for folder in storage:
        tasks = folder / "tasks"
        if not tasks.is_dir():
            continue
        for path in sorted(tasks.glob(f"*/{UI_MESSAGES}")):
            if path.is_file():
                found.setdefault(path.resolve(), path)
    return list(found.values())
