"""The secrets engine: keyword-prefiltered regular expressions from `secrets_rules.toml`.

Per file: decode once, lower-case once, one Aho-Corasick pass (pyahocorasick) over the lower-cased
text collects the keywords present; only the rules owning one of them run their compiled regex,
over the whole text (no per-line loop). Line and column numbers are computed only for hits, by
bisecting newline offsets that are computed the first time a file has a hit. Context rules
(`lowercase = true`) run over the lower-cased text, so their patterns keep a literal prefix that
`re` can skip to instead of an `(?i)` alternation tried at every position; the secret is sliced
from the original text at the same offsets (when lower-casing changed the length, which some
non-ASCII characters do, the same pattern runs with IGNORECASE over the original instead).

Confidence: each finding carries its rule's `confidence` (provider formats `medium`, generic
assignments `low`). A rule may name an offline checker (`verify`, a key of `secrets_verify.VERIFIERS`): the
checksum or structure embedded in some token formats (GitHub's and npm's CRC32, age's Bech32, a
PyPI macaroon, a JWT's JSON header, a Discord bot token's user ID, base64 JSON). A candidate whose
check passes is reported `high`, one whose check fails `low` (still reported: it has the
provider's shape, but is most likely a test value or a truncated copy); a checker returns None
when the candidate's shape carries no checksum.

A candidate secret is dropped when its Shannon entropy is below the rule's threshold, when it
matches an allow-list regex or contains a stopword (the rule's or the global ones), when the path
matches an allow-listed path, when it overlaps a secret already reported in the file (rules run
in file order, so specific rules win over the generic ones listed last), or when its line carries
an inline suppression (`codepulse:ignore`, `gitleaks:allow`, `pragma: allowlist secret`).
"""

from __future__ import annotations

import hashlib
import math
import re
import tomllib
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Final

import ahocorasick

from codepulse.scans.engine.base import CONFIDENCES, SEVERITIES, RawFinding, RuleInfo, decode, mask_secret, sha256_hex
from codepulse.scans.engine.secrets_verify import VERIFIERS

ENGINE_NAME: Final = "secrets"
ENGINE_VERSION: Final = "1.2"
"""Bump when the engine's matching logic changes; the ruleset hash covers the rules file."""

SUPPRESSION_MARKERS: Final = ("codepulse:ignore", "gitleaks:allow", "pragma: allowlist secret")
SNIPPET_CONTEXT: Final = 60
"""Characters of the line kept on each side of the secret in a snippet."""

_NEWLINE = re.compile("\n")
_CLASS_OR_ESCAPE = re.compile(r"\\.|\[(?:\\.|[^\]])*\]|\(\?[<P]?[=!]?<?[A-Za-z_]*>?")
_UPPER_OUTSIDE_CLASSES = re.compile("[A-Z]")


class RulesetError(ValueError):
    """The rules file is invalid (raised at load time, never while scanning)."""


@dataclass(frozen=True, slots=True)
class SecretRule:
    id: str
    title: str
    severity: str
    cwe: str | None
    description: str
    help: str
    keywords: tuple[str, ...]
    regex: re.Pattern[str]
    lowercase: bool
    """Run `regex` over the lower-cased text (patterns written in lower case, without `(?i)`, keep
    their literal prefix and let `re` skip ahead fast); the secret is sliced from the original."""
    regex_ignorecase: re.Pattern[str] | None
    """For lower-case rules: the same pattern with IGNORECASE, run on the original text when
    lower-casing changed the text's length (some non-ASCII characters), so offsets differ."""
    secret_group: tuple[int | str, ...]
    """The group(s) holding the secret: the first one that took part in the match is reported
    (a regex with one branch per assignment style has one secret group per branch)."""
    entropy: float
    allow_regexes: tuple[re.Pattern[str], ...]
    stopwords: tuple[str, ...]
    allow_paths: tuple[re.Pattern[str], ...]
    confidence: str = "medium"
    """One of CONFIDENCES: of a finding when the rule has no checker or its checker abstains."""
    verify: Callable[[str], bool | None] | None = None
    """Offline checksum/structure check of a candidate: True -> high, False -> low, None -> `confidence`."""


@dataclass(frozen=True)
class Ruleset:
    rules: tuple[SecretRule, ...]
    allow_regexes: tuple[re.Pattern[str], ...]
    stopwords: tuple[str, ...]
    allow_paths: tuple[re.Pattern[str], ...]
    sha256: str


