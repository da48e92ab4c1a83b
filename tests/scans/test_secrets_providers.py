"""Provider rules whose shapes need more than one positive/negative line (secret_samples.py has those).

Every value is generated at run time (`expand`), so the repository holds no real-looking secret.
"""

from __future__ import annotations

import base64
import json
import random

import pytest

from codepulse.scans.engine import RawFinding
from codepulse.scans.engine.secrets import SecretsEngine, default_ruleset
from tests.scans.secret_samples import expand


@pytest.fixture(scope="module")
def engine() -> SecretsEngine:
    return SecretsEngine()


def _scan(engine: SecretsEngine, template: str, seed: int = 0, path: str = "deploy/app.yaml") -> list[RawFinding]:
    return engine.scan(path, expand(template, random.Random(seed)).encode())


def _ids(findings: list[RawFinding]) -> list[str]:
    return [finding.rule_id for finding in findings]


def test_issue_17_provider_families_are_covered() -> None:
    required = {
        "adobe-client-secret", "adobe-client-id", "age-secret-key", "algolia-api-key", "hubspot-private-app-token",
        "hubspot-api-key", "kucoin-api-key", "kucoin-api-secret", "linkedin-client-secret", "linkedin-client-id",
        "notion-integration-token", "nuget-api-key", "nuget-config-password", "sidekiq-secret",
        "sidekiq-sensitive-url", "snyk-api-token", "sourcegraph-access-token", "squarespace-access-token",
        "microsoft-teams-webhook", "facebook-access-token", "facebook-app-secret", "curl-auth-user",
        "curl-auth-header", "perplexity-api-key", "kubernetes-secret-yaml", "jwt", "jwt-base64", "discord-bot-token",
    }  # fmt: skip
    assert required <= {rule.id for rule in default_ruleset().rules}


# ---------------------------------------------------------------- Kubernetes Secret manifests

_SECRET_KIND_FIRST = """apiVersion: v1
kind: Secret
metadata:
  name: db
type: Opaque
data:
  username: YWRtaW4=
  password: {b:24}
"""
_SECRET_DATA_FIRST = """apiVersion: v1
data:
  api-key: {b:32}
kind: Secret
metadata:
  name: api
"""


@pytest.mark.parametrize("manifest", [_SECRET_KIND_FIRST, _SECRET_DATA_FIRST])
def test_kubernetes_secret_yaml_either_key_order(engine: SecretsEngine, manifest: str) -> None:
    [finding] = _scan(engine, manifest)
    assert finding.rule_id == "kubernetes-secret-yaml"
    assert finding.start_line == manifest.count("\n", 0, manifest.index("{b:")) + 1


def test_kubernetes_secret_yaml_in_a_list_and_indented(engine: SecretsEngine) -> None:
    manifest = "items:\n- apiVersion: v1\n  kind: Secret\n  data:\n    token: {b:40}\n"
    assert _ids(_scan(engine, manifest)) == ["kubernetes-secret-yaml"]


def test_kubernetes_near_misses(engine: SecretsEngine) -> None:
    # A ConfigMap's data is plain text: not this rule (a random password in it is the generic rule's, low).
    config_map = _SECRET_KIND_FIRST.replace("kind: Secret", "kind: ConfigMap")
    assert _ids(_scan(engine, config_map)) == ["generic-password"]
    # A ConfigMap's data, then a Secret without data in the next document.
    other_document = config_map + "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: empty\n"
    assert _ids(_scan(engine, other_document)) == ["generic-password"]
    # metadata: is not data:
    assert _scan(engine, "kind: Secret\nmetadata:\n  name: {x:20}\n") == []
    # Placeholder values.
    assert _scan(engine, "kind: Secret\ndata:\n  password: ${{DB_PASSWORD_B64}}\n") == []


# ---------------------------------------------------------------- curl command lines


@pytest.mark.parametrize(
    ("template", "rule_id"),
    [
        ("curl --user deploy:{a:20} https://api.internal", "curl-auth-user"),
        ("curl --user=deploy:{a:20} https://api.internal", "curl-auth-user"),
        ("curl -X POST \\\n  -u 'deploy:{a:20}' https://api.internal", "curl-auth-user"),
        ("curl -s -H 'X-Api-Key: {w:32}' https://api.internal", "curl-auth-header"),
        ('curl --header "Authorization: Basic {b:28}=" https://api.internal', "curl-auth-header"),
    ],
)
def test_curl_credentials(engine: SecretsEngine, template: str, rule_id: str) -> None:
    assert _ids(_scan(engine, template, path="scripts/deploy.sh")) == [rule_id]


