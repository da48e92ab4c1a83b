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
        # the rest of the gitleaks checklist
        "authress-service-client-access-key", "beamer-api-key", "bittrex-api-key", "castai-api-key",
        "chargebee-api-key", "chief-tools-token", "clickhouse-cloud-api-secret-key", "coinbase-api-secret",
        "etsy-api-key", "finicity-api-credential", "finnhub-api-key", "flickr-api-key", "freemius-secret-key",
        "freshbooks-access-token", "gocardless-access-token", "jfrog-access-token", "kraken-api-key", "lob-api-key",
        "looker-client-secret", "messagebird-api-key", "nytimes-api-key", "privateai-api-key", "rapidapi-key",
        "travisci-access-token",
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


# ---------------------------------------------------------------- the rest of the gitleaks checklist

_CHECKLIST_REST = (
    "authress-service-client-access-key", "beamer-api-key", "bittrex-api-key", "castai-api-key", "chargebee-api-key",
    "chief-tools-token", "clickhouse-cloud-api-secret-key", "coinbase-api-secret", "etsy-api-key",
    "finicity-api-credential", "finnhub-api-key", "flickr-api-key", "freemius-secret-key", "freshbooks-access-token",
    "gocardless-access-token", "jfrog-access-token", "kraken-api-key", "lob-api-key", "looker-client-secret",
    "messagebird-api-key", "nytimes-api-key", "privateai-api-key", "rapidapi-key", "travisci-access-token",
)  # fmt: skip


def test_checklist_rules_come_before_the_generic_ones_and_start_with_a_literal() -> None:
    rules = default_ruleset().rules
    index = {rule.id: position for position, rule in enumerate(rules)}
    first_generic = min(position for rule_id, position in index.items() if rule_id.startswith("generic-"))
    assert max(index[rule_id] for rule_id in _CHECKLIST_REST) < first_generic
    assert index["jfrog-access-token"] < index["jwt"]  # the JFrog token is a JWT: claim it first
    for rule_id in _CHECKLIST_REST:
        pattern = rules[index[rule_id]].regex.pattern.lstrip("(")
        if rule_id == "authress-service-client-access-key":
            assert pattern.startswith("?:sc|ext)_"), rule_id  # the one documented exception (rare keywords)
        else:
            assert pattern[0].isalnum(), rule_id


@pytest.mark.parametrize(
    ("template", "rule_id"),
    [
        ('authress = "ext_{x:16}.{x:4}.acc-{x:14}.{b:64}"', "authress-service-client-access-key"),
        ('chargebee.configure("test_{a:32}", "acme-test")', "chargebee-api-key"),
        ('cb = chargebee.Chargebee(api_key="live_{a:32}", site="acme")', "chargebee-api-key"),
        ('chief = "ctt_{a:120}"', "chief-tools-token"),
        ("CHIEF_TOKEN=ctp_{a:36}", "chief-tools-token"),
        ('COINBASE_API_SECRET = "{b:86}=="', "coinbase-api-secret"),
        ('coinbase_oauth_token: "{h:64}"', "coinbase-api-secret"),
        ('ETSY_ACCESS_TOKEN = "{d:8}.{w:80}"', "etsy-api-key"),
        ('finicity_partner_secret = "{a:20}"', "finicity-api-credential"),
        ("https://finnhub.io/api/v1/quote?symbol=AAPL&token={x:20}", "finnhub-api-key"),
        ("wss://ws.finnhub.io?token={x:20}", "finnhub-api-key"),
        ("https://api.flickr.com/services/rest/?method=flickr.photos.search&api_key={h:32}", "flickr-api-key"),
        ('client = gocardless_pro.Client(access_token="live_{w:40}", environment="live")', "gocardless-access-token"),
        ("client = GoCardlessPro::Client.new(access_token: 'live_{w:40}')", "gocardless-access-token"),
        ('KRAKEN_API_KEY = "{b:56}"', "kraken-api-key"),
        ("const lob = require('lob')('live_{h:35}');", "lob-api-key"),
        ('lob.api_key = "live_{h:35}"', "lob-api-key"),
        ("client = messagebird.Client('{a:25}')", "messagebird-api-key"),
        ("const messagebird = require('messagebird')('{a:25}');", "messagebird-api-key"),
        ("https://api.nytimes.com/svc/topstories/v2/home.json?api-key={a:32}", "nytimes-api-key"),
        ('nytimes_key = "{a:32}"', "nytimes-api-key"),
        ("const nytApiKey = '{a:32}';", "nytimes-api-key"),
        ('PAI_API_KEY = "{x:32}"', "privateai-api-key"),
        ('x_rapidapi_key = "{w:50}"', "rapidapi-key"),
        ("travis_token: {a:22}", "travisci-access-token"),
    ],
)
def test_checklist_rest_other_shapes(engine: SecretsEngine, template: str, rule_id: str) -> None:
    for seed in range(3):
        assert _ids(_scan(engine, template, seed=seed, path="config/app.env")) == [rule_id]


