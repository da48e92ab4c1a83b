"""The secrets engine and its rules file: every rule has a true positive and a near miss.

The fixtures live in `tests/scans/secret_samples.py` (templates expanded at run time, so the
repository holds no real-looking secret); `test_every_rule_has_fixtures` fails when a rule is
added without them.
"""

from __future__ import annotations

import hashlib
import random

import pytest

from codepulse.scans.engine import SEVERITIES, RawFinding, fingerprints
from codepulse.scans.engine.base import mask_secret
from codepulse.scans.engine.secrets import (
    RulesetError,
    SecretsEngine,
    default_ruleset,
    parse_ruleset,
    shannon_entropy,
)
from tests.scans.secret_samples import SAMPLES, expand

RULE_IDS = [rule.id for rule in default_ruleset().rules]
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def engine() -> SecretsEngine:
    return SecretsEngine()


def _scan(engine: SecretsEngine, text: str, path: str = "app/settings.py") -> list[RawFinding]:
    return engine.scan(path, text.encode())


def _offset(text: str, line: int, column: int) -> int:
    lines = text.split("\n")
    return sum(len(item) + 1 for item in lines[: line - 1]) + column - 1


def _secret_of(text: str, finding: RawFinding) -> str:
    return text[
        _offset(text, finding.start_line, finding.start_column) : _offset(text, finding.end_line, finding.end_column)
    ]


def _gh(rng: random.Random | None = None) -> str:
    rng = rng or random.Random(7)
    return expand("ghp_{a:36}", rng)


# ---------------------------------------------------------------- the rules file


def test_ruleset_has_at_least_60_complete_rules() -> None:
    rules = default_ruleset().rules
    assert len(rules) >= 60
    for rule in rules:
        assert rule.title, rule.id
        assert rule.description, rule.id
        assert rule.help, rule.id
        assert rule.severity in SEVERITIES, rule.id
        assert (rule.cwe or "").startswith("CWE-"), rule.id
        assert rule.keywords, rule.id
        assert all(keyword == keyword.lower() for keyword in rule.keywords), rule.id


def test_ruleset_covers_the_required_providers() -> None:
    required = {
        "aws-access-key-id", "aws-secret-access-key", "github-pat", "github-fine-grained-pat", "github-app-token",
        "github-oauth-token", "github-refresh-token", "gitlab-pat", "gitlab-runner-token", "gitlab-deploy-token",
        "slack-bot-token", "slack-user-token", "slack-app-token", "slack-webhook-url", "stripe-secret-key",
        "stripe-restricted-key", "google-api-key", "gcp-service-account-private-key", "azure-storage-account-key",
        "azure-storage-connection-string", "twilio-api-key", "sendgrid-api-key", "mailgun-private-api-key",
        "npm-access-token", "pypi-upload-token", "openai-api-key", "anthropic-api-key", "huggingface-access-token",
        "shopify-access-token", "square-access-token", "paypal-braintree-access-token", "digitalocean-pat",
        "heroku-api-key", "datadog-api-key", "doppler-token", "databricks-token", "discord-bot-token",
        "telegram-bot-token", "atlassian-api-token", "linear-api-key", "postman-api-token", "private-key-rsa",
        "private-key-ec", "private-key-openssh", "private-key-pgp", "private-key-dsa", "jwt",
        "postgres-url-password", "mysql-url-password", "mongodb-url-password", "redis-url-password",
        "amqp-url-password", "generic-password", "generic-secret", "generic-token", "generic-api-key",
    }  # fmt: skip
    assert required <= set(RULE_IDS)


def test_every_rule_has_fixtures() -> None:
    assert sorted(set(RULE_IDS) - set(SAMPLES)) == [], "rules without a positive/negative sample"
    assert sorted(set(SAMPLES) - set(RULE_IDS)) == [], "samples for rules that do not exist"


