"""Roo Code: task folders under `<editor user dir>/globalStorage/rooveterinaryinc.roo-cline/tasks/`
(`rooveterinaryinc.roo-code-nightly` for the nightly build), or under the folder the
`roo-cline.customStoragePath` setting names. Parsed by `vscode_tasks`; rewritten whole, so
`whole_file=True`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from codepulse.client.sources import vscode_tasks

NAME = "roo-code"
TOOL = vscode_tasks.Tool(
    NAME,
    ("rooveterinaryinc.roo-cline", "rooveterinaryinc.roo-code-nightly"),
    ("roo-cline", "roo-code-nightly"),
    vscode_tasks.roo_input,
)


def log_files(environ: Mapping[str, str] = os.environ, home: Path | None = None) -> list[Path]:
    return vscode_tasks.log_files(TOOL, environ, home)


read = vscode_tasks.reader(TOOL)
