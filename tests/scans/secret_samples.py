"""Synthetic secrets for the secrets-engine tests and the scan benchmark.

Nothing in this file looks like a real secret: each sample is a template whose random parts are
generated at run time (`expand`) from a seeded generator, so the repository never contains a
committed token a push-protection scanner would flag, while the generated values match the rules.

Template fields (`{{` and `}}` are literal braces): `{kind:n}` is n random characters
of a kind (see `_ALPHABETS`); `{pem:n}` is n 64-character base64 lines joined by newlines,
`{pemj:n}` the same joined by a literal `\\n` (as in a JSON key file); `{uuid}` a random UUID.
"""

from __future__ import annotations

import math
import random
import re
import string
from dataclasses import dataclass

_ALPHABETS = {
    "a": string.ascii_letters + string.digits,  # mixed-case alphanumeric
    "h": "0123456789abcdef",
    "H": "0123456789ABCDEF",
    "d": string.digits,
    "U": string.ascii_uppercase + string.digits,
    "B": string.ascii_uppercase + "234567",  # base32
    "b": string.ascii_letters + string.digits + "+/",  # base64 body
    "w": string.ascii_letters + string.digits + "_-",  # base64url
    "l": string.ascii_letters,
    "x": string.ascii_lowercase + string.digits,
    "c": "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L",  # bech32
}
_STOPWORDS = ("example", "dummy", "changeme", "redacted", "notreal", "password", "secret")
_FIELD = re.compile(r"\{\{|\}\}|\{(?P<kind>[a-zA-Z]+)(?::(?P<n>\d+))?\}")


def _random(rng: random.Random, alphabet: str, n: int) -> str:
    # Make sure every generated value mixes several characters (entropy) and, for mixed
    # alphabets, both letters and digits.
    while True:
        value = "".join(rng.choice(alphabet) for _ in range(n))
        if any(word in value.lower() for word in _STOPWORDS):
            continue  # a random value that happens to spell an allow-listed word
        if n < 8:
            return value
        mixed = any(c.isdigit() for c in alphabet) and any(c.isalpha() for c in alphabet)
        counts = [value.count(c) for c in set(value)]
        entropy = -sum(k / n * math.log2(k / n) for k in counts)
        varied = entropy >= 0.8 * math.log2(min(n, len(alphabet)))  # typical of a random value
        if varied and (not mixed or (any(c.isdigit() for c in value) and any(c.isalpha() for c in value))):
            return value


def expand(template: str, rng: random.Random) -> str:
    def field(match: re.Match[str]) -> str:
        if match[0] in ("{{", "}}"):
            return match[0][0]
        kind, n = match["kind"], int(match["n"] or 0)
        if kind == "uuid":
            h = _ALPHABETS["h"]
            return "-".join(_random(rng, h, size) for size in (8, 4, 4, 4, 12))
        if kind in {"pem", "pemj"}:
            lines = [_random(rng, _ALPHABETS["b"], 64) for _ in range(n)]
            return ("\\n" if kind == "pemj" else "\n").join(lines)
        return _random(rng, _ALPHABETS[kind], n)

    return _FIELD.sub(field, template)


@dataclass(frozen=True)
class Sample:
    positive: str  # must be reported under the rule's id
    negative: str  # a near miss: must produce no finding at all


def _pem(label: str) -> str:
    return f"-----BEGIN {label}-----\n{{pem:8}}\n{{b:20}}==\n-----END {label}-----"


