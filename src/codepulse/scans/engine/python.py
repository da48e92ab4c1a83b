"""The python engine: bandit, driven through its in-process API.

bandit is imported only inside this engine's methods (first scan or rule listing), never when
`codepulse.scans.engine` is imported, so the API process does not pay for it. One bandit manager
is built per process and reused for every file; its per-file state is reset before each scan.
`# nosec` comments are honoured by bandit itself.

Every bandit result is reported with bandit's own confidence (HIGH/MEDIUM/LOW → high/medium/low);
which of them a scan shows (the default profile hides `B101` and low-confidence results) is decided
after the result cache, by `codepulse.scans.ruleset`, so a repository's `.codepulse.yml` can turn
them back on without a re-analysis. One kind of result is dropped here, since it is never right: a
hard-coded "password" (B105/B106/B107) whose string is a password *hash* (argon2, bcrypt, PBKDF2,
crypt SHA-256/512, scrypt in passlib's, Werkzeug's or Django's formats). Storing a hash is what
code is supposed to do.
"""

from __future__ import annotations

import io
import logging
import re
import sys
import threading
import warnings
from functools import cache
from importlib import metadata
from types import SimpleNamespace
from typing import Any, Final

from codepulse.scans.engine.base import RawFinding, RuleInfo, decode, mask_secret, normalise_whitespace, sha256_hex

ENGINE_NAME: Final = "python"
MAPPING_VERSION: Final = "2"
"""Bump when the mapping of bandit's results onto findings changes (part of the cache key)."""

_SUFFIXES: Final = (".py", ".pyw")
_SNIPPET_MAX_LINES: Final = 3
_SNIPPET_MAX_CHARS: Final = 300
_HARDCODED_PASSWORD_TESTS: Final = frozenset({"B105", "B106", "B107"})
_PASSWORD_TEXT_PREFIX: Final = "Possible hardcoded password: '"  # noqa: S105 - bandit's message
_B64: Final = r"[A-Za-z0-9+/.=_-]+"
_PASSWORD_HASH: Final = re.compile(
    "|".join(
        (
            rf"\$argon2(?:id|i|d)\$(?:v=\d+\$)?m=\d+,t=\d+,p=\d+\${_B64}\${_B64}",
            r"\$2[abxy]\$\d{2}\$[./A-Za-z0-9]{53}",  # bcrypt
            rf"\$pbkdf2(?:-sha(?:1|256|512))?\$\d+\${_B64}\${_B64}",  # passlib
            rf"pbkdf2_sha(?:1|256)\$\d+\${_B64}\${_B64}",  # Django
            rf"pbkdf2:sha(?:1|256|512)(?::\d+)?\${_B64}\$[0-9a-f]+",  # Werkzeug
            r"\$[56]\$(?:rounds=\d+\$)?[./A-Za-z0-9]{1,16}\$[./A-Za-z0-9]{43,86}",  # crypt SHA-256/512
            rf"scrypt:\d+:\d+:\d+\${_B64}\$[0-9a-f]+",  # Werkzeug
            rf"\$scrypt\$ln=\d+,r=\d+,p=\d+\${_B64}\${_B64}",  # passlib
        )
    )
)
"""A password hash literal, as a whole string (matched with `fullmatch`)."""
_CONFIDENCE: Final = {"HIGH": "high", "MEDIUM": "medium", "LOW": "low"}
_STRING_LITERAL = re.compile(r"""(?P<q>['"])(?P<body>(?:\\.|(?!(?P=q)).){4,}?)(?P=q)""")

# (bandit severity, bandit confidence) -> our severity
_SEVERITY: Final = {
    ("HIGH", "HIGH"): "high",
    ("HIGH", "MEDIUM"): "high",
    ("HIGH", "LOW"): "medium",
    ("MEDIUM", "HIGH"): "medium",
    ("MEDIUM", "MEDIUM"): "medium",
    ("MEDIUM", "LOW"): "low",
    ("LOW", "HIGH"): "low",
    ("LOW", "MEDIUM"): "low",
    ("LOW", "LOW"): "info",
}


def map_severity(severity: str, confidence: str) -> str:
    """bandit's severity and confidence (LOW/MEDIUM/HIGH/UNDEFINED) onto our five levels."""
    return _SEVERITY.get((severity.upper(), confidence.upper()), "info")