def test_version_carries_the_ruleset_hash(engine: SecretsEngine) -> None:
    data = b"[[rules]]\nid = \"x\"\nkeywords = [\"abc_\"]\nregex = '''abc_[0-9]{8}'''\n"
    one = SecretsEngine(parse_ruleset(data))
    other = SecretsEngine(parse_ruleset(data.replace(b"{8}", b"{9}")))
    assert one.version != other.version
    assert one.version.endswith(hashlib.sha256(data).hexdigest()[:16])
    assert engine.version != one.version


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            '[[rules]]\nid = "a"\nkeywords = ["a"]\nregex = "a"\n[[rules]]\nid = "a"\nkeywords = ["a"]\nregex = "a"\n',
            "duplicate",
        ),
        ('[[rules]]\nid = "a"\nseverity = "urgent"\nkeywords = ["a"]\nregex = "a"\n', "severity"),
        ('[[rules]]\nid = "a"\nkeywords = []\nregex = "a"\n', "keyword"),
        ('[[rules]]\nid = "a"\nkeywords = ["a"]\nregex = "a("\n', "bad regex"),
        ('[[rules]]\nid = "a"\nkeywords = ["a"]\nregex = "(a)"\nsecret_group = 2\n', "secret_group"),
        ('[[rules]]\nid = "a"\nkeywords = ["a"]\nlowercase = true\nregex = "Abc"\n', "lower case"),
        ('[[rules]]\nid = "Bad Id"\nkeywords = ["a"]\nregex = "a"\n', "kebab"),
    ],
)
def test_invalid_rulesets_are_refused(toml: str, message: str) -> None:
    with pytest.raises(RulesetError, match=message):
        parse_ruleset(toml.encode())


# ---------------------------------------------------------------- every rule: positive and near miss


@pytest.mark.parametrize("rule_id", RULE_IDS)
def test_true_positive(engine: SecretsEngine, rule_id: str) -> None:
    for seed in SEEDS:
        text = "import os\n\n" + expand(SAMPLES[rule_id].positive, random.Random(f"{rule_id}/{seed}")) + "\n"
        findings = _scan(engine, text)
        assert [finding.rule_id for finding in findings] == [rule_id], text
        finding = findings[0]
        secret = _secret_of(text, finding)
        assert len(secret) >= 8, secret
        assert finding.start_line == 3
        assert finding.engine == "secrets"
        assert finding.fingerprint_basis == hashlib.sha256(secret.encode()).hexdigest()
        # Masked: at most the first 4 characters survive, nowhere a longer piece of the secret.
        for shown in (finding.snippet, finding.message.removeprefix(finding.title)):
            assert secret[:5] not in shown
            assert not any(secret[i : i + 6] in shown for i in range(len(secret) - 5)), shown


@pytest.mark.parametrize("rule_id", RULE_IDS)
def test_near_miss_negative(engine: SecretsEngine, rule_id: str) -> None:
    for seed in SEEDS:
        text = "import os\n\n" + expand(SAMPLES[rule_id].negative, random.Random(f"{rule_id}/{seed}")) + "\n"
        assert _scan(engine, text) == [], text


# ---------------------------------------------------------------- locations, masking


def test_line_and_columns_are_one_based_and_end_exclusive(engine: SecretsEngine) -> None:
    token = _gh()
    text = f"x = 1\ny = 2\n    GH = '{token}'  # used by CI\n"
    [finding] = _scan(engine, text)
    assert (finding.start_line, finding.end_line) == (3, 3)
    assert finding.start_column == len("    GH = '") + 1
    assert finding.end_column == finding.start_column + len(token)
    assert finding.snippet == f"GH = '{token[:4]}{'*' * 12}'  # used by CI"
    assert finding.message == f"GitHub personal access token (classic) found: {token[:4]}{'*' * 12}"
    assert finding.cwe == "CWE-798"
    assert finding.severity == "critical"


def test_multi_line_private_key_starts_on_its_begin_line(engine: SecretsEngine) -> None:
    block = expand(SAMPLES["private-key-openssh"].positive, random.Random(3))
    text = 'KEY = """\n' + block + '\n"""\n'
    [finding] = _scan(engine, text)
    assert finding.rule_id == "private-key-openssh"
    assert (finding.start_line, finding.end_line) == (2, 2 + block.count("\n"))
    assert finding.snippet.startswith("----*")
    assert "OPENSSH" not in finding.snippet


