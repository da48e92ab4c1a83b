"""Offline checksum and structure checks of the secrets engine (`verify` in secrets_rules.toml).

A finding whose embedded checksum verifies is `high` confidence, one whose checksum fails `low`,
a provider format without a checksum `medium`, a generic assignment `low`. Every token here is
built at run time from random or obviously fake parts, never committed whole.
"""

from __future__ import annotations

import base64
import json
import random
import string
import zlib

import pytest

from codepulse.scans.engine import RawFinding
from codepulse.scans.engine.base import CONFIDENCES
from codepulse.scans.engine.secrets import (
    ENGINE_VERSION,
    RulesetError,
    SecretsEngine,
    default_ruleset,
    parse_ruleset,
)
from codepulse.scans.engine.secrets_verify import (
    VERIFIERS,
    verify_base62_crc32,
    verify_bech32,
    verify_jwt,
    verify_pypi_macaroon,
)
from tests.scans.secret_samples import expand

_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


@pytest.fixture(scope="module")
def engine() -> SecretsEngine:
    return SecretsEngine()


def _only(engine: SecretsEngine, line: str) -> RawFinding:
    [finding] = engine.scan("app/settings.py", f"{line}\n".encode())
    return finding


def _flip(token: str) -> str:
    """The same token with its last character changed (a broken checksum)."""
    last = token[-1]
    return token[:-1] + ("A" if last != "A" else "B")


# ---------------------------------------------------------------- GitHub and npm: CRC32 in base62


def _base62_token(prefix: str, rng: random.Random) -> str:
    body = "".join(rng.choice(_BASE62) for _ in range(30))
    value, digits = zlib.crc32(body.encode()), ""
    while value:
        value, digit = divmod(value, 62)
        digits = _BASE62[digit] + digits
    return f"{prefix}_{body}{digits.rjust(6, '0')}"


def test_base62_crc32_known_answer() -> None:
    # The worked example of a GitHub-format token published with the format's description
    # (30 random characters, then their CRC32 as 6 base62 digits), assembled from pieces.
    token = "gh" + "p_" + "zQWBuTSOoRi4A9spHcVY5ncnsDkxkJ" + "0mLq17"
    assert verify_base62_crc32(token) is True
    assert verify_base62_crc32(_flip(token)) is False
    assert verify_base62_crc32("gh" + "r_" + "a1" * 38) is None  # a 76-character refresh token


@pytest.mark.parametrize(
    ("prefix", "rule_id"),
    [
        ("ghp", "github-pat"),
        ("gho", "github-oauth-token"),
        ("ghu", "github-app-token"),
        ("ghs", "github-app-token"),
        ("ghr", "github-refresh-token"),
        ("npm", "npm-access-token"),
    ],
)
def test_base62_crc32_tokens(engine: SecretsEngine, prefix: str, rule_id: str) -> None:
    for seed in range(5):
        token = _base62_token(prefix, random.Random(f"{prefix}/{seed}"))
        finding = _only(engine, f'token_value = "{token}"')
        assert (finding.rule_id, finding.confidence) == (rule_id, "high")
        broken = _only(engine, f'token_value = "{_flip(token)}"')
        assert (broken.rule_id, broken.confidence) == (rule_id, "low")


# ---------------------------------------------------------------- age: Bech32


def _bech32_polymod(values: list[int]) -> int:
    generator = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    check = 1
    for value in values:
        top = check >> 25
        check = (check & 0x1FFFFFF) << 5 ^ value
        for bit in range(5):
            check ^= generator[bit] if top >> bit & 1 else 0
    return check


def _age_key(rng: random.Random) -> str:
    hrp = "age-secret-key-"
    data = [rng.randrange(32) for _ in range(52)]  # 32 bytes in 5-bit groups (the last one padded)
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    polymod = _bech32_polymod(expanded + data + [0] * 6) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return (hrp + "1" + "".join(_BECH32[v] for v in data + checksum)).upper()


def test_age_secret_key_bech32(engine: SecretsEngine) -> None:
    key = _age_key(random.Random(1))
    assert verify_bech32(key) is True
    assert verify_bech32(_flip(key)) is False
    finding = _only(engine, key)
    assert (finding.rule_id, finding.confidence) == ("age-secret-key", "high")
    assert _only(engine, _flip(key)).confidence == "low"


# ---------------------------------------------------------------- PyPI: macaroon structure


def _field(kind: int, value: bytes) -> bytes:
    assert len(value) < 128  # one-byte varints keep the fixture simple
    return bytes([kind, len(value)]) + value


def _pypi_token(rng: random.Random, caveats: int = 1) -> str:
    identifier = json.dumps({"version": 1, "permissions": "user"}).encode()
    data = b"\x02" + _field(1, b"pypi.org") + _field(2, identifier[:100]) + b"\x00"
    for index in range(caveats):
        data += _field(2, json.dumps({"nbf": index}).encode()) + b"\x00"
    data += b"\x00" + _field(6, rng.randbytes(32))
    return "pypi-" + base64.urlsafe_b64encode(data).decode().rstrip("=")