def map_confidence(confidence: str) -> str:
    """bandit's confidence onto ours (an UNDEFINED one as medium, the default)."""
    return _CONFIDENCE.get(confidence.upper(), "medium")


def is_password_hash(value: str) -> bool:
    """Whether a string is a password hash (argon2, bcrypt, PBKDF2, crypt SHA, scrypt), not a password."""
    return _PASSWORD_HASH.fullmatch(value.strip()) is not None


def hashed_password_result(test_id: str, text: str) -> bool:
    """Whether a bandit result is a hard-coded password (B105/B106/B107) whose string is a hash.

    bandit's text for them is `Possible hardcoded password: '<the string>'`.
    """
    if test_id not in _HARDCODED_PASSWORD_TESTS or not text.startswith(_PASSWORD_TEXT_PREFIX):
        return False
    return text.endswith("'") and is_password_hash(text[len(_PASSWORD_TEXT_PREFIX) : -1])


def rule_id(test_id: str) -> str:
    return f"bandit.{test_id}"


def bandit_version() -> str:
    try:
        return metadata.version("bandit")
    except metadata.PackageNotFoundError:
        return "unknown"


def _mask_literals(text: str) -> str:
    return _STRING_LITERAL.sub(lambda m: f"{m['q']}{mask_secret(m['body'])}{m['q']}", text)


class PythonEngine:
    name: str
    version: str

    def __init__(self) -> None:
        self.name = ENGINE_NAME
        self.version = f"bandit-{bandit_version()}+{MAPPING_VERSION}"
        self._manager: Any = None
        self._lock = threading.Lock()

    def wants(self, path: str) -> bool:
        return path.lower().endswith(_SUFFIXES)

    def _get_manager(self) -> Any:
        if self._manager is None:
            bandit = _load_bandit()
            # bandit logs its own progress and parse failures; a finding-less result says enough.
            logging.getLogger("bandit").setLevel(logging.CRITICAL)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                self._manager = bandit.manager.BanditManager(bandit.config.BanditConfig(), "file", quiet=True)
        return self._manager

    def scan(self, path: str, content: bytes) -> list[RawFinding]:
        if not content.strip():
            return []
        bandit = _load_bandit()
        with self._lock:  # the manager holds per-file state
            manager = self._get_manager()
            manager.results = []
            manager.skipped = []
            manager.scores = []
            manager.metrics = bandit.metrics.Metrics()
            manager.b_ma = bandit.meta_ast.BanditMetaAst()
            # bandit's per-file entry point (what `run_tests` calls for each file it opens):
            # tokenizes for `# nosec`, parses, runs the test set; failures land in `skipped`.
            manager._parse_file(path, io.BytesIO(content), [path])
            issues = [
                issue
                for issue in manager.results
                if not hashed_password_result(str(issue.test_id), str(issue.text or ""))
            ]
            manager.results = []
        if not issues:
            return []
        lines = decode(content).splitlines()
        findings = [self._finding(issue, lines) for issue in issues]
        findings.sort(key=lambda f: (f.start_line, f.start_column, f.rule_id))
        return findings

    def _finding(self, issue: Any, lines: list[str]) -> RawFinding:
        test_id = str(issue.test_id)
        start_line = max(int(issue.lineno), 1)
        line_range = [int(n) for n in (issue.linerange or [start_line])]
        end_line = max(max(line_range), start_line)
        context_lines = lines[start_line - 1 : end_line]
        context = "\n".join(context_lines)
        shown = "\n".join(context_lines[:_SNIPPET_MAX_LINES])
        if test_id in _HARDCODED_PASSWORD_TESTS:
            shown = _mask_literals(shown)
        if len(shown) > _SNIPPET_MAX_CHARS:
            shown = shown[:_SNIPPET_MAX_CHARS] + "…"
        start_column = _char_column(lines, start_line, int(issue.col_offset or 0))
        end_offset = getattr(issue, "end_col_offset", None)
        end_column = _char_column(lines, end_line, int(end_offset)) if end_offset is not None else 0
        if end_column <= start_column and end_line == start_line:
            end_column = len(lines[end_line - 1]) + 1 if end_line <= len(lines) else start_column
        title = _title(test_id, str(issue.test or test_id))
        return RawFinding(
            rule_id=rule_id(test_id),
            engine=ENGINE_NAME,
            severity=map_severity(str(issue.severity), str(issue.confidence)),
            title=title,
            message=_mask_literals(str(issue.text)) if test_id in _HARDCODED_PASSWORD_TESTS else str(issue.text),
            start_line=start_line,
            end_line=end_line,
            start_column=start_column,
            end_column=end_column,
            snippet=shown,
            cwe=_cwe(issue.cwe),
            fingerprint_basis=sha256_hex(normalise_whitespace(context)),
            confidence=map_confidence(str(issue.confidence)),
        )

    def rules(self) -> list[RuleInfo]:
        bandit = _load_bandit()
        loader = bandit.extension_loader.MANAGER
        result: list[RuleInfo] = []
        for test_id, plugin in sorted(loader.plugins_by_id.items()):
            module = sys.modules.get(plugin.plugin.__module__)
            doc = (plugin.plugin.__doc__ or getattr(module, "__doc__", None) or "").strip()
            summary = _doc_summary(doc) or plugin.name.replace("_", " ")
            result.append(
                RuleInfo(
                    id=rule_id(test_id),
                    engine=ENGINE_NAME,
                    title=plugin.name.replace("_", " "),
                    description=summary,
                    help=f"See {bandit.docs_utils.get_url(test_id)}",
                    severity="medium",
                    cwe=None,
                )
            )
        for test_id, entry in sorted(loader.blacklist_by_id.items()):
            level = str(entry.get("level", "MEDIUM"))
            result.append(
                RuleInfo(
                    id=rule_id(test_id),
                    engine=ENGINE_NAME,
                    title=str(entry.get("name", test_id)).replace("_", " "),
                    description=str(entry.get("message", "")).replace("{name}", "this call or import"),
                    help=f"See {bandit.docs_utils.get_url(test_id)}",
                    severity=map_severity(level, "HIGH"),
                    cwe=_cwe(entry.get("cwe")),
                )
            )
        return result


