"""Test doubles for the engine pool: engines the workers know by module path (picklable)."""

from __future__ import annotations

import time

from codepulse.scans.engine import RawFinding, RuleInfo


class FakeEngine:
    """Finds `TODO` on every line that has it (severity medium), in every file."""

    def __init__(self, name: str = "fake", version: str = "fake-1", suffix: str | None = None) -> None:
        self.name = name
        self.version = version
        self.suffix = suffix

    def wants(self, path: str) -> bool:
        return self.suffix is None or path.endswith(self.suffix)

    def scan(self, path: str, content: bytes) -> list[RawFinding]:
        return find_todos(self.name, content)

    def rules(self) -> list[RuleInfo]:
        return [RuleInfo("fake.todo", self.name, "TODO left", "A TODO marker.", "Do it.", "medium", None)]


def find_todos(engine: str, content: bytes) -> list[RawFinding]:
    findings = []
    for number, line in enumerate(content.decode("utf-8", "replace").splitlines(), start=1):
        column = line.find("TODO")
        if column >= 0:
            findings.append(
                RawFinding(
                    rule_id="fake.todo",
                    engine=engine,
                    severity="medium",
                    title="TODO left",
                    message="A TODO marker.",
                    start_line=number,
                    end_line=number,
                    start_column=column + 1,
                    end_column=column + 5,
                    snippet=line.strip(),
                    cwe=None,
                    fingerprint_basis=line.strip(),
                )
            )
    return findings


def todo_scan_file(engine_names: tuple[str, ...], path: str, content: bytes) -> dict[str, list[RawFinding]]:
    if b"EXPLODE" in content:
        raise RuntimeError("engine bug")
    return {name: find_todos(name, content) for name in engine_names}


def slow_scan_file(engine_names: tuple[str, ...], path: str, content: bytes) -> dict[str, list[RawFinding]]:
    """Each file takes as many seconds as its first line says (a float)."""
    seconds = float(content.split(b"\n", 1)[0] or b"0")
    time.sleep(seconds)
    return {name: find_todos(name, content) for name in engine_names}
