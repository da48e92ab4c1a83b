#!/usr/bin/env python
"""How fast `codepulse sync --dry-run --json` reads a large Claude Code tree, and whether its totals
are exact.

The generator writes a tree shaped like a heavy user's `~/.claude/projects` (by default 1 GiB in
3,000 transcripts: median about 100 KB, a few of tens of MB; sub-agent files beside their
sessions; resumed sessions that start with a copy of an earlier one) and keeps its own record of
the deduplicated totals while it writes: about 40 % of assistant lines are streaming repeats of a
response (the last one complete), some tool results carry a `usage` object that is not a model
response, and a few `<synthetic>` responses must not count. The tree is cached under the temp
directory by its parameters, so later runs reuse it.

Each run is a cold process (`codepulse sync --dry-run --json`, HOME pointed at the tree's parent,
page cache warm) timed from spawn to exit; its JSON totals must equal the generator's. It runs
pinned to one core with one parse process, then with `CODEPULSE_PARSE_PROCESSES=2` on two cores,
and prints MB/s against the reference the issue names: ccusage (native code) ≈ 450 MB/s on one
core and ≈ 610 MB/s on two, measured on this kind of machine.

    uv run python tests/benchmarks/cli_parse.py              # 1 GiB, 3 runs per mode
    uv run python tests/benchmarks/cli_parse.py --gib 0.25 --runs 1
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

CCUSAGE_ONE_CORE_MB_S = 450.0
CCUSAGE_TWO_CORES_MB_S = 610.0
MODELS = ("claude-sonnet-4-5-20250929", "claude-opus-4-1-20250805", "claude-haiku-4-5-20251001")
VERSION = 5  # of the generator: a change of shape writes a new tree


@dataclass
class Totals:
    records: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0


class Session:
    """Writes one transcript and records each response's final counts by (message id, request id)."""

    def __init__(self, rng: random.Random, filler: str, final: dict[tuple[str, str], tuple[int, ...]]) -> None:
        self.rng, self.filler, self.final = rng, filler, final
        self.session_id = str(uuid.UUID(int=rng.getrandbits(128)))
        self.moment = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=rng.randrange(480_000))
        self.lines: list[str] = []
        self.parent: str | None = None
        self.sidechain = False
        self.newer = rng.random() < 0.15  # a later version's key order (and no stop_sequence)

    def _text(self, size: int) -> str:
        start = self.rng.randrange(len(self.filler) - size)
        return self.filler[start : start + size]

    def _base(self, kind: str) -> dict[str, Any]:
        """The keys before `message`, in Claude Code's order; `_finish` adds the ones after it."""
        self.moment += timedelta(seconds=self.rng.randrange(1, 90))
        entry: dict[str, Any] = {"parentUuid": self.parent, "isSidechain": self.sidechain}
        if not self.newer:
            entry.update(self._context())
        if kind == "user":
            entry["type"] = kind
        return entry

    def _finish(self, entry: dict[str, Any], kind: str) -> None:
        own = str(uuid.UUID(int=self.rng.getrandbits(128)))
        if kind != "user":
            entry["type"] = kind
        entry["uuid"] = own
        entry["timestamp"] = self.moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        if self.newer:  # later versions write the session's context after the entry's own keys
            entry.update(self._context())
        self.parent = own

    def _context(self) -> dict[str, Any]:
        return {
            "userType": "external",
            "cwd": "/home/dev/work/project",
            "sessionId": self.session_id,
            "version": "2.1.114" if self.newer else "2.0.31",
            "gitBranch": "main",
        }

    def _emit(self, entry: dict[str, Any]) -> None:
        self.lines.append(json.dumps(entry, separators=(",", ":"), ensure_ascii=False))

    def prompt(self) -> None:
        entry = self._base("user")
        entry["message"] = {"role": "user", "content": self._text(self.rng.randrange(80, 1500))}
        self._finish(entry, "user")
        self._emit(entry)

    def response(self, model: str | None = None) -> None:
        """One model response in 1-3 streamed lines (the last complete), then maybe a tool result."""
        model = model or self.rng.choice(MODELS)
        message_id = f"msg_01{self.rng.getrandbits(96):024x}"
        request_id = f"req_011C{self.rng.getrandbits(96):024x}"
        inputs, output = self.rng.randrange(1, 40), self.rng.randrange(20, 4000)
        five, hour = self.rng.randrange(0, 5000), self.rng.choice((0, 0, 0, self.rng.randrange(1, 3000)))
        cache_read = self.rng.randrange(0, 120_000)
        streamed = self.rng.choices((1, 2, 3), weights=(45, 35, 20))[0]
        split = bool(hour) or self.rng.random() < 0.7  # older versions log no 5-minute / 1-hour split
        for part in range(streamed):
            last = part == streamed - 1
            entry = self._base("assistant")
            block: dict[str, Any]
            if self.rng.random() < 0.5:
                block = {"type": "text", "text": self._text(self.rng.randrange(40, 2500))}
            else:
                block = {
                    "type": "tool_use",
                    "id": f"toolu_01{self.rng.getrandbits(64):016x}",
                    "name": self.rng.choice(("Read", "Edit", "Bash", "Write", "Grep")),
                    "input": {"file_path": "/home/dev/work/project/src/app.py", "content": self._text(600)},
                }
            usage: dict[str, Any] = {
                "input_tokens": inputs,
                "cache_creation_input_tokens": five + hour,
                "cache_read_input_tokens": cache_read,
                "output_tokens": output if last else self.rng.randrange(1, output),
                "service_tier": "standard",
            }
            if split:
                usage["cache_creation"] = {"ephemeral_5m_input_tokens": five, "ephemeral_1h_input_tokens": hour}
            message: dict[str, Any] = {"id": message_id, "type": "message", "role": "assistant", "model": model}
            if self.newer:
                message = {"model": model, "id": message_id, "type": "message", "role": "assistant"}
            message.update(content=[block], stop_reason="tool_use" if last else None)
            if not self.newer:
                message["stop_sequence"] = None
            message["usage"] = usage
            entry["message"] = message
            entry["requestId"] = request_id
            self._finish(entry, "assistant")
            self._emit(entry)
        if model != "<synthetic>":
            self.final[(message_id, request_id)] = (inputs, output, five + hour, cache_read)

    def tool_result(self, size: int) -> None:
        entry = self._base("user")
        content = self._text(size)
        entry["message"] = {
            "role": "user",
            "content": [
                {"tool_use_id": f"toolu_01{self.rng.getrandbits(64):016x}", "type": "tool_result", "content": content}
            ],
        }
        self._finish(entry, "user")
        if self.rng.random() < 0.06:  # a sub-agent's (Task) result: its usage is not a response of this session
            entry["toolUseResult"] = {
                "status": "completed",
                "agentId": f"{self.rng.getrandbits(32):08x}",
                "content": [{"type": "text", "text": content[:200]}],
                "totalDurationMs": self.rng.randrange(1000, 90000),
                "totalTokens": self.rng.randrange(1000, 90000),
                "usage": {
                    "input_tokens": self.rng.randrange(1, 100),
                    "cache_creation_input_tokens": self.rng.randrange(0, 9000),
                    "cache_read_input_tokens": self.rng.randrange(0, 90000),
                    "output_tokens": self.rng.randrange(1, 9000),
                    "service_tier": "standard",
                },
            }
        else:
            entry["toolUseResult"] = {"type": "text", "file": {"filePath": "src/app.py", "numLines": size // 40}}
        self._emit(entry)

    def fill(self, target: int) -> None:
        size = sum(len(line) + 1 for line in self.lines)
        while size < target:
            before = len(self.lines)
            roll = self.rng.random()
            if roll < 0.12:
                self.prompt()
            elif roll < 0.14:
                self._emit({"type": "summary", "summary": self._text(60), "leafUuid": self.parent})
            elif roll < 0.145:
                self.response("<synthetic>")
            elif roll < 0.6:
                self.response()
            else:
                self.tool_result(int(min(self.rng.lognormvariate(7.6, 1.2), 400_000)))
            size += sum(len(line) + 1 for line in self.lines[before:])


def generate(root: Path, total_bytes: int, files: int, seed: int) -> tuple[Totals, int]:
    """Writes the tree under `root/.claude/projects`; returns the deduplicated totals and its size."""
    rng = random.Random(seed)
    filler_rng = random.Random(seed + 1)
    words = ["def", "return", "self", "value", "=", "(", ")", ":", '"quoted"', "if", "else", "import", "\\", "\t", "λ"]
    filler = "".join(filler_rng.choice(words) + (" " if filler_rng.random() < 0.85 else "\n") for _ in range(400_000))
    final: dict[tuple[str, str], tuple[int, ...]] = {}
    big = max(1, files // 300)  # a few sessions of tens of MB
    small_sizes = [rng.lognormvariate(11.5, 1.0) for _ in range(files - big)]  # median ≈ 100 KB
    small_total = sum(small_sizes)
    big_each = max(20_000_000, (total_bytes - small_total) / big)
    if total_bytes - small_total < big * 20_000_000:  # a smaller run: scale the small files down instead
        big_each = 20_000_000 if total_bytes > big * 40_000_000 else total_bytes * 0.3 / big
        scale = (total_bytes - big * big_each) / small_total
        small_sizes = [size * scale for size in small_sizes]
    sizes = [int(size) for size in small_sizes] + [int(big_each)] * big
    rng.shuffle(sizes)
    projects = root / ".claude" / "projects"
    written, previous = 0, list[list[str]]()
    for index, size in enumerate(sizes):
        project = projects / f"-home-dev-work-project-{index % 40}"
        project.mkdir(parents=True, exist_ok=True)
        session = Session(rng, filler, final)
        if previous and rng.random() < 0.05:  # a resumed session: starts with a copy of an earlier one
            session.lines.extend(rng.choice(previous)[: rng.randrange(1, 200)])
        session.sidechain = rng.random() < 0.1
        session.fill(size)
        name = f"agent-{session.session_id[:8]}.jsonl" if session.sidechain else f"{session.session_id}.jsonl"
        text = "\n".join(session.lines) + "\n"
        (project / name).write_text(text, encoding="utf-8")
        written += len(text.encode())
        if len(session.lines) < 5000:
            previous.append(session.lines)
    totals = Totals(records=len(final))
    for inputs, output, creation, cache_read in final.values():
        totals.input_tokens += inputs
        totals.output_tokens += output
        totals.cache_creation_tokens += creation
        totals.cache_read_tokens += cache_read
    return totals, written


def tree(gib: float, files: int, seed: int) -> tuple[Path, Totals, int]:
    root = Path(tempfile.gettempdir()) / f"codepulse-cli-parse-v{VERSION}-{gib}-{files}-{seed}"
    manifest = root / "manifest.json"
    if manifest.exists():
        saved = json.loads(manifest.read_text())
        return root, Totals(**saved["totals"]), saved["bytes"]
    shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()
    totals, size = generate(root, int(gib * 2**30), files, seed)
    manifest.write_text(json.dumps({"totals": asdict(totals), "bytes": size}))
    print(f"generated {size / 1e6:,.0f} MB in {files:,} files in {time.perf_counter() - started:.0f} s: {root}")
    return root, totals, size


def warm(root: Path) -> None:
    for path in root.rglob("*.jsonl"):
        with path.open("rb") as handle:
            while handle.read(1 << 24):
                pass


def run_once(root: Path, cores: str, processes: int) -> tuple[float, dict[str, Any]]:
    with tempfile.TemporaryDirectory() as scratch:
        env = {
            **os.environ,
            "HOME": str(root),
            "CODEPULSE_CONFIG_DIR": f"{scratch}/config",
            "CODEPULSE_STATE_DIR": f"{scratch}/state",
            "CODEPULSE_PARSE_PROCESSES": str(processes),
        }
        for variable in ("CLAUDE_CONFIG_DIR", "CODEX_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME"):
            env.pop(variable, None)
        command = [
            "taskset",
            "-c",
            cores,
            str(Path(sys.executable).with_name("codepulse")),
            "sync",
            "--dry-run",
            "--json",
        ]
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"sync failed ({done.returncode}): {done.stderr}")
    return elapsed, json.loads(done.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()
    print(f"cpus {os.cpu_count()}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    root, expected, size = tree(options.gib, options.files, options.seed)
    print(f"tree: {size / 1e6:,.0f} MB, {options.files:,} files; expected {asdict(expected)}")
    warm(root)
    failed = False
    for label, cores, processes, reference in (
        ("one core, one process", "0", 1, CCUSAGE_ONE_CORE_MB_S),
        ("two cores, two processes", "0,1", 2, CCUSAGE_TWO_CORES_MB_S),
    ):
        times = []
        for _ in range(options.runs):
            elapsed, figures = run_once(root, cores, processes)
            got = figures["sources"]["claude-code"]
            exact = {key: got[key] for key in asdict(expected)} == asdict(expected)
            failed |= not exact
            times.append(elapsed)
            print(f"  {label}: {elapsed:.2f} s, {size / 1e6 / elapsed:,.0f} MB/s, totals {'exact' if exact else got}")
        best, median = min(times), statistics.median(times)
        print(
            f"{label}: median {median:.2f} s = {size / 1e6 / median:,.0f} MB/s "
            f"({size / 1e6 / median / reference:.2f}x ccusage's {reference:.0f} MB/s); "
            f"best {size / 1e6 / best:,.0f} MB/s"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