SAMPLES: dict[str, Sample] = {
    # cloud providers
    "aws-access-key-id": Sample('aws_access_key_id = "AKIA{B:16}"', 'aws_access_key_id = "AKIA{B:15}"'),
    "aws-secret-access-key": Sample('aws_secret_access_key = "{b:40}"', 'aws_region_hint = "{b:40}"'),
    "google-api-key": Sample('maps_client = "AIza{w:35}"', 'maps_client = "AIza{w:30}"'),
    "gcp-service-account-private-key": Sample(
        '{{"type": "service_account", "private_key": '
        '"-----BEGIN PRIVATE KEY-----\\n{pemj:8}\\n-----END PRIVATE KEY-----\\n"}}',
        '{{"type": "service_account", "private_key": '
        '"-----BEGIN PRIVATE KEY-----\\n...\\n-----END PRIVATE KEY-----\\n"}}',
    ),
    "google-oauth-client-secret": Sample('client_cfg = "GOCSPX-{w:28}"', 'client_cfg = "GOCSPX-{w:12}"'),
    "azure-storage-connection-string": Sample(
        'conn = "DefaultEndpointsProtocol=https;AccountName=acct{x:6};AccountKey={b:86}==;'
        'EndpointSuffix=core.windows.net"',
        'conn = "DefaultEndpointsProtocol=https;AccountName=acct{x:6};AccountKey=${{STORAGE_KEY}};EndpointSuffix=x"',
    ),
    "azure-storage-account-key": Sample('azure_storage_key = "{b:86}=="', 'azure_storage_name = "{b:86}=="'),
    "azure-ad-client-secret": Sample('client = "{x:3}8Q~{w:34}"', 'client = "{x:3}8Q-{w:34}"'),
    "digitalocean-pat": Sample('do_cfg = "dop_v1_{h:64}"', 'do_cfg = "dop_v1_{h:40}"'),
    "digitalocean-oauth-token": Sample('do_cfg = "doo_v1_{h:64}"', 'do_cfg = "doo_v2_{h:64}"'),
    "digitalocean-refresh-token": Sample('do_cfg = "dor_v1_{h:64}"', 'do_cfg = "dor_v1_{H:64}"'),
    "heroku-api-key": Sample('HEROKU_API_KEY = "{uuid}"', 'HEROKU_APP_NAME = "{uuid}"'),
    "heroku-api-key-v2": Sample('hk = "HRKU-AA{w:58}"', 'hk = "HRKU-AB{w:58}"'),
    "alibaba-access-key-id": Sample('ali_id = "LTAI{a:20}"', 'ali_id = "LTAI{a:12}"'),
    "databricks-token": Sample('dbx = "dapi{h:32}"', 'dbx = "dapi{h:20}"'),
    "hashicorp-vault-token": Sample('vault = "hvs.{w:100}"', 'vault = "hvs.{w:40}"'),
    "terraform-cloud-token": Sample('tfc = "{x:14}.atlasv1.{x:67}"', 'tfc = "{x:14}.atlasv2.{x:67}"'),
    "pulumi-access-token": Sample('pulumi = "pul-{h:40}"', 'pulumi = "pul-{h:30}"'),
    "flyio-access-token": Sample('fly = "fo1_{w:43}"', 'fly = "fo2_{w:43}"'),
    "supabase-access-token": Sample('supa = "sbp_{h:40}"', 'supa = "sbp_{h:32}"'),
    # source hosting, CI, packages
    "github-pat": Sample('gh = "ghp_{a:36}"', 'gh = "ghp_{a:30}"'),
    "github-fine-grained-pat": Sample('gh = "github_pat_{a:22}_{a:59}"', 'gh = "github_pat_{a:22}"'),
    "github-oauth-token": Sample('gh = "gho_{a:36}"', 'gh = "gho_{a:20}"'),
    "github-app-token": Sample('gh = "ghs_{a:36}"', 'gh = "ghx_{a:36}"'),
    "github-refresh-token": Sample('gh = "ghr_{a:76}"', 'gh = "ghr_{a:20}"'),
    "gitlab-pat": Sample('gl = "glpat-{w:20}"', 'gl = "glpat-{w:12}"'),
    "gitlab-runner-token": Sample('gl = "glrt-{w:20}"', 'gl = "glrt-{w:10}"'),
    "gitlab-deploy-token": Sample('gl = "gldt-{w:20}"', 'gl = "gldt-{w:10}"'),
    "gitlab-pipeline-trigger-token": Sample('gl = "glptt-{h:40}"', 'gl = "glptt-{h:20}"'),
    "npm-access-token": Sample(
        "//registry.npmjs.org/:_authToken=npm_{a:36}", "//registry.npmjs.org/:_authToken=${{NPM_TOKEN}}"
    ),
    "pypi-upload-token": Sample('pypi = "pypi-AgEIcHlwaS5vcmc{w:70}"', 'pypi = "pypi-AgEIcHlwaS5vcmc{w:20}"'),
    "rubygems-api-key": Sample('gem = "rubygems_{h:48}"', 'gem = "rubygems_{h:30}"'),
    "dockerhub-pat": Sample('hub = "dckr_pat_{w:27}"', 'hub = "dckr_pat_{w:12}"'),
    "doppler-token": Sample('dp = "dp.st.{a:43}"', 'dp = "dp.xx.{a:43}"'),
    "postman-api-token": Sample('pm = "PMAK-{h:24}-{h:34}"', 'pm = "PMAK-{h:24}"'),
    "atlassian-api-token": Sample('atl = "ATATT3{w:186}"', 'atl = "ATATT3{w:40}"'),
    "atlassian-api-token-legacy": Sample('JIRA_API_TOKEN = "{x:24}"', 'JIRA_BASE = "{x:24}"'),
    "linear-api-key": Sample('lin = "lin_api_{a:40}"', 'lin = "lin_api_{a:20}"'),
    "sentry-auth-token": Sample('sentry = "sntrys_{a:80}"', 'sentry = "sntrys_{a:20}"'),
    "grafana-service-account-token": Sample('graf = "glsa_{a:32}_{h:8}"', 'graf = "glsa_{a:32}"'),
    "newrelic-user-api-key": Sample('nr = "NRAK-{U:27}"', 'nr = "NRAK-{U:12}"'),
    "datadog-api-key": Sample('DD_API_KEY = "{h:32}"', 'DD_SITE = "{h:32}"'),
    "datadog-app-key": Sample('DATADOG_APP_KEY = "{h:40}"', 'DATADOG_APP_NAME = "{h:40}"'),
    "dynatrace-api-token": Sample('dt = "dt0c01.{U:24}.{U:64}"', 'dt = "dt0c01.{U:24}"'),
    "tailscale-key": Sample('ts = "tskey-auth-{a:12}-{a:30}"', 'ts = "tskey-auth-{a:12}"'),
    # chat, mail, messaging
    "slack-bot-token": Sample('slack = "xoxb-{d:11}-{d:12}-{a:24}"', 'slack = "xoxb-{d:11}-{a:24}"'),
    "slack-user-token": Sample('slack = "xoxp-{d:11}-{d:11}-{d:12}-{h:32}"', 'slack = "xoxp-{d:11}-{d:11}-{h:32}"'),
    "slack-app-token": Sample('slack = "xapp-1-A{U:10}-{d:13}-{x:64}"', 'slack = "xapp-1-A{U:10}-{d:13}-{x:20}"'),
    "slack-webhook-url": Sample(
        'hook = "https://hooks.slack.com/services/T{U:8}/B{U:8}/{a:24}"',
        'hook = "https://hooks.slack.com/services/T{U:8}/B{U:8}/{a:10}"',
    ),
    "discord-bot-token": Sample('DISCORD_BOT_TOKEN = "M{a:25}.{w:6}.{w:30}"', 'discord_bot = "M{a:25}.{w:6}"'),
    "discord-webhook-url": Sample(
        'hook = "https://discord.com/api/webhooks/{d:18}/{w:68}"',
        'hook = "https://discord.com/api/webhooks/{d:18}/{w:20}"',
    ),
    "telegram-bot-token": Sample('tg = "{d:9}:AA{w:33}"', 'tg = "{d:9}:AA{w:20}"'),
    "twilio-api-key": Sample('twilio_key_sid = "SK{h:32}"', 'twilio_key_sid = "SK{h:20}"'),
    "twilio-auth-token": Sample('TWILIO_AUTH_TOKEN = "{h:32}"', 'twilio_account_sid = "AC{h:32}"'),
    "sendgrid-api-key": Sample('sg = "SG.{w:22}.{w:43}"', 'sg = "SG.{w:22}"'),
    "mailgun-private-api-key": Sample('mg = "key-{h:32}"', 'mg = "key-{h:20}"'),
    "mailgun-api-key": Sample('MAILGUN_API_KEY = "{h:32}-{h:8}-{h:8}"', 'MAILGUN_DOMAIN = "{h:32}-{h:8}-{h:8}"'),
    # payments, commerce
    "stripe-secret-key": Sample('stripe = "sk_live_{a:24}"', 'stripe = "sk_test_{a:24}"'),
    "stripe-restricted-key": Sample('stripe = "rk_live_{a:24}"', 'stripe = "rk_test_{a:24}"'),
    "stripe-webhook-secret": Sample('wh = "whsec_{a:32}"', 'wh = "whsec_{a:16}"'),
    "square-access-token": Sample('sq = "EAAA{w:60}"', 'sq = "EAAA{w:12}"'),
    "square-oauth-secret": Sample('sq = "sq0csp-{w:43}"', 'sq = "sq0csp-{w:20}"'),
    "paypal-braintree-access-token": Sample(
        'bt = "access_token$production${x:16}${h:32}"', 'bt = "access_token$sandbox${x:16}${h:32}"'
    ),
    "shopify-access-token": Sample('shop = "shpat_{h:32}"', 'shop = "shpat_{h:20}"'),
    "shopify-custom-app-token": Sample('shop = "shpca_{h:32}"', 'shop = "shpca_{h:20}"'),
    "shopify-private-app-token": Sample('shop = "shppa_{h:32}"', 'shop = "shppa_{h:20}"'),
    "shopify-shared-secret": Sample('shop = "shpss_{h:32}"', 'shop = "shpss_{h:20}"'),
    # AI providers
    "openai-api-key": Sample('oa = "sk-{a:20}T3BlbkFJ{a:20}"', 'oa = "sk-{a:20}T3BlbkFJ"'),
    "openai-project-key": Sample('oa = "sk-proj-{w:120}"', 'oa = "sk-proj-{w:20}"'),
    "anthropic-api-key": Sample('ant = "sk-ant-api03-{w:93}AA"', 'ant = "sk-ant-api03-{w:40}"'),
    "anthropic-admin-key": Sample('ant = "sk-ant-admin01-{w:93}AA"', 'ant = "sk-ant-admin01-{w:40}"'),
    "huggingface-access-token": Sample('hf = "hf_{l:34}"', 'hf = "hf_{l:20}"'),
    "groq-api-key": Sample('groq = "gsk_{a:52}"', 'groq = "gsk_{a:30}"'),
    "replicate-api-token": Sample('rep = "r8_{a:37}"', 'rep = "r8_{a:20}"'),
    # more providers (issue 17)
    "adobe-client-secret": Sample('adobe = "p8e-{w:32}"', 'adobe = "p8e-{w:20}"'),
    "adobe-client-id": Sample('ADOBE_CLIENT_ID = "{h:32}"', 'ADOBE_ORG_NAME = "{h:32}"'),
    "algolia-api-key": Sample('ALGOLIA_ADMIN_KEY = "{h:32}"', 'ALGOLIA_SEARCH_KEY = "{h:32}"'),
    "hubspot-private-app-token": Sample('hs = "pat-na1-{uuid}"', 'hs = "pat-xx1-{uuid}"'),
    "hubspot-api-key": Sample('HUBSPOT_API_KEY = "{uuid}"', 'HUBSPOT_PORTAL_ID = "{uuid}"'),
    "kucoin-api-key": Sample('KUCOIN_API_KEY = "{h:24}"', 'kucoin_passphrase_hint = "{h:24}"'),
    "kucoin-api-secret": Sample('KUCOIN_API_SECRET = "{uuid}"', 'KUCOIN_ACCOUNT_ID = "{uuid}"'),
    "linkedin-client-secret": Sample(
        'LINKEDIN_CLIENT_SECRET = "WPL_AP1.{a:16}.{b:6}=="', 'LINKEDIN_CLIENT_NAME = "WPL_AP1.{a:16}.{b:6}=="'
    ),
    "linkedin-client-id": Sample('LINKEDIN_CLIENT_ID = "{x:14}"', 'LINKEDIN_CLIENT_ID = "{x:8}"'),
    "notion-integration-token": Sample('notion = "ntn_{a:46}"', 'notion = "ntn_{a:30}"'),
    "notion-integration-token-legacy": Sample('notion = "secret_{a:43}"', 'notion = "secret_{a:30}"'),
    "nuget-api-key": Sample('nuget = "oy2{x:43}"', 'nuget = "oy2{x:30}"'),
    "nuget-config-password": Sample(
        '<add key="ClearTextPassword" value="{a:16}" />', '<add key="ClearTextPassword" value="%NUGET_FEED_PW%" />'
    ),
    "sidekiq-secret": Sample(
        'BUNDLE_ENTERPRISE__CONTRIBSYS__COM: "{h:8}:{h:8}"', 'BUNDLE_ENTERPRISE__CONTRIBSYS__COM: "{h:8}"'
    ),
    "sidekiq-sensitive-url": Sample(
        'source "https://{h:8}:{h:8}@enterprise.contribsys.com/"', 'source "https://enterprise.contribsys.com/"'
    ),
    "snyk-api-token": Sample('SNYK_TOKEN = "{uuid}"', 'SNYK_ORG = "{uuid}"'),
    "sourcegraph-access-token": Sample('src = "sgp_{h:16}_{h:40}"', 'src = "sgp_{h:30}"'),
    "squarespace-access-token": Sample('SQUARESPACE_API_KEY = "{uuid}"', 'SQUARESPACE_SITE_ID = "{uuid}"'),
    "microsoft-teams-webhook": Sample(
        'hook = "https://acme.webhook.office.com/webhookb2/{uuid}@{uuid}/IncomingWebhook/{h:32}/{uuid}"',
        'hook = "https://acme.webhook.office.com/webhookb2/{uuid}@{uuid}/IncomingWebhook/"',
    ),
    "facebook-access-token": Sample('fb = "EAAG{a:180}"', 'fb = "EAAG{a:40}"'),
    "facebook-app-secret": Sample('FACEBOOK_APP_SECRET = "{h:32}"', 'FACEBOOK_APP_ID = "{h:32}"'),
    "facebook-app-access-token": Sample('FB_ACCESS_TOKEN = "{d:16}|{w:27}"', 'FB_ACCESS_TOKEN = "{d:16}"'),
    "perplexity-api-key": Sample('pplx = "pplx-{a:48}"', 'pplx = "pplx-{a:30}"'),
    "jwt-base64": Sample('blob = "ZXlK{b:120}"', 'blob = "ZXlK{b:20}"'),
    "kubernetes-secret-yaml": Sample(
        '{{"apiVersion": "v1", "kind": "Secret", "data": {{"db-pass": "{b:24}"}}}}',
        '{{"apiVersion": "v1", "kind": "ConfigMap", "data": {{"db-pass": "{b:24}"}}}}',
    ),
    "curl-auth-user": Sample(
        "curl -sS -u deploy:{a:20} https://api.internal/v1", "curl -sS -u deploy: https://api.internal/v1"
    ),
    "curl-auth-header": Sample(
        'curl -H "Authorization: Bearer {w:40}" https://api.internal/v1',
        'curl -H "Authorization: Bearer $API_TOKEN" https://api.internal/v1',
    ),
    # more providers (gitleaks checklist)
    "onepassword-service-account-token": Sample('op = "ops_eyJ{w:300}"', 'op = "ops_eyJ{w:60}"'),
    "adafruit-io-key": Sample('aio = "aio_{a:28}"', 'aio = "aio_{a:20}"'),
    "artifactory-api-key": Sample('rt = "AKCp{a:69}"', 'rt = "AKCp{a:30}"'),
    "artifactory-reference-token": Sample('rt = "cmVmdGtu{b:56}"', 'rt = "cmVmdGtu{b:20}"'),
    "clojars-api-token": Sample('cj = "CLOJARS_{x:60}"', 'cj = "CLOJARS_{x:30}"'),
    "cloudflare-origin-ca-key": Sample('cf = "v1.0-{h:24}-{h:146}"', 'cf = "v1.0-{h:24}-{h:40}"'),
    "defined-networking-api-token": Sample('dn = "dnkey-{B:26}-{B:52}"', 'dn = "dnkey-{B:26}"'),
    "duffel-api-token": Sample('df = "duffel_live_{w:43}"', 'df = "duffel_live_{w:20}"'),
    "easypost-api-token": Sample('ep = "EZAK{a:54}"', 'ep = "EZAK{a:30}"'),
    "flutterwave-secret-key": Sample('fw = "FLWSECK_TEST-{h:32}-X"', 'fw = "FLWSECK_TEST-{h:20}-X"'),
    "frameio-api-token": Sample('fio = "fio-u-{w:64}"', 'fio = "fio-u-{w:30}"'),
    "gitlab-cicd-job-token": Sample('gl = "glcbt-{w:20}"', 'gl = "glcbt-{w:10}"'),
    "gitlab-feed-token": Sample('gl = "glft-{w:20}"', 'gl = "glft-{w:10}"'),
    "gitlab-incoming-mail-token": Sample('gl = "glimt-{w:25}"', 'gl = "glimt-{w:10}"'),
    "gitlab-kubernetes-agent-token": Sample('gl = "glagent-{w:50}"', 'gl = "glagent-{w:20}"'),
    "gitlab-oauth-app-secret": Sample('gl = "gloas-{w:64}"', 'gl = "gloas-{w:20}"'),
    "gitlab-scim-token": Sample('gl = "glsoat-{w:20}"', 'gl = "glsoat-{w:10}"'),
    "gitlab-feature-flag-client-token": Sample('gl = "glffct-{w:20}"', 'gl = "glffct-{w:10}"'),
    "gitlab-runner-registration-token": Sample('gl = "GR1348941{w:20}"', 'gl = "GR1348941{w:10}"'),
    "grafana-cloud-api-token": Sample('graf = "glc_{b:120}"', 'graf = "glc_{b:20}"'),
    "grafana-api-key": Sample('graf = "eyJrIjoi{b:90}"', 'graf = "eyJrIjoi{b:20}"'),
    "harness-api-key": Sample('hx = "pat.{w:22}.{h:24}.{a:20}"', 'hx = "pat.{w:22}.{h:24}"'),
    "huggingface-organization-api-token": Sample('hf = "api_org_{l:34}"', 'hf = "api_org_{l:20}"'),
    "infracost-api-token": Sample('ic = "ico-{a:32}"', 'ic = "ico-{a:20}"'),
    "intra42-client-secret": Sample('ft = "s-s4t2ud-{h:64}"', 'ft = "s-s4t2ud-{h:30}"'),
    "mapbox-secret-token": Sample('mb = "sk.eyJ{w:60}.{w:22}"', 'mb = "pk.eyJ{w:60}.{w:22}"'),
    "newrelic-insert-key": Sample('nr = "NRII-{w:32}"', 'nr = "NRII-{w:20}"'),
    "newrelic-browser-api-token": Sample('nr = "NRJS-{h:19}"', 'nr = "NRJS-{h:10}"'),
    "octopus-deploy-api-key": Sample('oct = "API-{U:30}"', 'oct = "API-{U:12}"'),
    "openshift-user-token": Sample('oc = "sha256~{w:43}"', 'oc = "sha256~{w:20}"'),
    "planetscale-token": Sample('ps = "pscale_pw_{w:43}"', 'ps = "pscale_pw_{w:20}"'),
    "prefect-api-token": Sample('pf = "pnu_{a:36}"', 'pf = "pnu_{a:20}"'),
    "readme-api-token": Sample('rd = "rdme_{x:70}"', 'rd = "rdme_{x:30}"'),
    "scalingo-api-token": Sample('sc = "tk-us-{w:48}"', 'sc = "tk-us-{w:20}"'),
    "brevo-api-key": Sample('bv = "xkeysib-{h:64}-{a:16}"', 'bv = "xkeysib-{h:64}"'),
    "settlemint-token": Sample('sm = "sm_pat_{a:16}"', 'sm = "sm_pat_{a:8}"'),
    "shippo-api-token": Sample('sh = "shippo_live_{h:40}"', 'sh = "shippo_test_{h:40}"'),
    "slack-config-access-token": Sample('sl = "xoxe.xoxp-1-{U:164}"', 'sl = "xoxe.xoxp-1-{U:40}"'),
    "slack-config-refresh-token": Sample('sl = "xoxe-1-{U:146}"', 'sl = "xoxe-1-{U:40}"'),
    "slack-legacy-token": Sample('sl = "xoxs-{d:10}-{d:11}-{d:12}-{h:64}"', 'sl = "xoxs-{d:10}"'),
    "sonar-token": Sample('sq = "squ_{h:40}"', 'sq = "squ_{h:20}"'),
    "typeform-api-token": Sample('tf = "tfp_{w:59}"', 'tf = "tfp_{w:20}"'),
    "yandex-oauth-token": Sample('ya = "y0_{w:55}"', 'ya = "y0_{w:20}"'),
    "yandex-api-key": Sample('ya = "AQVN{w:36}"', 'ya = "AQVN{w:20}"'),
    "langsmith-api-key": Sample('ls = "lsv2_pt_{h:32}_{h:10}"', 'ls = "lsv2_pt_{h:32}"'),
    "plaid-access-token": Sample('pl = "access-production-{uuid}"', 'pl = "access-sandbox-{uuid}"'),
    "aws-bedrock-api-key": Sample('br = "ABSKQmVkcm9ja0FQSUtleS{b:120}"', 'br = "ABSKQmVkcm9ja0FQSUtleS{b:20}"'),
    "dropbox-short-lived-token": Sample('dbx = "sl.{w:140}"', 'dbx = "sl.{w:40}"'),
    "mailchimp-api-key": Sample('MAILCHIMP_API_KEY = "{h:32}-us21"', 'MAILCHIMP_LIST_ID = "{h:32}-us21"'),
    "okta-access-token": Sample('OKTA_API_TOKEN = "00{w:40}"', 'OKTA_ORG_URL = "00{w:40}"'),
    "airtable-api-key": Sample('AIRTABLE_API_TOKEN = "pat{a:14}.{h:64}"', 'AIRTABLE_HOST = "pat{a:14}.{h:64}"'),
    "asana-personal-access-token": Sample('ASANA_API_TOKEN = "1/{d:16}:{h:32}"', 'ASANA_HOST = "1/{d:16}:{h:32}"'),
    "bitbucket-client-secret": Sample('BITBUCKET_SECRET = "{w:32}"', 'BITBUCKET_HOST = "{w:32}"'),
    "codecov-access-token": Sample('CODECOV_API_TOKEN = "{uuid}"', 'CODECOV_HOST = "{uuid}"'),
    "cohere-api-token": Sample('COHERE_API_TOKEN = "{a:40}"', 'COHERE_HOST = "{a:40}"'),
    "confluent-secret-key": Sample('CONFLUENT_SECRET = "{b:64}"', 'CONFLUENT_HOST = "{b:64}"'),
    "contentful-delivery-api-token": Sample('CONTENTFUL_API_TOKEN = "{w:43}"', 'CONTENTFUL_HOST = "{w:43}"'),
    "droneci-access-token": Sample('DRONE_TOKEN = "{a:32}"', 'DRONE_HOST = "{a:32}"'),
    "fastly-api-token": Sample('FASTLY_API_TOKEN = "{w:32}"', 'FASTLY_HOST = "{w:32}"'),
    "gitter-access-token": Sample('GITTER_API_TOKEN = "{h:40}"', 'GITTER_HOST = "{h:40}"'),
    "intercom-api-key": Sample('INTERCOM_API_TOKEN = "{w:60}"', 'INTERCOM_HOST = "{w:60}"'),
    "launchdarkly-access-token": Sample('LAUNCHDARKLY_API_TOKEN = "api-{uuid}"', 'LAUNCHDARKLY_HOST = "api-{uuid}"'),
    "mattermost-access-token": Sample('MATTERMOST_API_TOKEN = "{x:26}"', 'MATTERMOST_HOST = "{x:26}"'),
    "sumologic-access-key": Sample('SUMO_API_TOKEN = "{a:64}"', 'SUMO_HOST = "{a:64}"'),
    "trello-api-token": Sample('TRELLO_API_TOKEN = "ATTA{a:68}"', 'TRELLO_HOST = "ATTA{a:68}"'),
    "twitch-api-token": Sample('TWITCH_API_TOKEN = "{x:30}"', 'TWITCH_HOST = "{x:30}"'),
    "twitter-bearer-token": Sample(
        'TWITTER_BEARER_TOKEN = "AAAAAAAAAAAAAAAAAAAAAA{a:90}"', 'TWITTER_HOST = "AAAAAAAAAAAAAAAAAAAAAA{a:90}"'
    ),
    "zendesk-secret-key": Sample('ZENDESK_API_TOKEN = "{a:40}"', 'ZENDESK_HOST = "{a:40}"'),
    "linear-client-secret": Sample('LINEAR_SECRET = "{h:32}"', 'LINEAR_HOST = "{h:32}"'),
    "alibaba-secret-key": Sample('ALIBABA_SECRET = "{a:30}"', 'ALIBABA_HOST = "{a:30}"'),
    "sendbird-access-token": Sample('SENDBIRD_API_TOKEN = "{h:40}"', 'SENDBIRD_HOST = "{h:40}"'),
    "meraki-api-key": Sample('MERAKI_API_TOKEN = "{h:40}"', 'MERAKI_HOST = "{h:40}"'),
    "maxmind-license-key": Sample('MAXMIND_LICENSE_KEY = "{a:6}_{a:29}_mmk"', 'MAXMIND_HOST = "{a:6}_{a:29}_mmk"'),
    "netlify-access-token": Sample('nl = "nfp_{a:36}"', 'nl = "nfp_{a:20}"'),
    "django-insecure-secret-key": Sample(
        'SECRET_KEY = "django-insecure-{a:50}"', 'SETTINGS_NOTE = "django-insecure-{a:20}"'
    ),
    # more providers: the rest of the gitleaks checklist
    "authress-service-client-access-key": Sample(
        'AUTHRESS_ACCESS_KEY = "sc_{x:16}.{x:6}.acc_{x:14}.{b:64}"', 'AUTHRESS_CLIENT = "sc_{x:16}.{x:6}.acc_{x:14}"'
    ),
    "beamer-api-key": Sample('BEAMER_API_KEY = "b_{w:44}"', 'BEAMER_HOST = "b_{w:44}"'),
    "bittrex-api-key": Sample('BITTREX_API_SECRET = "{h:32}"', 'BITTREX_HOST = "{h:32}"'),
    "castai-api-key": Sample('cast = "castai_v1_{h:64}_{h:8}"', 'cast = "castai_v2_{h:64}_{h:8}"'),
    "chargebee-api-key": Sample('CHARGEBEE_API_KEY = "live_{a:32}"', 'CHARGEBEE_SITE = "live_{a:32}"'),
    "chief-tools-token": Sample('chief = "ctp_{a:36}"', 'chief = "ctp_{a:20}"'),
    "clickhouse-cloud-api-secret-key": Sample('ch = "4b1d{a:38}"', 'ch = "4b1d{h:38}"'),
    "coinbase-api-secret": Sample('COINBASE_API_SECRET = "{a:32}"', 'COINBASE_HOST = "{a:32}"'),
    "etsy-api-key": Sample('ETSY_API_KEY = "{x:24}"', 'ETSY_HOST = "{x:24}"'),
    "finicity-api-credential": Sample('FINICITY_APP_KEY = "{h:32}"', 'FINICITY_HOST = "{h:32}"'),
    "finnhub-api-key": Sample('FINNHUB_API_KEY = "{x:20}"', 'FINNHUB_HOST = "{x:20}"'),
    "flickr-api-key": Sample('FLICKR_API_KEY = "{h:32}"', 'FLICKR_HOST = "{h:32}"'),
    "freemius-secret-key": Sample("'secret_key' => 'sk_{a:29}',", "'public_key' => 'pk_{h:29}',"),
    "freshbooks-access-token": Sample('FRESHBOOKS_ACCESS_TOKEN = "{h:64}"', 'FRESHBOOKS_HOST = "{h:64}"'),
    "gocardless-access-token": Sample('GOCARDLESS_ACCESS_TOKEN = "live_{w:40}"', 'GOCARDLESS_HOST = "live_{w:40}"'),
    "jfrog-access-token": Sample(
        'jf = "eyJ2ZXIiOiIyIiwidHlwIjoiSldUIiwiYWxnIjoiUlMyNTYiLCJraWQiOi{w:43}.eyJ{w:100}.{w:86}"',
        'jf = "eyJ2ZXIiOiIyIiwidHlwIjoiSldUIiwiYWxnIjoiUlMyNTYiLCJraWQiOi{w:43}"',
    ),
    "kraken-api-key": Sample('KRAKEN_API_SECRET = "{b:86}=="', 'KRAKEN_HOST = "{b:86}=="'),
    "lob-api-key": Sample('LOB_API_KEY = "live_{h:35}"', 'LOB_HOST = "live_{h:35}"'),
    "looker-client-secret": Sample('LOOKERSDK_CLIENT_SECRET = "{a:24}"', 'LOOKERSDK_BASE_URL = "{a:24}"'),
    "messagebird-api-key": Sample('MESSAGEBIRD_ACCESS_KEY = "{a:25}"', 'MESSAGEBIRD_ORIGINATOR = "{a:25}"'),
    "nytimes-api-key": Sample('NYT_API_KEY = "{a:32}"', 'NYT_SECTION = "{a:32}"'),
    "privateai-api-key": Sample('PRIVATE_AI_API_KEY = "{x:32}"', 'PRIVATE_AI_HOST = "{x:32}"'),
    "rapidapi-key": Sample("headers = {{'X-RapidAPI-Key': '{x:50}'}}", "headers = {{'X-RapidAPI-Host': '{x:50}'}}"),
    "travisci-access-token": Sample('TRAVIS_API_TOKEN = "{a:22}"', 'TRAVIS_BRANCH = "{a:22}"'),
    # keys, tokens, formats
    "private-key-rsa": Sample(
        _pem("RSA PRIVATE KEY"), "-----BEGIN RSA PRIVATE KEY-----\n...\n-----END RSA PRIVATE KEY-----"
    ),
    "private-key-ec": Sample(
        _pem("EC PRIVATE KEY"), "-----BEGIN EC PRIVATE KEY-----\n<key>\n-----END EC PRIVATE KEY-----"
    ),
    "private-key-openssh": Sample(_pem("OPENSSH PRIVATE KEY"), "-----BEGIN OPENSSH PUBLIC KEY-----\n{pem:4}"),
    "private-key-dsa": Sample(
        _pem("DSA PRIVATE KEY"), "-----BEGIN DSA PRIVATE KEY-----\n-----END DSA PRIVATE KEY-----"
    ),
    "private-key-pgp": Sample(_pem("PGP PRIVATE KEY BLOCK"), _pem("PGP PUBLIC KEY BLOCK")),
    "private-key-pkcs8": Sample(_pem("PRIVATE KEY"), _pem("PUBLIC KEY")),
    "age-secret-key": Sample("AGE-SECRET-KEY-1{c:58}", "AGE-SECRET-KEY-1{c:30}"),
    "jwt": Sample('auth = "eyJ{w:20}.eyJ{w:40}.{w:43}"', 'auth = "eyJ{w:20}.eyJ{w:40}"'),
    # database URLs with passwords
    "postgres-url-password": Sample(
        'DATABASE_URL = "postgresql+asyncpg://app:{a:16}@db.internal:5432/app"',
        'DATABASE_URL = "postgresql+asyncpg://app:password@localhost:5432/app"',
    ),
    "mysql-url-password": Sample('db = "mysql://app:{a:16}@db.internal/app"', 'db = "mysql://root:root@localhost/app"'),
    "mongodb-url-password": Sample(
        'db = "mongodb+srv://app:{a:16}@cluster0.example.net/app"',
        'db = "mongodb+srv://app:${{MONGO_PW}}@cluster0/app"',
    ),
    "redis-url-password": Sample(
        'cache = "redis://:{a:16}@cache.internal:6379/0"', 'cache = "redis://cache.internal:6379/0"'
    ),
    "amqp-url-password": Sample(
        'broker = "amqp://app:{a:16}@mq.internal:5672//"', 'broker = "amqp://guest:guest@localhost:5672//"'
    ),
    # generic assignments
    "generic-password": Sample('db_password = "{a:16}"', 'db_password = "changeme"'),
    "generic-secret": Sample('client_secret = "{a:24}"', 'client_secret = "${{CLIENT_SECRET}}"'),
    "generic-token": Sample('auth_token = "{a:32}"', 'auth_token = "{{{{ auth_token }}}}"'),
    "generic-api-key": Sample('api_key = "{a:32}"', 'api_key = "<your-api-key>"'),
    "generic-access-key": Sample('storage_access_key = "{a:32}"', 'access_key_id = "{U:20}"'),
    "generic-private-key": Sample('wallet_private_key = "{a:44}"', 'private_key_path = "~/.ssh/id_ed25519"'),
    "generic-credentials": Sample("credentials: {a:28}", 'credentials_file = "service-account-2.json"'),
    "generic-auth": Sample("_auth={a:40}", "_auth=${{NPM_AUTH}}"),
    "generic-set-property": Sample(
        'System.setProperty("db.password", "{a:20}");', 'System.setProperty("db.password", System.getenv("DB_PW"));'
    ),
}
