"""Imported by the engine pool's fork server before it forks workers: loads the engines (bandit,
the compiled secrets rules) once, so every worker starts warm instead of loading them itself."""

from __future__ import annotations

import contextlib

with contextlib.suppress(Exception):
    from codepulse.scans.engine import available_engines

    for _engine in available_engines().values():
        _engine.scan("warm.py", b"x = 1\n")