@pytest.mark.parametrize(
    ("template", "rule_id"),
    [
        # wrong shape or length
        ('AUTHRESS_CLIENT = "sc_{x:16}.{x:6}.{x:14}.{b:64}"', "authress-service-client-access-key"),  # no acc_
        ('BEAMER_API_KEY = "{w:44}"', "beamer-api-key"),  # no b_
        ('BITTREX_API_KEY = "{h:24}"', "bittrex-api-key"),
        ('cast = "castai_v1_{h:64}"', "castai-api-key"),
        ('chief = "ctp_{a:30}"', "chief-tools-token"),
        ('ch = "4b1d{a:20}"', "clickhouse-cloud-api-secret-key"),
        ('COINBASE_API_SECRET = "{a:20}"', "coinbase-api-secret"),
        ('FINICITY_APP_KEY = "{h:30}"', "finicity-api-credential"),
        ('FINNHUB_API_KEY = "{x:16}"', "finnhub-api-key"),
        ('FLICKR_API_SECRET = "{h:16}"', "flickr-api-key"),
        ("'secret_key' => 'sk_{a:20}',", "freemius-secret-key"),
        ('FRESHBOOKS_ACCESS_TOKEN = "{h:40}"', "freshbooks-access-token"),
        ('GOCARDLESS_ACCESS_TOKEN = "live_{w:20}"', "gocardless-access-token"),
        ('KRAKEN_API_KEY = "{b:40}"', "kraken-api-key"),
        ('LOOKERSDK_CLIENT_SECRET = "{a:16}"', "looker-client-secret"),
        ('MESSAGEBIRD_ACCESS_KEY = "{a:20}"', "messagebird-api-key"),
        ('PRIVATE_AI_API_KEY = "{x:20}"', "privateai-api-key"),
        ("'X-RapidAPI-Key': '{x:40}'", "rapidapi-key"),
        ('TRAVIS_API_TOKEN = "{a:30}"', "travisci-access-token"),
        # wrong prefix or environment
        ('authress = "xsc_{x:16}.{x:6}.acc_{x:14}.{b:64}"', "authress-service-client-access-key"),
        ('cast = "castai_v2_{h:64}_{h:8}"', "castai-api-key"),
        ('CHARGEBEE_API_KEY = "prod_{a:32}"', "chargebee-api-key"),
        ('chief = "xctp_{a:36}"', "chief-tools-token"),
        ("mpmath/ctx_fp.py,sha256=ct{a:2}_{a:38},6572", "chief-tools-token"),  # a wheel RECORD digest
        ('ch = "x4b1d{a:38}"', "clickhouse-cloud-api-secret-key"),
        ("'secret_key' => 'sk_live_{a:24}',", "freemius-secret-key"),  # a Stripe key: the Stripe rule's
        ('GOCARDLESS_ACCESS_TOKEN = "sandbox_{w:40}"', "gocardless-access-token"),
        ('jf = "eyJ2ZXIiOiIxIiwidHlwIjoiSldUIi{w:20}.eyJ{w:40}.{w:43}"', "jfrog-access-token"),  # ver 1: a plain JWT
        ('LOB_API_KEY = "test_{h:35}"', "lob-api-key"),
        ('LOB_API_KEY = "live_pub_{h:31}"', "lob-api-key"),  # publishable by design
        # wrong context
        ('bittrex_docs_url = "{h:32}"', "bittrex-api-key"),
        ('betsy_api_key = "{x:24}"', "etsy-api-key"),
        ('global_api_key = "live_{h:35}"', "lob-api-key"),
        ('anything_api_key = "{a:32}"', "nytimes-api-key"),
        ('FRESHBOOKS_CLIENT_ID = "{h:64}"', "freshbooks-access-token"),
        ('LOOKERSDK_CLIENT_ID = "{a:24}"', "looker-client-secret"),
        ("'X-RapidAPI-Host': '{x:50}'", "rapidapi-key"),
        # placeholders
        ('GOCARDLESS_ACCESS_TOKEN = "live_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"', "gocardless-access-token"),
        ('CHARGEBEE_API_KEY = "<your-chargebee-api-key>"', "chargebee-api-key"),
        ('ETSY_API_KEY = "${{ETSY_API_KEY}}"', "etsy-api-key"),
        ('NYT_API_KEY = "your_nyt_api_key_here_0123456"', "nytimes-api-key"),
        ('KRAKEN_API_SECRET = "{{{{ kraken_api_secret }}}}"', "kraken-api-key"),
    ],
)
def test_checklist_rest_near_misses(engine: SecretsEngine, template: str, rule_id: str) -> None:
    for seed in range(3):
        assert rule_id not in _ids(_scan(engine, template, seed=seed, path="config/app.env"))


@pytest.mark.parametrize(
    "template",
    [
        'GOCARDLESS_ACCESS_TOKEN = "live_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"',
        'CHARGEBEE_API_KEY = "<your-chargebee-api-key>"',
        'cast = "castai_v1_{h:64}"',
        'ch = "4b1d{h:38}"',  # hexadecimal: under the entropy threshold
        "'public_key' => 'pk_{h:29}',",
        'LOB_HOST = "live_{h:35}"',
    ],
)
def test_checklist_rest_near_misses_report_nothing(engine: SecretsEngine, template: str) -> None:
    assert _scan(engine, template, path="config/app.env") == []


def test_jfrog_access_token_with_json_header_and_payload_is_verified(engine: SecretsEngine) -> None:
    rng = random.Random(5)

    def segment(value: dict[str, str]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value, separators=(",", ":")).encode()).decode().rstrip("=")

    header = segment({"ver": "2", "typ": "JWT", "alg": "RS256", "kid": expand("{w:43}", rng)})
    payload = segment({"sub": f"jfac@{expand('{x:26}', rng)}/users/ci", "scp": "applied-permissions/user"})
    token = f"{header}.{payload}.{expand('{w:342}', rng)}"
    [finding] = engine.scan("ci/jfrog.env", f"JFROG_ACCESS_TOKEN={token}\n".encode())
    assert (finding.rule_id, finding.confidence) == ("jfrog-access-token", "high")