def test_every_secret_on_a_line_is_masked_in_each_snippet(engine: SecretsEngine) -> None:
    rng = random.Random(11)
    first, second = _gh(rng), expand("glpat-{w:20}", rng)
    findings = _scan(engine, f'tokens = ["{first}", "{second}"]\n')
    assert [finding.rule_id for finding in findings] == ["github-pat", "gitlab-pat"]
    for finding in findings:
        assert first[:6] not in finding.snippet
        assert second[:7] not in finding.snippet


def test_long_lines_are_cut_around_the_secret(engine: SecretsEngine) -> None:
    token = _gh()
    text = "x = [" + "1, " * 500 + f"'{token}'" + ", 2" * 500 + "]\n"
    [finding] = _scan(engine, text)
    assert len(finding.snippet) < 200
    assert finding.snippet.startswith("…")
    assert finding.snippet.endswith("…")


@pytest.mark.parametrize(
    ("secret", "masked"), [("abcdefghijklmnop", "abcd" + "*" * 12), ("abcdefgh", "ab******"), ("abc", "***")]
)
def test_mask_secret(secret: str, masked: str) -> None:
    assert mask_secret(secret) == masked


def test_undecodable_and_non_ascii_content(engine: SecretsEngine) -> None:
    token = _gh()
    latin1 = f"# caf\xe9\ntoken_value = '{token}'\n".encode("latin-1")
    [finding] = engine.scan("a.py", latin1)
    assert finding.rule_id == "github-pat"
    assert finding.start_line == 2
    # "İ".lower() is two characters: lower-case rules fall back to the case-insensitive regex.
    password = expand("{a:16}", random.Random(5))
    text = f'İİİ = 1; db_password = "{password}"\n'
    [finding] = _scan(engine, text)
    assert finding.rule_id == "generic-password"
    assert _secret_of(text, finding) == password


def test_empty_and_binary_content(engine: SecretsEngine) -> None:
    assert engine.scan("a.bin", b"") == []
    assert engine.scan("a.bin", bytes(range(256)) * 10) == []


# ---------------------------------------------------------------- suppressions, entropy, allow-lists


@pytest.mark.parametrize(
    "marker", ["# codepulse:ignore", "// gitleaks:allow", "# pragma: allowlist secret", "# CodePulse:Ignore"]
)
def test_inline_suppressions(engine: SecretsEngine, marker: str) -> None:
    token = _gh()
    assert _scan(engine, f'gh = "{token}"  {marker}\n') == []
    # Only the marked line is suppressed.
    assert [f.start_line for f in _scan(engine, f'{marker}\ngh = "{token}"\n')] == [2]


def test_entropy_threshold(engine: SecretsEngine) -> None:
    assert shannon_entropy("") == 0.0
    assert shannon_entropy("aaaa") == 0.0
    assert shannon_entropy("abab") == 1.0
    assert _scan(engine, 'db_password = "aaaaaaaabbbbbbbb"\n') == []  # entropy 1.0
    assert _scan(engine, 'db_password = "Tr0ub4dor&3xyzQ!"\n')[0].rule_id == "generic-password"
    # A 40-hex value is below the AWS secret key's threshold (4.2 bits/char).
    hex40 = expand("{h:40}", random.Random(1))
    assert shannon_entropy(hex40) < 4.2
    assert [f.rule_id for f in _scan(engine, f'aws_secret_access_key = "{hex40}"\n')] != ["aws-secret-access-key"]


def test_rule_allowlist_regex(engine: SecretsEngine) -> None:
    assert _scan(engine, 'aws_access_key_id = "AKIAIOSFODNN7EXAMPLE"\n') == []


@pytest.mark.parametrize(
    "value",
    [
        "${CLIENT_SECRET}",
        "$CLIENT_SECRET",
        "{{ client_secret }}",
        "<client-secret-here>",
        "%(client_secret)s",
        "************",
    ],
)
def test_global_allowlist_placeholders(engine: SecretsEngine, value: str) -> None:
    assert _scan(engine, f'client_secret = "{value}"\n') == []