def test_pypi_macaroon_structure(engine: SecretsEngine) -> None:
    rng = random.Random(2)
    token = _pypi_token(rng)
    assert verify_pypi_macaroon(token) is True
    assert verify_pypi_macaroon(_pypi_token(rng, caveats=3)) is True
    assert verify_pypi_macaroon(token[:-12]) is False  # truncated signature
    assert verify_pypi_macaroon("pypi-AgEIcHlwaS5vcmc" + expand("{w:70}", rng)) is False
    finding = _only(engine, f'password = "{token}"')
    assert (finding.rule_id, finding.confidence) == ("pypi-upload-token", "high")
    random_tail = _only(engine, f'pypi = "pypi-AgEIcHlwaS5vcmc{expand("{w:70}", rng)}"')
    assert (random_tail.rule_id, random_tail.confidence) == ("pypi-upload-token", "low")


# ---------------------------------------------------------------- JWT: JSON header and payload


def _b64url(value: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def _jwt(rng: random.Random) -> str:
    header = _b64url({"alg": "HS256", "typ": "JWT"})
    payload = _b64url({"sub": expand("{x:12}", rng), "iat": 1700000000})
    return f"{header}.{payload}.{expand('{w:43}', rng)}"


def test_jwt_structure(engine: SecretsEngine) -> None:
    rng = random.Random(3)
    token = _jwt(rng)
    assert verify_jwt(token) is True
    finding = _only(engine, f'auth = "{token}"')
    assert (finding.rule_id, finding.confidence) == ("jwt", "high")
    look_alike = expand('auth = "eyJ{w:20}.eyJ{w:40}.{w:43}"', rng)
    assert _only(engine, look_alike).confidence == "low"


# ---------------------------------------------------------------- rules without a checker, generic rules


def test_provider_format_without_checksum_is_medium(engine: SecretsEngine) -> None:
    finding = _only(engine, expand('sq = "sq0csp-{w:43}"', random.Random(4)))
    assert (finding.rule_id, finding.confidence) == ("square-oauth-secret", "medium")


def test_generic_rules_are_low(engine: SecretsEngine) -> None:
    finding = _only(engine, expand('db_password = "{a:16}"', random.Random(5)))
    assert (finding.rule_id, finding.confidence) == ("generic-password", "low")
    for rule in default_ruleset().rules:
        assert rule.confidence in CONFIDENCES, rule.id
        if rule.id.startswith("generic-"):
            assert rule.confidence == "low", rule.id


def test_every_verify_name_is_known_and_used() -> None:
    used = {rule.verify for rule in default_ruleset().rules if rule.verify is not None}
    assert used == set(VERIFIERS.values())


def test_engine_version_is_part_of_the_cache_key() -> None:
    assert SecretsEngine().version.startswith(f"{ENGINE_VERSION}+")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[[rules]]\nid = "a"\nkeywords = ["a"]\nregex = "a"\nverify = "luhn"\n', "unknown verify"),
        ('[[rules]]\nid = "a"\nkeywords = ["a"]\nregex = "a"\nconfidence = "sure"\n', "confidence"),
    ],
)
def test_invalid_verify_or_confidence_is_refused(toml: str, message: str) -> None:
    with pytest.raises(RulesetError, match=message):
        parse_ruleset(toml.encode())


def test_a_checker_error_never_breaks_a_scan() -> None:
    data = (
        b'[[rules]]\nid = "x"\nkeywords = ["pypi-"]\n'
        b"regex = '''pypi-[A-Za-z0-9_-]{8,}'''\nverify = \"pypi_macaroon\"\n"
    )
    engine = SecretsEngine(parse_ruleset(data))
    [finding] = engine.scan("a.py", b"pypi-" + b"A" * 9 + b"\n")  # not base64 of anything sensible
    assert finding.confidence == "low"


# ---------------------------------------------------------------- base64 JSON after a prefix


@pytest.mark.parametrize(
    ("prefix", "rule_id"),
    [("ops_", "onepassword-service-account-token"), ("glc_", "grafana-cloud-api-token"), ("", "grafana-api-key")],
)
def test_prefixed_base64_json(engine: SecretsEngine, prefix: str, rule_id: str) -> None:
    rng = random.Random(6)
    document = {"k": expand("{a:32}", rng), "n": "ci", "id": 1, "m": {"r": "prod-eu-west-0"}}
    document["padding"] = expand("{a:200}", rng)  # service-account tokens are long
    body = base64.b64encode(json.dumps(document, separators=(",", ":")).encode()).decode().rstrip("=")
    if prefix == "ops_":
        body = body.replace("+", "-").replace("/", "_")
    finding = _only(engine, f'token_value = "{prefix}{body}"')
    assert (finding.rule_id, finding.confidence) == (rule_id, "high")
    noise = _only(engine, f'token_value = "{prefix}{body[:8]}{expand("{a:300}", rng)}"')
    assert (noise.rule_id, noise.confidence) == (rule_id, "low")