@pytest.mark.parametrize(
    "template",
    [
        "curl -u $CI_USER:$CI_PASSWORD https://api.internal",
        "curl --user-agent 'Mozilla/5.0' https://api.internal",
        'curl -H "Authorization: Bearer ${{TOKEN}}" https://api.internal',
        'curl -H "Content-Type: application/json" https://api.internal',
        "libcurl -u deploy:{a:20}",
    ],
)
def test_curl_near_misses(engine: SecretsEngine, template: str) -> None:
    assert _scan(engine, template, path="scripts/deploy.sh") == []


# ---------------------------------------------------------------- Discord, Facebook, JWT in base64


def _discord_token(rng: random.Random) -> str:
    user_id = base64.urlsafe_b64encode(expand("1{d:17}", rng).encode()).decode().rstrip("=")
    return f"{user_id}.{expand('{w:6}', rng)}.{expand('{w:38}', rng)}"


def test_discord_bot_token_in_an_authorization_header_is_verified(engine: SecretsEngine) -> None:
    token = _discord_token(random.Random(1))
    [finding] = engine.scan("bot.py", f'headers = {{"Authorization": "Bot {token}"}}\n'.encode())
    assert (finding.rule_id, finding.confidence) == ("discord-bot-token", "high")
    [named] = engine.scan("bot.py", f'DISCORD_TOKEN = "{token}"\n'.encode())
    assert (named.rule_id, named.confidence) == ("discord-bot-token", "high")


def test_facebook_token_and_square_token_stay_apart(engine: SecretsEngine) -> None:
    assert _ids(_scan(engine, 'sq = "EAAA{w:60}"')) == ["square-access-token"]
    assert _ids(_scan(engine, 'fb = "EAAB{a:200}"')) == ["facebook-access-token"]


def test_base64_encoded_jwt_is_verified(engine: SecretsEngine) -> None:
    rng = random.Random(2)
    header = base64.urlsafe_b64encode(json.dumps({"alg": "RS256"}).encode()).decode().rstrip("=")
    payload = base64.urlsafe_b64encode(json.dumps({"sub": expand("{x:16}", rng)}).encode()).decode().rstrip("=")
    jwt = f"{header}.{payload}.{expand('{w:86}', rng)}"
    encoded = base64.b64encode(jwt.encode()).decode()
    [finding] = engine.scan("env.txt", f"SESSION={encoded}\n".encode())
    assert (finding.rule_id, finding.confidence) == ("jwt-base64", "high")


# ---------------------------------------------------------------- other shapes of the new provider rules


@pytest.mark.parametrize(
    ("template", "rule_id"),
    [
        ("https://api.hubapi.com/contacts/v1/lists?hapikey={uuid}", "hubspot-api-key"),
        ("bundle config --local enterprise.contribsys.com {h:8}:{h:8}", "sidekiq-secret"),
        ("snyk auth {uuid}", "snyk-api-token"),
        ('src = "sgp_local_{h:40}"', "sourcegraph-access-token"),
        ('src = "sgp_{h:40}"', "sourcegraph-access-token"),
        ('LINKEDIN_CLIENT_SECRET = "{a:16}"', "linkedin-client-secret"),
        ('hs = "pat-eu1-{uuid}"', "hubspot-private-app-token"),
        (
            "https://acme.webhook.office.com/webhookb2/{uuid}@{uuid}/IncomingWebhook/{h:32}/{uuid}/V2{w:40}",
            "microsoft-teams-webhook",
        ),
    ],
)
def test_more_provider_shapes(engine: SecretsEngine, template: str, rule_id: str) -> None:
    for seed in range(3):
        assert _ids(_scan(engine, template, seed=seed, path="config/app.env")) == [rule_id]


@pytest.mark.parametrize(
    "template",
    [
        'algolia_app_id = "{U:10}"',
        '<add key="ClearTextPassword" value="%FEED_PASSWORD%" />',
        'notion = "secret_{a:43}_suffix"',
        'nuget = "oy2{x:43}{x:3}"',
        'hs = "pat-na1-{h:8}"',
    ],
)
def test_more_provider_near_misses(engine: SecretsEngine, template: str) -> None:
    assert _scan(engine, template, path="config/app.env") == []


def test_algolia_search_only_key_is_left_to_the_generic_rule(engine: SecretsEngine) -> None:
    # Search-only keys are public by design: not the Algolia rule; the generic rule reports it, low.
    [finding] = _scan(engine, 'ALGOLIA_SEARCH_ONLY_API_KEY = "{h:32}"', path="config/app.env")
    assert (finding.rule_id, finding.confidence) == ("generic-api-key", "low")