def _str_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise RulesetError(f"{where}: expected a list of strings")
    return list(value)


def _compile(pattern: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise RulesetError(f"{where}: bad regex: {exc}") from exc


def _parse_rule(raw: dict[str, Any], defaults: dict[str, Any]) -> SecretRule:
    rule_id = raw.get("id")
    if not isinstance(rule_id, str) or not re.fullmatch(r"[a-z0-9][a-z0-9.-]*", rule_id):
        raise RulesetError(f"rule {rule_id!r}: id must be lower-case kebab-case")
    where = f"rule {rule_id}"
    severity = raw.get("severity", defaults.get("severity", "high"))
    if severity not in SEVERITIES:
        raise RulesetError(f"{where}: severity must be one of {SEVERITIES}")
    keywords = tuple(keyword.lower() for keyword in _str_list(raw.get("keywords"), where))
    if not keywords or any(not keyword for keyword in keywords):
        raise RulesetError(f"{where}: at least one non-empty keyword is required")
    pattern = str(raw.get("regex", ""))
    regex = _compile(pattern, where)
    lowercase = bool(raw.get("lowercase", False))
    if lowercase and _UPPER_OUTSIDE_CLASSES.search(_CLASS_OR_ESCAPE.sub("", pattern)):
        raise RulesetError(f"{where}: a lowercase rule's regex must be written in lower case")
    raw_group = raw.get("secret_group", 1 if regex.groups else 0)
    groups: tuple[Any, ...] = tuple(raw_group) if isinstance(raw_group, list) else (raw_group,)
    if not groups:
        raise RulesetError(f"{where}: secret_group is empty")
    for group in groups:
        if isinstance(group, int) and not isinstance(group, bool):
            if not 0 <= group <= regex.groups:
                raise RulesetError(f"{where}: secret_group {group} does not exist")
        elif not isinstance(group, str) or group not in regex.groupindex:
            raise RulesetError(f"{where}: secret_group {group!r} does not exist")
    confidence = raw.get("confidence", defaults.get("confidence", "medium"))
    if confidence not in CONFIDENCES:
        raise RulesetError(f"{where}: confidence must be one of {CONFIDENCES}")
    verify_name = raw.get("verify")
    if verify_name is not None and verify_name not in VERIFIERS:
        raise RulesetError(f"{where}: unknown verify {verify_name!r} (known: {sorted(VERIFIERS)})")
    allowlist = raw.get("allowlist", {})
    title = str(raw.get("title") or rule_id)
    help_template = str(defaults.get("help", "Remove the {title} from the code, revoke and rotate it."))
    return SecretRule(
        id=rule_id,
        title=title,
        severity=severity,
        cwe=raw.get("cwe", defaults.get("cwe")),
        description=str(raw.get("description") or title),
        help=str(raw.get("help") or help_template.format(title=title)),
        keywords=keywords,
        regex=regex,
        lowercase=lowercase,
        regex_ignorecase=re.compile(pattern, re.IGNORECASE) if lowercase else None,
        secret_group=groups,
        entropy=float(raw.get("entropy", 0.0)),
        allow_regexes=tuple(_compile(p, where) for p in _str_list(allowlist.get("regexes"), where)),
        stopwords=tuple(word.lower() for word in _str_list(allowlist.get("stopwords"), where)),
        allow_paths=tuple(_compile(p, where) for p in _str_list(allowlist.get("paths"), where)),
        confidence=confidence,
        verify=VERIFIERS[verify_name] if verify_name is not None else None,
    )


def parse_ruleset(data: bytes) -> Ruleset:
    """Parse and validate a rules file (TOML bytes)."""
    try:
        document = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RulesetError(f"rules file: {exc}") from exc
    defaults = document.get("defaults", {})
    rules = tuple(_parse_rule(raw, defaults) for raw in document.get("rules", []))
    ids = [rule.id for rule in rules]
    duplicates = sorted({rule_id for rule_id in ids if ids.count(rule_id) > 1})
    if duplicates:
        raise RulesetError(f"duplicate rule ids: {duplicates}")
    allowlist = document.get("allowlist", {})
    return Ruleset(
        rules=rules,
        allow_regexes=tuple(_compile(p, "allowlist") for p in _str_list(allowlist.get("regexes"), "allowlist")),
        stopwords=tuple(word.lower() for word in _str_list(allowlist.get("stopwords"), "allowlist")),
        allow_paths=tuple(_compile(p, "allowlist") for p in _str_list(allowlist.get("paths"), "allowlist")),
        sha256=hashlib.sha256(data).hexdigest(),
    )


@cache
def _default_rules_file() -> bytes:
    return resources.files("codepulse.scans.engine").joinpath("secrets_rules.toml").read_bytes()


@cache
def default_ruleset() -> Ruleset:
    return parse_ruleset(_default_rules_file())


def shannon_entropy(text: str) -> float:
    """Bits per character of `text` (0.0 for an empty string)."""
    length = len(text)
    if not length:
        return 0.0
    return -sum(count / length * math.log2(count / length) for count in Counter(text).values())


@dataclass(slots=True)
class _Hit:
    rule: SecretRule
    start: int
    end: int
    secret: str
    confidence: str


class _Lines:
    """Newline offsets of a text, computed on first use; maps offsets to 1-based line/column."""

    __slots__ = ("_newlines", "_text")

    def __init__(self, text: str) -> None:
        self._text = text
        self._newlines: list[int] | None = None

    def _offsets(self) -> list[int]:
        if self._newlines is None:
            self._newlines = [match.start() for match in _NEWLINE.finditer(self._text)]
        return self._newlines

    def index(self, offset: int) -> int:
        """0-based line index of `offset`."""
        return bisect_left(self._offsets(), offset)

    def bounds(self, line_index: int) -> tuple[int, int]:
        """[start, end) offsets of a line, without its newline."""
        newlines = self._offsets()
        start = newlines[line_index - 1] + 1 if line_index > 0 else 0
        end = newlines[line_index] if line_index < len(newlines) else len(self._text)
        return start, end


class SecretsEngine:
    name: str
    version: str

    def __init__(self, ruleset: Ruleset | None = None) -> None:
        self._ruleset = ruleset
        self.name = ENGINE_NAME
        # The default rules are compiled at the first scan, not here: a process that only needs
        # the engine's name and version (the scan pipeline's parent) saves ~100 ms at start-up.
        sha256 = ruleset.sha256 if ruleset is not None else hashlib.sha256(_default_rules_file()).hexdigest()
        self.version = f"{ENGINE_VERSION}+{sha256[:16]}"
        self._prefilter: tuple[ahocorasick.Automaton, list[tuple[int, ...]]] | None = None

    @property
    def ruleset(self) -> Ruleset:
        if self._ruleset is None:
            self._ruleset = default_ruleset()
        return self._ruleset

    def _keywords(self) -> tuple[ahocorasick.Automaton, list[tuple[int, ...]]]:
        """The keyword automaton, and per keyword value the indexes of the rules owning it."""
        if self._prefilter is None:
            keyword_rules: dict[str, list[int]] = {}
            for index, rule in enumerate(self.ruleset.rules):
                for keyword in rule.keywords:
                    keyword_rules.setdefault(keyword, []).append(index)
            owners: list[tuple[int, ...]] = []
            automaton = ahocorasick.Automaton()
            for keyword, rule_indexes in keyword_rules.items():
                automaton.add_word(keyword, len(owners))
                owners.append(tuple(rule_indexes))
            automaton.make_automaton()
            self._prefilter = (automaton, owners)
        return self._prefilter

    def wants(self, path: str) -> bool:
        return True

    def rules(self) -> list[RuleInfo]:
        return [
            RuleInfo(
                id=rule.id,
                engine=self.name,
                title=rule.title,
                description=rule.description,
                help=rule.help,
                severity=rule.severity,
                cwe=rule.cwe,
            )
            for rule in self.ruleset.rules
        ]

    def _selected_rules(self, lowered: str) -> list[SecretRule]:
        automaton, owners = self._keywords()
        found = {value for _end, value in automaton.iter(lowered)}
        if not found:
            return []
        indexes: set[int] = set()
        for value in found:
            indexes.update(owners[value])
        rules = self.ruleset.rules
        return [rules[index] for index in sorted(indexes)]

    def _allowed(self, rule: SecretRule, secret: str) -> bool:
        ruleset = self.ruleset
        if rule.stopwords or ruleset.stopwords:
            lowered = secret.lower()
            if any(word in lowered for word in rule.stopwords) or any(word in lowered for word in ruleset.stopwords):
                return True
        return any(pattern.search(secret) for pattern in rule.allow_regexes) or any(
            pattern.search(secret) for pattern in ruleset.allow_regexes
        )

    def _path_allowed(self, rule: SecretRule, path: str) -> bool:
        return any(pattern.search(path) for pattern in rule.allow_paths)

    def scan(self, path: str, content: bytes) -> list[RawFinding]:
        if not content or any(pattern.search(path) for pattern in self.ruleset.allow_paths):
            return []
        text = decode(content)
        lowered = text.lower()
        rules = self._selected_rules(lowered)
        if not rules:
            return []
        same_offsets = len(lowered) == len(text)
        hits: list[_Hit] = []
        for rule in rules:
            if rule.allow_paths and self._path_allowed(rule, path):
                continue
            groups = rule.secret_group
            if rule.lowercase and same_offsets:
                matches = rule.regex.finditer(lowered)
            elif rule.lowercase and rule.regex_ignorecase is not None:
                matches = rule.regex_ignorecase.finditer(text)
            else:
                matches = rule.regex.finditer(text)
            for match in matches:
                start, end = _secret_span(match, groups)
                if start < 0 or start == end:
                    continue
                secret = text[start:end]
                if any(hit.start < end and start < hit.end for hit in hits):
                    continue
                if rule.entropy and shannon_entropy(secret) < rule.entropy:
                    continue
                if self._allowed(rule, secret):
                    continue
                hits.append(_Hit(rule, start, end, secret, _confidence(rule, secret)))
        if not hits:
            return []
        return self._findings(text, hits)

    def _findings(self, text: str, hits: list[_Hit]) -> list[RawFinding]:
        lines = _Lines(text)
        hits.sort(key=lambda hit: hit.start)
        findings: list[RawFinding] = []
        for hit in hits:
            start_index = lines.index(hit.start)
            end_index = lines.index(hit.end - 1) if hit.end > hit.start else start_index
            line_start, line_end = lines.bounds(start_index)
            end_line_start, end_line_end = lines.bounds(end_index)
            start_line_text = text[line_start:line_end].lower()
            end_line_text = text[end_line_start:end_line_end].lower() if end_index != start_index else ""
            if any(marker in start_line_text or marker in end_line_text for marker in SUPPRESSION_MARKERS):
                continue
            masked = mask_secret(hit.secret)
            findings.append(
                RawFinding(
                    rule_id=hit.rule.id,
                    engine=ENGINE_NAME,
                    severity=hit.rule.severity,
                    title=hit.rule.title,
                    message=f"{hit.rule.title} found: {masked}",
                    start_line=start_index + 1,
                    end_line=end_index + 1,
                    start_column=hit.start - line_start + 1,
                    end_column=hit.end - end_line_start + 1,
                    snippet=_snippet(text, line_start, line_end, hit, hits),
                    cwe=hit.rule.cwe,
                    fingerprint_basis=sha256_hex(hit.secret),
                    confidence=hit.confidence,
                )
            )
        return findings


def _secret_span(match: re.Match[str], groups: tuple[int | str, ...]) -> tuple[int, int]:
    """The span of the first of `groups` that took part in `match`, (-1, -1) when none did."""
    for group in groups:
        start, end = match.span(group)
        if start >= 0:
            return start, end
    return -1, -1


def _confidence(rule: SecretRule, secret: str) -> str:
    if rule.verify is None:
        return rule.confidence
    try:
        verdict = rule.verify(secret)
    except ValueError:  # binascii and Unicode errors included: a checker never breaks a scan
        verdict = False
    if verdict is None:
        return rule.confidence
    return "high" if verdict else "low"


def _snippet(text: str, line_start: int, line_end: int, hit: _Hit, hits: list[_Hit]) -> str:
    """The hit's first line around the secret, every secret found in the file masked in it."""
    window_start = max(line_start, hit.start - SNIPPET_CONTEXT)
    window_end = min(line_end, max(hit.start, min(hit.end, line_end)) + SNIPPET_CONTEXT)
    parts: list[str] = []
    position = window_start
    for other in hits:  # sorted by start
        if other.end <= window_start or other.start >= window_end:
            continue
        if other.start > position:
            parts.append(text[position : other.start])
        if other.start >= position or other is hit:
            parts.append(mask_secret(other.secret) if other.start >= window_start else "****")
        position = max(position, other.end)
    if position < window_end:
        parts.append(text[position:window_end])
    snippet = "".join(parts).strip()
    prefix = "…" if window_start > line_start else ""
    suffix = "…" if window_end < line_end else ""
    return f"{prefix}{snippet}{suffix}"
