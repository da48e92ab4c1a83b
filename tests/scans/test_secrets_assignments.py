"""The generic assignment rules (issue 17): a secret-named variable assigned a high-entropy value,
in every assignment style, and the near misses they must leave alone.

Every secret is generated at run time (`expand`), so the repository holds no real-looking value.
In the templates `@@` stands for the generated secret.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from codepulse.scans.engine.secrets import RulesetError, SecretsEngine, default_ruleset, parse_ruleset
from tests.scans.secret_samples import expand

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def engine() -> SecretsEngine:
    return SecretsEngine()


def _offset(text: str, line: int, column: int) -> int:
    lines = text.split("\n")
    return sum(len(item) + 1 for item in lines[: line - 1]) + column - 1


def _reported(engine: SecretsEngine, text: str, path: str) -> list[tuple[str, int, int]]:
    """(rule id, start offset, end offset) of every finding."""
    return [
        (
            finding.rule_id,
            _offset(text, finding.start_line, finding.start_column),
            _offset(text, finding.end_line, finding.end_column),
        )
        for finding in engine.scan(path, text.encode())
    ]


def _secret(seed: int | str, n: int = 24) -> str:
    return expand(f"{{a:{n}}}", random.Random(seed))


# ---------------------------------------------------------------- true positives, one per style

POSITIVES = [
    # (style, path, template, rule id)
    ("ini-unquoted", "config/app.ini", "[database]\nhost = db.internal\npassword = @@\n", "generic-password"),
    ("yaml-unquoted", "deploy/values.yaml", "service:\n  name: billing\n  api_key: @@\n", "generic-api-key"),
    ("dotenv", ".env", "DEBUG=1\nAPI_KEY=@@\n", "generic-api-key"),
    ("dotenv-export", "scripts/env.sh", "export TOKEN=@@\n", "generic-token"),
    (
        "json-escaped-newline",
        "config/app.json",
        '{"config": "user=app\\npassword=@@\\nport=5432"}\n',
        "generic-password",
    ),
    ("go-typed-var", "cmd/main.go", 'var apiKey string = "@@"\n', "generic-api-key"),
    ("go-backticks", "cmd/main.go", "func main() {\n\ttoken := `@@`\n}\n", "generic-token"),
    ("makefile-conditional", "Makefile", "DEPLOY_TOKEN ?= @@\n", "generic-token"),
    ("makefile-double-colon", "Makefile", "SECRET_KEY ::= @@\n", "generic-secret"),
    ("makefile-triple-colon", "Makefile", "DB_PASSWORD :::= @@\n", "generic-password"),
    ("php-append", "src/db.php", '<?php\n$password .= "@@";\n', "generic-password"),
    ("java-set-property", "src/App.java", 'System.setProperty("db.password", "@@");\n', "generic-set-property"),
    (
        "xml-multi-line",
        "conf/settings.xml",
        "<server>\n  <password>\n     @@\n  </password>\n</server>\n",
        "generic-password",
    ),
    # Styles that already worked.
    ("quoted-equals", "app/settings.py", 'db_password = "@@"\n', "generic-password"),
    ("quoted-colon", "deploy/values.yaml", "client_secret: '@@'\n", "generic-secret"),
    ("walrus", "cmd/main.go", 'secret := "@@"\n', "generic-secret"),
    ("fat-arrow", "config/app.php", "'auth_token' => '@@',\n", "generic-token"),
    ("json", "config/app.json", '{"apiKey": "@@"}\n', "generic-api-key"),
    ("python-kwarg", "app/db.py", 'connect(host="db", password="@@")\n', "generic-password"),
    ("python-annotated", "app/settings.py", 'password: str = "@@"\n', "generic-password"),
    ("typescript-annotated", "src/config.ts", "private readonly apiKey: string = '@@';\n", "generic-api-key"),
    # The other secret-named families.
    ("access-key", "config/storage.py", 'storage_access_key = "@@"\n', "generic-access-key"),
    ("private-key", "config/wallet.yaml", "private_key: @@\n", "generic-private-key"),
    ("credentials", "config/app.toml", 'credentials = "@@"\n', "generic-credentials"),
    ("npmrc-auth", ".npmrc", "//registry.internal/:_auth=@@\n", "generic-auth"),
]


@pytest.mark.parametrize(("style", "path", "template", "rule_id"), POSITIVES, ids=[p[0] for p in POSITIVES])
def test_every_assignment_style_is_found(
    engine: SecretsEngine, style: str, path: str, template: str, rule_id: str
) -> None:
    for seed in SEEDS:
        secret = _secret(f"{style}/{seed}")
        text = template.replace("@@", secret)
        start = text.index(secret)
        assert _reported(engine, text, path) == [(rule_id, start, start + len(secret))], text


def test_generic_findings_are_low_confidence(engine: SecretsEngine) -> None:
    secret = _secret("low")
    [finding] = engine.scan(".env", f"API_KEY={secret}\n".encode())
    assert (finding.rule_id, finding.confidence, finding.severity) == ("generic-api-key", "low", "medium")
    assert secret[4:10] not in finding.snippet


def test_a_base64_value_with_padding_is_taken_whole(engine: SecretsEngine) -> None:
    secret = _secret("padded", 30) + "=="
    text = f"[auth]\ntoken = {secret}\n"
    start = text.index(secret)
    assert _reported(engine, text, "app.ini") == [("generic-token", start, start + len(secret))]


def test_several_assignments_in_one_env_file(engine: SecretsEngine) -> None:
    password, token = _secret("pw", 16), _secret("tok", 32)
    text = f"DB_USER=app\nDB_PASSWORD={password}\n# comment\nexport GITLAB_TOKEN={token}\n"
    assert [rule for rule, _start, _end in _reported(engine, text, ".env")] == ["generic-password", "generic-token"]


def test_a_provider_rule_wins_over_the_generic_one(engine: SecretsEngine) -> None:
    token = expand("ghp_{a:36}", random.Random(3))
    assert [rule for rule, _s, _e in _reported(engine, f"GITHUB_TOKEN={token}\n", ".env")] == ["github-pat"]


# ---------------------------------------------------------------- near misses, per style


def _argon2(rng: random.Random) -> str:
    return expand("$argon2id$v=19$m=65536,t=3,p=4${b:22}${b:43}", rng)


def _bcrypt(rng: random.Random) -> str:
    return expand("$2b$12${b:53}", rng).replace("+", ".")


def _pbkdf2(rng: random.Random) -> str:
    return expand("pbkdf2_sha256$600000${a:22}${b:43}=", rng)


NEAR_MISSES = [
    # (style, path, line: a placeholder, a hash, an identifier, or a too-short/low-entropy value)
    ("ini-placeholder", "app.ini", "[db]\npassword = changeme\n"),
    ("ini-interpolation", "app.ini", "[db]\npassword = ${DB_PASSWORD}\n"),
    ("ini-too-short", "app.ini", "[db]\npassword = k3yZ9\n"),
    ("ini-low-entropy", "app.ini", "[db]\npassword = aaaaaaaabbbbbbbb1\n"),
    ("yaml-angle-placeholder", "values.yaml", "api_key: <your-key>\n"),
    ("yaml-null", "values.yaml", "api_key: null\npassword: None\ntoken: true\nsecret: false\n"),
    ("yaml-variable", "values.yaml", "api_key: $API_KEY\n"),
    ("yaml-nested-mapping", "values.yaml", "credentials:\n  username: app2024user\n"),
    ("dotenv-your-key", ".env", "API_KEY=your_api_key_here\n"),
    ("dotenv-xxxx", ".env", "API_KEY=xxxxxxxxxxxxxxxxxxxxxxxx\n"),
    ("dotenv-example", ".env", "API_KEY=EXAMPLE1234abcdEFGH5678\n"),
    ("dotenv-command", ".env", "export TOKEN=$(cat /run/secrets/token)\n"),
    ("dotenv-windows-variable", "deploy.bat", "set SECRET_KEY=%SECRET_KEY%\n"),
    ("json-escaped-placeholder", "app.json", '{"config": "user=app\\npassword=${DB_PASSWORD}\\n"}\n'),
    ("go-getenv", "main.go", 'var apiKey string = os.Getenv("API_KEY")\n'),
    ("go-backtick-xxxx", "main.go", "token := `xxxxxxxxxxxxxxxxxxxx`\n"),
    ("go-function-call", "main.go", "token := auth.NewToken(ctx, user2)\n"),
    ("makefile-shell", "Makefile", "DEPLOY_TOKEN ?= $(shell cat token2.txt)\n"),
    ("makefile-variable", "Makefile", "SECRET_KEY ::= $(SECRET_KEY)\nDB_PASSWORD :::= ${CI_DB_PASSWORD}\n"),
    ("php-append-variable", "db.php", "$password .= $salt2024;\n"),
    ("java-getenv", "App.java", 'System.setProperty("db.password", System.getenv("DB_PASSWORD"));\n'),
    ("java-empty", "App.java", 'System.setProperty("db.password", "");\n'),
    ("xml-property", "settings.xml", "<password>\n   ${db.password}\n</password>\n"),
    ("xml-placeholder", "settings.xml", "<password>changeme</password>\n"),
    ("python-environ", "settings.py", 'SECRET_KEY = os.environ["SECRET_KEY"]\n'),
    ("python-getenv-default", "settings.py", 'password = os.getenv("DB_PASSWORD", "")\n'),
    ("python-call", "settings.py", "password = get_password(user2)\n"),
    ("python-attribute", "settings.py", "api_key = settings.API_KEY_V2\n"),
    ("js-process-env", "config.js", "const token = process.env.API_TOKEN2;\n"),
    ("access-key-id", "storage.py", 'access_key_id = "AKIA0123456789ABCDEF"\n'),
    ("private-key-path", "wallet.py", 'private_key_path = "~/.ssh/id_ed25519"\n'),
    ("credentials-file", "app.py", 'credentials_file = "service-account-2.json"\n'),
    ("auth-author", "setup.cfg", "author = Jane2024Doe\n"),
    ("python-signature", "keys.py", "def sign(private_key: PKCS7PrivateKeyTypes2, data: bytes) -> bytes:\n"),
    ("python-annotation-default", "keys.py", "    token: TokenStore2 = None\n"),
    ("string-list", "__init__.py", '__all__ = ["IntrospectionToken", "Intr0spectionTokenValidator2"]\n'),
    ("yaml-no-blank-after-colon", "app.yaml", "scheme: urn:ietf:params:oauth:jwk-thumbprint:sha-256\n"),
    ("camel-case-words", "oid.py", 'PRIVATE_KEY_USAGE_PERIOD: "privateKeyUsagePeriod",\n'),
    ("upper-words", "retry.py", 'INVALID_CREDENTIAL = "SCHEMA-INVALID-VALUE"\n'),
]


@pytest.mark.parametrize(("style", "path", "text"), NEAR_MISSES, ids=[n[0] for n in NEAR_MISSES])
def test_near_misses_are_not_reported(engine: SecretsEngine, style: str, path: str, text: str) -> None:
    assert _reported(engine, text, path) == [], style


@pytest.mark.parametrize("make_hash", [_argon2, _bcrypt, _pbkdf2], ids=["argon2id", "bcrypt", "pbkdf2"])
@pytest.mark.parametrize(
    "template", ['password = "@@"\n', "password: @@\n", "PASSWORD_HASH=@@\n", "<password>@@</password>\n"]
)
def test_password_hashes_are_not_reported(
    engine: SecretsEngine, make_hash: Callable[[random.Random], str], template: str
) -> None:
    for seed in SEEDS:
        value = make_hash(random.Random(seed))
        assert _reported(engine, template.replace("@@", value), "users.yaml") == [], value


@pytest.mark.parametrize(
    "value",
    [
        "{uuid}",  # a UUID
        "{h:40}",  # a git commit SHA
        "sha512-{b:86}==",  # an integrity string
        "https://{x:12}.internal/{a:20}",  # a URL (the URL rules judge a password in it)
    ],
)
@pytest.mark.parametrize("template", ['session_token = "@@"\n', "api_key: @@\n", "SECRET=@@\n"])
def test_public_identifiers_are_not_reported(engine: SecretsEngine, value: str, template: str) -> None:
    for seed in SEEDS:
        text = template.replace("@@", expand(value, random.Random(seed)))
        assert _reported(engine, text, "app.yaml") == [], text


def test_unquoted_values_need_a_digit(engine: SecretsEngine) -> None:
    # An unquoted run of letters is an identifier or a word, not a secret; quoted, it is judged by entropy.
    letters = expand("{l:24}", random.Random(8))
    assert _reported(engine, f"api_key: {letters}\n", "values.yaml") == []
    text = f'api_key: "{letters}"\n'
    start = text.index(letters)
    assert _reported(engine, text, "values.yaml") == [("generic-api-key", start, start + len(letters))]


# ---------------------------------------------------------------- the rules file


def test_generic_rules_are_last_and_low() -> None:
    rules = default_ruleset().rules
    generic = [index for index, rule in enumerate(rules) if rule.id.startswith("generic-")]
    assert generic == list(range(len(rules) - len(generic), len(rules)))
    assert {rules[index].confidence for index in generic} == {"low"}
    for index in generic:
        assert rules[index].regex.pattern[0].isalpha(), rules[index].id  # starts with a literal


def test_secret_group_may_list_one_group_per_branch() -> None:
    data = b"""[[rules]]
id = "abc"
keywords = ["abc"]
regex = '''abc=(?:"(?P<quoted>[0-9]{4})"|(?P<bare>[0-9]{4}))'''
secret_group = ["quoted", "bare"]
"""
    engine = SecretsEngine(parse_ruleset(data))
    assert [(f.start_column, f.end_column) for f in engine.scan("a", b'abc="1234"\nabc=5678\n')] == [(6, 10), (5, 9)]
    with pytest.raises(RulesetError, match="secret_group"):
        parse_ruleset(data.replace(b'"bare"]', b'"other"]'))
    with pytest.raises(RulesetError, match="secret_group"):
        parse_ruleset(data.replace(b'["quoted", "bare"]', b"[]"))