def test_stopwords(engine: SecretsEngine) -> None:
    noisy = expand("{a:20}", random.Random(2))
    assert _scan(engine, f'client_secret = "example{noisy}"\n') == []  # global stopword
    assert _scan(engine, 'url = "postgresql://app:postgres@db.internal:5432/app"\n') == []  # rule stopword
    assert (
        _scan(engine, f'url = "postgresql://app:{noisy}@db.internal:5432/app"\n')[0].rule_id == "postgres-url-password"
    )


def test_allowlisted_paths() -> None:
    data = b"""
[allowlist]
paths = ['''(?:^|/)fixtures/''']

[[rules]]
id = "abc-token"
title = "ABC token"
keywords = ["abc_"]
regex = '''abc_[0-9a-f]{16}'''
allowlist.paths = ['''\\.md$''']
"""
    engine = SecretsEngine(parse_ruleset(data))
    content = b"key = abc_0123456789abcdef\n"
    assert [f.rule_id for f in engine.scan("src/app.py", content)] == ["abc-token"]
    assert engine.scan("tests/fixtures/app.py", content) == []
    assert engine.scan("docs/README.md", content) == []


def test_look_alike_noise_yields_nothing(engine: SecretsEngine) -> None:
    rng = random.Random(9)
    noise = [
        f'checksum = "{expand("{h:40}", rng)}"',
        f'commit_sha = "{expand("{h:40}", rng)}"',
        f'"integrity": "sha512-{expand("{b:86}", rng)}=="',
        f'"integrity": "sha1-{expand("{b:27}", rng)}="',
        f'request_id = "{expand("{uuid}", rng)}"',
        f'session_token_uuid = "{expand("{uuid}", rng)}"',
        'password = "changeme"',
        'PASSWORD = "password123"',
        'api_token = "${SECRET}"',
        'token: "${{ secrets.GITHUB_TOKEN }}"',
        'api_key = "<your-api-key>"',
        'secret_key = os.environ["SECRET_KEY"]',
        "password = get_password(user)",
        'password_field = "password_confirmation"',
        'token_url = "https://oauth2.googleapis.com/token"',
        'DATABASE_URL = "postgresql://postgres:postgres@localhost:5432/app"',
        'REDIS_URL = "redis://localhost:6379/0"',
        "# The password and the API token are read from the environment, never hard-coded.",
        f"ssh-rsa {expand('{b:200}', rng)} user@example.com",
        "-----BEGIN PUBLIC KEY-----",
        'aws_access_key_id = "AKIAIOSFODNN7EXAMPLE"',
        f'etag = "W/{expand("{h:32}", rng)}"',
        "secret_name: {{ .Values.secretName }}",
        "export const TOKEN_HEADER = 'Authorization';",
        "ident_pattern_token = f'([{ident_start}][{ident_continue}]*)'",
        "r += f\", secret='{base64.b64encode(self.secret).decode()}'\"",
        'client_secret = "prefix-${CLIENT_SECRET_SUFFIX}-x"',
    ]
    assert _scan(engine, "\n".join(noise) + "\n", path="config/app.yaml") == []


# ---------------------------------------------------------------- fingerprints


def test_fingerprints_are_stable_when_lines_move(engine: SecretsEngine) -> None:
    rng = random.Random(4)
    token, other = _gh(rng), expand("npm_{a:36}", rng)
    body = f'a = "{token}"\nb = "{other}"\nc = "{token}"\n'
    before = _scan(engine, body)
    after = _scan(engine, "# a comment\n\n\nimport os\n" + body.replace("\nb =", "\n\n\nb ="))
    assert [f.start_line for f in before] != [f.start_line for f in after]
    assert fingerprints("app/x.py", before) == fingerprints("app/x.py", after)
    prints = fingerprints("app/x.py", before)
    assert len(set(prints)) == 3  # the two equal secrets differ by occurrence index
    assert fingerprints("app/y.py", before) != prints  # the path is part of it
    assert fingerprints("app/x.py", list(reversed(before))) == list(reversed(prints))  # order-independent
