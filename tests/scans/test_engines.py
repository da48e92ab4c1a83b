"""The engine registry, `scan_file` (the process-pool entry point) and the python (bandit) engine."""

from __future__ import annotations

import pickle
import random
import subprocess
import sys
import textwrap
from concurrent.futures import ProcessPoolExecutor

import pytest

from codepulse.scans.engine import SEVERITIES, Engine, RawFinding, available_engines, fingerprints, scan_file
from codepulse.scans.engine.python import (
    PythonEngine,
    bandit_version,
    hashed_password_result,
    is_password_hash,
    map_confidence,
    map_severity,
)
from tests.scans.secret_samples import expand

GH_TOKEN = expand("ghp_{a:36}", random.Random(1))  # synthetic, assembled at run time


def _python(code: str) -> list[RawFinding]:
    return scan_file(("python",), "app/module.py", textwrap.dedent(code).encode())["python"]


def test_importing_the_engine_package_loads_neither_bandit_nor_the_rules() -> None:
    code = (
        "import sys, codepulse.scans.engine as e; "
        "assert 'bandit' not in sys.modules and 'ahocorasick' not in sys.modules, sorted(sys.modules); "
        "e.available_engines(); assert 'bandit' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=60)


def test_available_engines_are_cached_and_follow_the_protocol() -> None:
    engines = available_engines()
    assert set(engines) == {"secrets", "python"}
    assert available_engines() is engines
    for name, engine in engines.items():
        assert isinstance(engine, Engine)
        assert engine.name == name
        assert engine.version
        rules = engine.rules()
        assert len({rule.id for rule in rules}) == len(rules)
        assert all(rule.engine == name and rule.severity in SEVERITIES for rule in rules)
    assert engines["python"].version == f"bandit-{bandit_version()}+2"
    assert "bandit.B602" in {rule.id for rule in engines["python"].rules()}
    assert len(engines["secrets"].rules()) >= 60


def test_scan_file_runs_the_engines_that_want_the_path() -> None:
    content = f'import subprocess\nTOKEN = "{GH_TOKEN}"\nsubprocess.call(cmd, shell=True)\n'.encode()
    results = scan_file(("secrets", "python"), "src/app.py", content)
    assert set(results) == {"secrets", "python"}
    assert [f.rule_id for f in results["secrets"]] == ["github-pat"]
    assert "bandit.B602" in {f.rule_id for f in results["python"]}
    assert set(scan_file(("secrets", "python"), "web/app.js", content)) == {"secrets"}
    with pytest.raises(KeyError):
        scan_file(("semgrep",), "src/app.py", content)


def test_scan_file_through_a_process_pool() -> None:
    content = f'TOKEN = "{GH_TOKEN}"\n'.encode()
    with ProcessPoolExecutor(max_workers=1) as pool:
        result = pool.submit(scan_file, ("secrets",), "a.py", content).result(timeout=60)
    assert result == scan_file(("secrets",), "a.py", content)
    assert pickle.loads(pickle.dumps(result))  # noqa: S301 - our own data == result


@pytest.mark.parametrize(
    ("severity", "confidence", "expected"),
    [
        ("HIGH", "HIGH", "high"),
        ("HIGH", "MEDIUM", "high"),
        ("HIGH", "LOW", "medium"),
        ("MEDIUM", "HIGH", "medium"),
        ("MEDIUM", "LOW", "low"),
        ("LOW", "HIGH", "low"),
        ("LOW", "LOW", "info"),
        ("UNDEFINED", "HIGH", "info"),
    ],
)
def test_bandit_severity_mapping(severity: str, confidence: str, expected: str) -> None:
    assert map_severity(severity, confidence) == expected


def test_bandit_results_are_mapped_onto_findings() -> None:
    findings = _python(
        """\
        import subprocess


        def run(cmd):
            return subprocess.Popen(cmd, shell=True)
        """
    )
    by_rule = {f.rule_id: f for f in findings}
    assert set(by_rule) == {"bandit.B404", "bandit.B602"}
    shell = by_rule["bandit.B602"]
    assert shell.engine == "python"
    assert shell.severity == "high"  # bandit HIGH severity, HIGH confidence
    assert shell.cwe == "CWE-78"
    assert (shell.start_line, shell.end_line) == (5, 5)
    assert shell.start_column == len("    return ") + 1
    assert shell.end_column == len("    return subprocess.Popen(cmd, shell=True)") + 1
    assert shell.snippet == "    return subprocess.Popen(cmd, shell=True)"
    assert "shell=True" in shell.message
    assert by_rule["bandit.B404"].title == "import subprocess"
    assert by_rule["bandit.B404"].severity == "low"


def test_columns_are_characters_not_bytes() -> None:
    [finding] = _python('x = "héllo" + str(eval(data))\n')
    assert finding.rule_id == "bandit.B307"
    assert finding.start_column == len('x = "héllo" + str(') + 1
    assert finding.end_column == len('x = "héllo" + str(eval(data)') + 1


def test_nosec_is_honoured() -> None:
    code = """\
    import subprocess  # nosec
    subprocess.Popen(cmd, shell=True)  # nosec
    subprocess.Popen(cmd, shell=True)  # nosec B404
    subprocess.Popen(cmd, shell=True)
    """
    assert [(f.rule_id, f.start_line) for f in _python(code)] == [("bandit.B602", 3), ("bandit.B602", 4)]


def test_hard_coded_password_is_masked_in_the_snippet() -> None:
    password = "Xq7Z" + "kLm9" * 3
    [finding] = _python(f'password = "{password}"\n')
    assert finding.rule_id == "bandit.B105"
    assert finding.cwe == "CWE-259"
    assert password not in finding.snippet
    assert password not in finding.message
    assert password[:4] in finding.snippet


def test_unparsable_or_empty_python_yields_nothing() -> None:
    assert _python("def broken(:\n    pass\n") == []
    assert _python("") == []
    assert PythonEngine().wants("pkg/mod.py")
    assert not PythonEngine().wants("pkg/mod.pyc")


def test_python_fingerprints_are_stable_when_lines_move() -> None:
    body = "import subprocess\nsubprocess.Popen(cmd, shell=True)\nsubprocess.Popen(cmd, shell=True)\n"
    before = _python(body)
    after = _python("'''Module docstring.'''\n\n\n" + body)
    assert [f.start_line + 3 for f in before] == [f.start_line for f in after]
    assert fingerprints("m.py", before) == fingerprints("m.py", after)
    assert len(set(fingerprints("m.py", before))) == len(before)


# --- confidence, and password hashes that are not passwords ------------------------------------

ARGON2 = "$argon2id$v=19$m=65536,t=3,p=4$lks4mUD7mZArpvvwdtd7aQ$o0YrEjG/Q/apUAU5FPWiZCtYA3wohc9G0Yxu+3pmieo"
BCRYPT = "$2b$12$EixZaYVK1fsbw1ZfbX3OXePaWxn96p36WQoeG6Lruj3vjPGga31lW"
PASSWORD_HASHES = [
    ARGON2,
    ARGON2.replace("$argon2id$", "$argon2i$"),
    BCRYPT,
    BCRYPT.replace("$2b$", "$2a$"),
    "$pbkdf2-sha256$29000$N2YMIWQsBWBMae09x1jrPQ$1t8iyB2A.WF/Z5JZv.lfCIhXXN33N23OSgQYThBYRfk",
    "pbkdf2_sha256$600000$c2FsdHNhbHQ$Fh2Y4mX5k0bN0zB+XyJ2rVqkQ9q6QdWcBzq1cE8J3aQ=",
    "pbkdf2:sha256:600000$kpvBOtLJ$3b6c3a3e2f1b2c6a9e1d0c5b4a39281706f5e4d3c2b1a0f9e8d7c6b5a4938271",
    "$6$rounds=5000$usesomesillystri$D4IrlXatmP7rx3P3InaxBeoomnAihCKRVQP22JZ6EY47Wc6BkroIuUUBOov1i.S5KPgErtP/EN5mcO.ChWQW21",
    "$6$saltsalt$" + "a" * 86,
    "scrypt:32768:8:1$fFsrI1a2b3c4d5e6$" + "0f" * 64,
]


@pytest.mark.parametrize("value", PASSWORD_HASHES)
def test_password_hashes_are_recognised(value: str) -> None:
    assert is_password_hash(value)


@pytest.mark.parametrize(
    "value", ["hunter2", "$2b$password", "$argon2id$secret", "$6$short", "scrypt:secret", "pbkdf2:sha256:1$a$zz"]
)
def test_passwords_are_not_hashes(value: str) -> None:
    assert not is_password_hash(value)


def test_only_hard_coded_password_results_are_judged_by_their_string() -> None:
    text = f"Possible hardcoded password: '{BCRYPT}'"
    assert hashed_password_result("B105", text)
    assert hashed_password_result("B107", text)
    assert not hashed_password_result("B602", text)
    assert not hashed_password_result("B105", "Possible hardcoded password: 'hunter2'")


def test_a_password_hash_literal_is_not_a_hard_coded_password() -> None:
    code = """\
    PASSWORD_HASH = "{0}"
    password = "{1}"
    login(user, password="{2}")


    def check(candidate, password="{3}"):
        return candidate
    """
    hashes = _python(code.format(ARGON2, BCRYPT, PASSWORD_HASHES[4], PASSWORD_HASHES[7]))
    assert hashes == []
    passwords = _python(code.format(*(f"Xq7ZkLm9kLm9{n}" for n in range(4))))
    assert [(f.rule_id, f.start_line) for f in passwords] == [
        ("bandit.B105", 1),
        ("bandit.B105", 2),
        ("bandit.B106", 3),
        ("bandit.B107", 6),
    ]


@pytest.mark.parametrize(("bandit", "ours"), [("HIGH", "high"), ("MEDIUM", "medium"), ("low", "low"), ("", "medium")])
def test_bandit_confidence_mapping(bandit: str, ours: str) -> None:
    assert map_confidence(bandit) == ours


def test_findings_carry_bandits_confidence() -> None:
    findings = _python(
        """\
        import subprocess
        import random

        subprocess.Popen(cmd, shell=True)
        assert user.is_admin
        token = random.random()
        query = "SELECT * FROM users WHERE id = '%s'" % uid
        """
    )
    confidence = {f.rule_id: f.confidence for f in findings}
    assert confidence["bandit.B602"] == "high"
    assert confidence["bandit.B101"] == "high"  # reported; the default profile hides it (ruleset)
    assert confidence["bandit.B311"] == "high"
    assert confidence["bandit.B608"] == "low"  # reported; the default profile hides it
    assert all(f.confidence in ("high", "medium", "low") for f in findings)
