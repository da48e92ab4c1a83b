"""Kilo Code up to 5.x (the Roo Code fork, now Kilo-Org/kilocode-legacy): task folders under
`<editor user dir>/globalStorage/kilocode.kilo-code/tasks/`, or under the folder the
`kilo-code.customStoragePath` setting names. Parsed by `vscode_tasks`; rewritten whole, so
`whole_file=True`. Kilo Code 7 (rebuilt on the Kilo CLI) keeps sessions in the CLI's SQLite
database (`~/.local/share/kilo/kilo.db`) instead: not read here."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from codepulse.client.sources import vscode_tasks

NAME = "kilo-code"
TOOL = vscode_tasks.Tool(NAME, ("kilocode.kilo-code",), ("kilo-code",), vscode_tasks.roo_input)


def log_files(environ: Mapping[str, str] = os.environ, home: Path | None = None) -> list[Path]:
    return vscode_tasks.log_files(TOOL, environ, home)


read = vscode_tasks.reader(TOOL)
