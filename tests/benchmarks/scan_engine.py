#!/usr/bin/env python
"""Throughput, recall and false positives of the secrets engine, against detect-secrets.

Generates a deterministic corpus (default 2,000 files, about 20 MB of Python, JavaScript and
YAML) with planted secrets of every rule kind (from `tests/scans/secret_samples.py`) and
look-alike noise (40-hex checksums, `sha512-` integrity strings, UUIDs, placeholders, AWS's
documented example key, env lookups, public keys, prose about passwords and tokens), writes it to
a temporary directory, then prints:

* our secrets engine on one process: MB/s (best of `--rounds`), recall of the planted secrets
  (a planted secret counts as found when a finding of its rule starts on its line), false
  positives (findings on no planted line) per MB;
* the same through a 2-process pool (`concurrent.futures.ProcessPoolExecutor` calling
  `codepulse.scans.engine.scan_file`, the pipeline's entry point), after a warm-up;
* detect-secrets on the same corpus directory, installed into a throwaway venv under /tmp
  (`uv venv` + `uv pip install detect-secrets`; reused on the next run), run as a subprocess;
  skipped with a message when it cannot be installed. Its recall counts any finding on a
  planted line, whatever its type.

Targets: at least 10 MB/s on one core, recall 100 %, at most 1 false positive per MB.
Exit status 1 when a target is missed.

    uv run python tests/benchmarks/scan_engine.py
    uv run python tests/benchmarks/scan_engine.py --files 500 --size-mb 5 --skip-detect-secrets
    uv run python tests/benchmarks/scan_engine.py --profile      # cProfile of one single-process pass

`worker_first_scan_vs_rescan` and `cli_end_to_end` are hooks for the worker (first scan vs an
unchanged re-scan) and `codepulse scan` end-to-end parts; they report "not measured" until filled.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.scans.secret_samples import SAMPLES, expand  # noqa: E402

from codepulse.scans.engine import RawFinding, available_engines, scan_file  # noqa: E402

if TYPE_CHECKING:
    from codepulse.config import Settings

DETECT_SECRETS_VENV = Path(tempfile.gettempdir()) / "codepulse-bench-detect-secrets"
TARGET_MB_S = 10.0
TARGET_FP_PER_MB = 1.0

# ---------------------------------------------------------------- corpus


@dataclass(frozen=True)
class Planted:
    path: str
    line: int  # 1-based line where the secret starts
    rule_id: str


@dataclass
class Corpus:
    root: Path
    files: list[tuple[str, bytes]] = field(default_factory=list)
    planted: list[Planted] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(len(content) for _, content in self.files)


def _hex(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


def _b64(rng: random.Random, n: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    return "".join(rng.choice(alphabet) for _ in range(n))


def _uuid(rng: random.Random) -> str:
    return "-".join(_hex(rng, n) for n in (8, 4, 4, 4, 12))


_WORDS = (
    "user", "account", "order", "invoice", "repository", "scan", "report", "token", "session", "cache",
    "queue", "worker", "payment", "customer", "project", "branch", "commit", "review", "password", "secret",
    "key", "config", "settings", "client", "server", "request", "response", "handler", "router", "service",
    "model", "schema", "field", "value", "index", "count", "total",
)  # fmt: skip


def _ident(rng: random.Random) -> str:
    return "_".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 3)))


# Look-alikes that must not be reported, each drawn with the same probability.
_NOISE: tuple[Callable[[random.Random], str], ...] = (
    lambda rng: f'checksum = "{_hex(rng, 40)}"',
    lambda rng: f'"integrity": "sha512-{_b64(rng, 86)}=="',
    lambda rng: f'request_id = "{_uuid(rng)}"',
    lambda _rng: 'password = "changeme"',
    lambda _rng: 'api_token = "${SECRET}"',
    lambda _rng: 'aws_access_key_id = "AKIAIOSFODNN7EXAMPLE"',
    lambda _rng: 'secret_key = os.environ["SECRET_KEY"]',
    lambda rng: f'commit_sha = "{_hex(rng, 40)}"',
    lambda _rng: "# The password and the API token are read from the environment, never hard-coded.",
    lambda rng: f'session_token_uuid = "{_uuid(rng)}"',
    lambda _rng: 'DATABASE_URL = "postgresql://postgres:postgres@localhost:5432/app"',
    lambda rng: f'"resolved": "https://packages.example/pkg/-/pkg-1.2.{rng.randint(0, 99)}.tgz"',
    lambda _rng: 'api_key = "<your-api-key>"',
    lambda rng: f'etag = "W/{_hex(rng, 32)}"',
    lambda rng: "ssh-rsa " + _b64(rng, 200) + " user@example.com",
    lambda _rng: 'token_url = "https://oauth2.googleapis.com/token"',
)


def _noise_value(rng: random.Random) -> str:
    """A look-alike that must not be reported."""
    return _NOISE[rng.randrange(len(_NOISE))](rng)


def _code_line(rng: random.Random, language: str) -> str:
    name = _ident(rng)
    kind = rng.randrange(10)
    if language == "py":
        return [
            f"def {name}(self, value: int) -> int:",
            f"    return self.{name} + value  # {rng.choice(_WORDS)} {rng.choice(_WORDS)}",
            f"from app.{rng.choice(_WORDS)} import {name}",
            f'    logger.info("{name} finished", count={rng.randint(0, 999)})',
            f"    if {name} is None:",
            f'        raise ValueError("missing {name.replace("_", " ")}")',
            f"class {name.title().replace('_', '')}(BaseModel):",
            f"    {name}: str | None = None",
            f"    result = [item.{name} for item in items if item.{rng.choice(_WORDS)} > {rng.randint(0, 9)}]",
            f"# {' '.join(rng.choice(_WORDS) for _ in range(8))}",
        ][kind]
    if language == "js":
        return [
            f"export function {name}(value) {{",
            f"  return this.{name} + value; // {rng.choice(_WORDS)}",
            f"import {{ {name} }} from './{rng.choice(_WORDS)}.js';",
            f"  console.log('{name}', {rng.randint(0, 999)});",
            f"  if (!{name}) {{ throw new Error('missing {name}'); }}",
            "}",
            f"const {name} = await fetch(`/api/v1/{rng.choice(_WORDS)}s/${{id}}`);",
            f"  {name}: {rng.randint(0, 9999)},",
            f"  const items = data.filter((x) => x.{name} > {rng.randint(0, 9)});",
            f"// {' '.join(rng.choice(_WORDS) for _ in range(8))}",
        ][kind]
    return [
        f"{name}:",
        f"  {rng.choice(_WORDS)}: {rng.randint(0, 9999)}",
        f"  - name: {name}",
        f"    image: registry.example.com/{rng.choice(_WORDS)}:{rng.randint(1, 9)}.{rng.randint(0, 9)}",
        f"    enabled: {rng.choice(['true', 'false'])}",
        f"  {name}: ${{{name.upper()}}}",
        f"# {' '.join(rng.choice(_WORDS) for _ in range(8))}",
        f'    command: ["python", "-m", "{rng.choice(_WORDS)}"]',
        f"  {rng.choice(_WORDS)}_url: https://{rng.choice(_WORDS)}.example.com/{name}",
        f'  description: "{" ".join(rng.choice(_WORDS) for _ in range(6))}"',
    ][kind]


def _adapt(sample: str, language: str) -> tuple[list[str], int]:
    """A sample (Python-style `name = "value"` or bare text) as lines of the target language,
    and the index of the line where the secret starts."""
    lines = sample.split("\n")
    if len(lines) > 1:  # PEM block: inside a multi-line string
        if language == "py":
            return ['KEY = """' + lines[0], *lines[1:-1], lines[-1] + '"""'], 0
        if language == "js":
            return ["const KEY = `" + lines[0], *lines[1:-1], lines[-1] + "`;"], 0
        return ["key: |", *("  " + line for line in lines)], 1
    line = lines[0]
    if " = " in line and language != "py":
        name, value = line.split(" = ", 1)
        return ([f"  {name}: {value}"] if language == "yaml" else [f"const {name} = {value};"]), 0
    return [line], 0


def generate_corpus(root: Path, *, files: int, size_mb: float, seed: int, per_rule: int) -> Corpus:
    rng = random.Random(seed)
    languages = ("py", "js", "yaml")
    target = int(size_mb * 1024 * 1024 / files)
    corpus = Corpus(root)
    plants: dict[int, list[str]] = {}
    rule_ids = sorted(SAMPLES)
    for rule_id in rule_ids:
        for _ in range(per_rule):
            plants.setdefault(rng.randrange(files), []).append(rule_id)
    for index in range(files):
        language = languages[index % 3]
        rel = f"pkg{index % 40:02d}/{_ident(rng)}_{index}.{language}"
        lines: list[str] = []
        size = 0
        pending = list(plants.get(index, []))
        rng.shuffle(pending)
        while size < target or pending:
            roll = rng.random()
            if pending and roll < 0.02:
                rule_id = pending.pop()
                sample = expand(SAMPLES[rule_id].positive, random.Random(f"{seed}/{index}/{len(lines)}"))
                new, offset = _adapt(sample, language)
                corpus.planted.append(Planted(rel, len(lines) + 1 + offset, rule_id))
            elif roll < 0.06:
                new = _adapt(_noise_value(rng), language)[0]
            else:
                new = [_code_line(rng, language)]
            lines.extend(new)
            size += sum(len(line) + 1 for line in new)
        content = ("\n".join(lines) + "\n").encode()
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        corpus.files.append((rel, content))
    return corpus


# ---------------------------------------------------------------- measurements


@dataclass
class Quality:
    found: int
    planted: int
    false_positives: int
    missed: list[Planted]
    fp_examples: list[str]


def evaluate(corpus: Corpus, results: dict[str, list[RawFinding]]) -> Quality:
    planted_lines = {(p.path, p.line): p for p in corpus.planted}
    found: set[Planted] = set()
    false_positives = 0
    examples: list[str] = []
    for path, findings in results.items():
        for finding in findings:
            planted = planted_lines.get((path, finding.start_line))
            if planted is not None and planted.rule_id == finding.rule_id:
                found.add(planted)
            elif planted is None:
                false_positives += 1
                if len(examples) < 10:
                    examples.append(f"{path}:{finding.start_line} {finding.rule_id} {finding.snippet[:100]}")
    missed = [p for p in corpus.planted if p not in found]
    return Quality(len(found), len(corpus.planted), false_positives, missed, examples)


def single_process(corpus: Corpus, rounds: int) -> tuple[float, float, dict[str, list[RawFinding]]]:
    """Best wall-clock and best CPU time of `rounds` passes in this process, and the results."""
    engine = available_engines()["secrets"]
    best_wall = best_cpu = float("inf")
    results: dict[str, list[RawFinding]] = {}
    for _ in range(rounds):
        started, started_cpu = time.perf_counter(), time.process_time()
        results = {path: engine.scan(path, content) for path, content in corpus.files}
        best_wall = min(best_wall, time.perf_counter() - started)
        best_cpu = min(best_cpu, time.process_time() - started_cpu)
    return best_wall, best_cpu, results


def pool(corpus: Corpus, processes: int) -> tuple[float, float, dict[str, list[RawFinding]]]:
    paths = [path for path, _ in corpus.files]
    contents = [content for _, content in corpus.files]
    names = [("secrets",)] * len(paths)
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=processes) as executor:
        list(executor.map(scan_file, [("secrets",)] * processes, ["warm.py"] * processes, [b"x"] * processes))
        warm = time.perf_counter() - started
        started = time.perf_counter()
        chunks = executor.map(scan_file, names, paths, contents, chunksize=16)
        results = {path: chunk.get("secrets", []) for path, chunk in zip(paths, chunks, strict=True)}
        elapsed = time.perf_counter() - started
    return elapsed, warm, results


def detect_secrets(corpus: Corpus) -> tuple[float, Quality] | str:
    uv = shutil.which("uv")
    if uv is None:
        return "uv not found on PATH"
    binary = DETECT_SECRETS_VENV / "bin" / "detect-secrets"
    if not binary.exists():
        try:
            subprocess.run([uv, "venv", "-q", str(DETECT_SECRETS_VENV)], check=True, capture_output=True, timeout=300)
            subprocess.run(
                [uv, "pip", "install", "-q", "--python", str(DETECT_SECRETS_VENV / "bin" / "python"), "detect-secrets"],
                check=True,
                capture_output=True,
                timeout=600,
            )
        except (subprocess.SubprocessError, OSError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            return f"cannot install detect-secrets: {exc} {detail.decode(errors='replace')[-300:]}"
    started = time.perf_counter()
    completed = subprocess.run(
        [str(binary), "scan", "--all-files", "."],
        cwd=corpus.root,
        capture_output=True,
        check=False,
        timeout=3600,
    )
    elapsed = time.perf_counter() - started
    if completed.returncode != 0:
        return f"detect-secrets failed ({completed.returncode}): {completed.stderr.decode(errors='replace')[-300:]}"
    report = json.loads(completed.stdout)
    planted_lines = {(p.path, p.line): p for p in corpus.planted}
    found: set[Planted] = set()
    false_positives = 0
    examples: list[str] = []
    for path, items in report.get("results", {}).items():
        for item in items:
            planted = planted_lines.get((path, int(item["line_number"])))
            if planted is not None:
                found.add(planted)
            else:
                false_positives += 1
                if len(examples) < 5:
                    examples.append(f"{path}:{item['line_number']} {item['type']}")
    missed = [p for p in corpus.planted if p not in found]
    return elapsed, Quality(len(found), len(corpus.planted), false_positives, missed, examples)


# ---------------------------------------------------------------- hooks for the coordinator


def _git_repository(corpus: Corpus) -> Path:
    """The corpus committed to a git repository (next to it), for the worker to clone."""
    repo = corpus.root.parent / (corpus.root.name + "-repo")
    shutil.copytree(corpus.root, repo)
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@example.com",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@example.com",
    }
    for command in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "corpus"]):
        subprocess.run(["git", *command], cwd=repo, env=env, check=True)
    return repo


def _bench_settings(workdir: Path) -> Settings:
    from codepulse.config import load_settings

    return load_settings(
        _env_file=None,
        DATABASE_URL=f"sqlite+aiosqlite:///{workdir / 'bench.db'}",
        VAR_DIR=str(workdir / "var"),
        ALLOW_LOCAL_REPOSITORIES=True,
        SCHEDULER_ENABLED=False,
        WORKER_CONCURRENCY=0,
        RATE_LIMIT_ENABLED=False,
        LOG_LEVEL="WARNING",
        SCAN_MAX_REPOSITORY_BYTES=10**10,
    )


async def _worker_scans(repo: Path, settings: Settings) -> tuple[float, float, dict[str, Any], dict[str, Any]]:
    # Imported here: the engine-only part of the benchmark must not need the app.
    import httpx

    from codepulse.app import create_app
    from codepulse.db import Database
    from codepulse.scans.jobs import register_tasks
    from codepulse.scans.runner import close_shared_pool
    from codepulse.tasks import TaskRegistry, Worker

    database = Database.from_settings(settings)
    app = create_app(settings, database=database)
    registry = TaskRegistry()
    register_tasks(registry)
    worker = Worker(database, settings, registry, concurrency=1)
    api = "/api/v1"
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client,
        ):
            signup = {
                "email": "bench@example.com",
                "password": "a long bench password",
                "username": "bench",
                "name": "B",
            }
            token = (await client.post(f"{api}/auth/register", json=signup)).json()["token"]
            headers = {"Authorization": f"Bearer {token}"}
            await client.post(f"{api}/orgs", headers=headers, json={"name": "Bench", "slug": "bench"})
            created = await client.post(
                f"{api}/orgs/bench/repositories", headers=headers, json={"clone_url": repo.as_uri()}
            )
            repository_id = created.json()["id"]

            async def one_scan() -> tuple[float, dict[str, Any]]:
                scan = (await client.post(f"{api}/repositories/{repository_id}/scans", headers=headers, json={})).json()
                started = time.perf_counter()
                assert await worker.run_until_idle() == 1
                elapsed = time.perf_counter() - started
                finished: dict[str, Any] = (await client.get(f"{api}/scans/{scan['id']}", headers=headers)).json()
                return elapsed, finished

            first_elapsed, first = await one_scan()
            second_elapsed, second = await one_scan()
    finally:
        await database.dispose()
        close_shared_pool()
    return first_elapsed, second_elapsed, first, second


def worker_first_scan_vs_rescan(corpus: Corpus) -> str | None:
    """The real worker (task queue, clone, index, engine pool, cache, findings) on the corpus as a
    git repository, scanned twice through the API: the second scan finds every blob cached."""
    import asyncio

    repo = _git_repository(corpus)
    workdir = Path(tempfile.mkdtemp(prefix="codepulse-scan-bench-db-"))
    try:
        from codepulse import migrations

        settings = _bench_settings(workdir)
        migrations.upgrade_database(settings)
        first_s, second_s, first, second = asyncio.run(_worker_scans(repo, settings))
    finally:
        shutil.rmtree(repo, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
    if first["status"] != "succeeded" or second["status"] != "succeeded":
        return f"FAILED: first {first['status']} {first.get('error')}, second {second['status']} {second.get('error')}"
    megabytes = corpus.total_bytes / 1_000_000
    return (
        f"first scan {first_s:.2f} s ({megabytes / first_s:.1f} MB/s end to end, {first['engine_calls']} engine "
        f"calls, {first['files_scanned']} files, open findings {sum(first['counts']['open'].values())}); "
        f"unchanged re-scan {second_s:.2f} s ({second['engine_calls']} engine calls, {second['cache_hits']} "
        f"cache hits) -> {first_s / second_s:.1f}x faster (target >= 10x)"
    )


def cli_end_to_end(corpus: Corpus) -> str | None:
    """`codepulse scan <corpus dir> --engine secrets --format json` as a CI pipeline would run it:
    a new process, the pool, the report written to a file."""
    report = corpus.root.parent / (corpus.root.name + "-report.json")
    command = [sys.executable, "-m", "codepulse", "scan", str(corpus.root), "--engine", "secrets"]
    command += ["--format", "json", "--output", str(report)]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode not in (0, 1):
        return f"FAILED (exit {result.returncode}): {result.stderr.strip()[-300:]}"
    findings = json.loads(report.read_text())
    report.unlink()
    count = len(findings["findings"]) if isinstance(findings, dict) else len(findings)
    megabytes = corpus.total_bytes / 1_000_000
    return f"{elapsed:.2f} s wall including interpreter start = {megabytes / elapsed:.1f} MB/s, {count} findings"


EXTRA_MEASUREMENTS: list[tuple[str, Callable[[Corpus], str | None]]] = [
    ("worker first scan vs unchanged re-scan", worker_first_scan_vs_rescan),
    ("codepulse scan end to end", cli_end_to_end),
]

# ---------------------------------------------------------------- report


def _quality_line(label: str, quality: Quality, megabytes: float) -> str:
    recall = 100.0 * quality.found / quality.planted if quality.planted else 100.0
    return (
        f"{label}: recall {recall:.1f} % ({quality.found}/{quality.planted}), "
        f"false positives {quality.false_positives} = {quality.false_positives / megabytes:.2f}/MB"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--size-mb", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--per-rule", type=int, default=5, help="planted secrets per rule")
    parser.add_argument("--rounds", type=int, default=3, help="single-process passes (best is reported)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--skip-detect-secrets", action="store_true")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one single-process pass")
    parser.add_argument("--keep-corpus", action="store_true", help="do not delete the corpus directory")
    args = parser.parse_args(argv)

    load = os.getloadavg()
    print(f"cpus {os.cpu_count()}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    root = Path(tempfile.mkdtemp(prefix="codepulse-scan-bench-"))
    ok = True
    try:
        started = time.perf_counter()
        corpus = generate_corpus(root, files=args.files, size_mb=args.size_mb, seed=args.seed, per_rule=args.per_rule)
        megabytes = corpus.total_bytes / 1_000_000
        by_language = Counter(path.rsplit(".", 1)[1] for path, _ in corpus.files)
        print(
            f"corpus {root}: {len(corpus.files)} files ({dict(by_language)}), {megabytes:.1f} MB, "
            f"{len(corpus.planted)} planted secrets of {len(SAMPLES)} rules, generated in "
            f"{time.perf_counter() - started:.1f} s"
        )
        engine = available_engines()["secrets"]
        print(f"secrets engine {engine.version}, {len(engine.rules())} rules")

        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            for path, content in corpus.files:
                engine.scan(path, content)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(15)

        elapsed, cpu, results = single_process(corpus, args.rounds)
        ours_mb_s = megabytes / elapsed
        quality = evaluate(corpus, results)
        print(
            f"secrets, 1 process: {elapsed:.2f} s wall = {ours_mb_s:.1f} MB/s; {cpu:.2f} s CPU = "
            f"{megabytes / cpu:.1f} MB/s per core (best of {args.rounds})"
        )
        print("  " + _quality_line("secrets", quality, megabytes))
        for planted in quality.missed[:10]:
            print(f"  missed {planted.path}:{planted.line} {planted.rule_id}")
        for example in quality.fp_examples:
            print(f"  false positive {example}")
        ok &= ours_mb_s >= TARGET_MB_S and not quality.missed
        ok &= quality.false_positives / megabytes <= TARGET_FP_PER_MB

        pool_elapsed, warm, pool_results = pool(corpus, args.processes)
        pool_quality = evaluate(corpus, pool_results)
        print(
            f"secrets, {args.processes}-process pool (scan_file): {pool_elapsed:.2f} s = "
            f"{megabytes / pool_elapsed:.1f} MB/s ({megabytes / pool_elapsed / ours_mb_s:.2f}x one process; "
            f"pool start + warm-up {warm:.2f} s)"
        )
        print("  " + _quality_line("pool", pool_quality, megabytes))
        ok &= pool_quality.found == quality.found

        if args.skip_detect_secrets:
            print("detect-secrets: skipped (--skip-detect-secrets)")
        else:
            outcome = detect_secrets(corpus)
            if isinstance(outcome, str):
                print(f"detect-secrets: skipped: {outcome}")
            else:
                ds_elapsed, ds_quality = outcome
                ds_mb_s = megabytes / ds_elapsed
                print(f"detect-secrets (subprocess, 1 process): {ds_elapsed:.2f} s = {ds_mb_s:.2f} MB/s")
                print("  " + _quality_line("detect-secrets (any type on the planted line)", ds_quality, megabytes))
                print(f"ratio: secrets engine is {ours_mb_s / ds_mb_s:.0f}x detect-secrets on one process")

        for label, measure in EXTRA_MEASUREMENTS:
            line = measure(corpus)
            print(f"{label}: {line if line is not None else 'not measured (hook not filled in yet)'}")

        verdict = "PASS" if ok else "BELOW TARGET"
        print(f"targets (>= {TARGET_MB_S:.0f} MB/s one core, recall 100 %, <= {TARGET_FP_PER_MB:.0f} FP/MB): {verdict}")
    finally:
        if args.keep_corpus:
            print(f"corpus kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
