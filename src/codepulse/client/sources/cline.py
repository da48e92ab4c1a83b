"""Cline: the legacy task folders (`vscode_tasks`) and the SDK runtime's session files.

Task folders: `<editor user dir>/globalStorage/saoudrizwan.claude-dev/tasks/<id>/` for the VS Code
extension, and `<Cline data dir>/tasks/<id>/` for the hosts that keep their storage there (JetBrains,
the pre-SDK CLI). The data dir is `$CLINE_DATA_DIR`, else `$CLINE_DIR/data`, else `~/.cline/data`.
SDK sessions (the `cline` CLI, and VS Code's SDK bundle from 4.1): `$CLINE_SESSION_DATA_DIR`, else
`<data dir>/sessions`, one folder per session with `<id>.messages.json` (and a sub-agent's
`<agent id>.messages.json` beside it). Both kinds are rewritten whole: `whole_file=True`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from codepulse.client.sources import vscode_paths, vscode_tasks

NAME = "cline"
TOOL = vscode_tasks.Tool(NAME, ("saoudrizwan.claude-dev",), (), vscode_tasks.cline_input)


def data_dir(environ: Mapping[str, str], home: Path) -> Path:
    configured = vscode_paths.folder_of(environ.get("CLINE_DATA_DIR"))
    if configured is not None:
        return configured
    return (vscode_paths.folder_of(environ.get("CLINE_DIR")) or home / ".cline") / "data"


def sessions_dir(environ: Mapping[str, str], home: Path) -> Path:
    return vscode_paths.folder_of(environ.get("CLINE_SESSION_DATA_DIR")) or data_dir(environ, home) / "sessions"


def log_files(environ: Mapping[str, str] = os.environ, home: Path | None = None) -> list[Path]:
    home = home or Path.home()
    found = vscode_paths.task_files([*vscode_tasks.storage_dirs(TOOL, environ, home), data_dir(environ, home)])
    sessions = sessions_dir(environ, home)
    if sessions.is_dir():
        found.extend(path for path in sorted(sessions.glob(f"*/*{vscode_tasks.SESSION_SUFFIX}")) if path.is_file())
    return found


read = vscode_tasks.reader(TOOL)