@cache
def _load_bandit() -> SimpleNamespace:
    """Import bandit's modules (once per process), quietly: loading its plugins through stevedore
    emits DeprecationWarnings that are not ours to fix."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        # Deferred: bandit is optional and slow to import; only a process that scans Python loads it.
        from bandit.core import (
            config,
            docs_utils,
            extension_loader,
            manager,
            meta_ast,
            metrics,
        )

    return SimpleNamespace(
        config=config,
        docs_utils=docs_utils,
        extension_loader=extension_loader,
        manager=manager,
        meta_ast=meta_ast,
        metrics=metrics,
    )


def _char_column(lines: list[str], line: int, byte_offset: int) -> int:
    """1-based character column of an AST offset (UTF-8 bytes into the line)."""
    if not 1 <= line <= len(lines):
        return byte_offset + 1
    text = lines[line - 1]
    if text.isascii():
        return byte_offset + 1
    return len(text.encode("utf-8")[:byte_offset].decode("utf-8", "ignore")) + 1


def _cwe(value: Any) -> str | None:
    """bandit's CWE (a `Cwe` object or an int; 0 = not set) as "CWE-###"."""
    number = getattr(value, "id", value)
    return f"CWE-{number}" if isinstance(number, int) and number > 0 else None


def _title(test_id: str, test_name: str) -> str:
    """bandit names blacklist results "blacklist"; use the blacklist entry's own name instead."""
    if test_name == "blacklist":
        entry = _load_bandit().extension_loader.MANAGER.blacklist_by_id.get(test_id)
        if entry is not None:
            test_name = str(entry.get("name", test_name))
    return test_name.replace("_", " ").replace("-", " ")


def _doc_summary(doc: str) -> str:
    """The first prose paragraph of a bandit plugin's docstring (they start with an RST title)."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", doc) if p.strip()]
    for paragraph in paragraphs:
        if paragraph.startswith(("=", "-", "..", ":")) or set(paragraph.splitlines()[-1]) <= set("=-~"):
            continue
        return normalise_whitespace(paragraph)[:500]
    return ""
