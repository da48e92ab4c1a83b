"""Scan engines: the interface and the registry.

Importing this package is cheap (no bandit, no rules file read): the API process imports it for
the types and the rule list. `scan_file` is the module-level, picklable entry point a process
pool calls.
"""

from __future__ import annotations

import importlib.util
from functools import cache

from codepulse.scans.engine.base import (
    SEVERITIES,
    SEVERITY_RANK,
    Engine,
    RawFinding,
    RuleInfo,
    fingerprints,
)

__all__ = [
    "SEVERITIES",
    "SEVERITY_RANK",
    "Engine",
    "RawFinding",
    "RuleInfo",
    "available_engines",
    "fingerprints",
    "scan_file",
]


@cache
def available_engines() -> dict[str, Engine]:
    """The engines this process can run, by name (cached per process).

    "secrets" always; "python" when bandit is installed (found without importing it).
    """
    # Imported here, not at the top, to keep importing this package cheap (the API process):
    # the engines load only where one is asked for (the compiled secrets matcher, bandit's driver).
    from codepulse.scans.engine.secrets import SecretsEngine

    engines: dict[str, Engine] = {"secrets": SecretsEngine()}
    if importlib.util.find_spec("bandit") is not None:
        from codepulse.scans.engine.python import PythonEngine

        engines["python"] = PythonEngine()
    return engines


def scan_file(engine_names: tuple[str, ...], path: str, content: bytes) -> dict[str, list[RawFinding]]:
    """Run the named engines that want `path` over `content`; engines not run are absent.

    Unknown engine names raise KeyError (the caller asked for an engine this process lacks).
    """
    engines = available_engines()
    results: dict[str, list[RawFinding]] = {}
    for name in engine_names:
        engine = engines[name]
        if engine.wants(path):
            results[name] = engine.scan(path, content)
    return results
