"""NUL (and other control characters where they make no sense) in any text input is a 422
problem, never a 500 (PostgreSQL's text cannot hold NUL: each of these was a 500 there)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from codepulse.text import json_has_nul, url_control_character
from tests.factories import MakeOrg, MakeUser

PASSWORD = "correct-horse-battery-staple-41"
NOW = "2026-11-23T09:12:44+00:00"


@dataclass(frozen=True)
class Case:
    method: str
    url: str
    body: Any = None
    signed_in: bool = True


def _record(**fields: Any) -> dict[str, Any]:
    return {
        "source": "claude-code",
        "message_id": "msg_1",
        "model": "claude-sonnet-4-5",
        "timestamp": NOW,
        "input_tokens": 1,
        "output_tokens": 2,
        **fields,
    }


def _sync(client: dict[str, Any] | None = None, machine_id: str = "machine-1", **record: Any) -> dict[str, Any]:
    return {
        "client": client or {"name": "codepulse-cli", "version": "1.0"},
        "machine_id": machine_id,
        "records": [_record(**record)],
    }


def _burntop(**message: Any) -> dict[str, Any]:
    fields = {"id": "msg_1", "timestamp": NOW, "model": "claude-sonnet-4-5", "inputTokens": 1, "outputTokens": 2}
    return {"version": "2.0.0", "client": "burntop-cli", "source": "claude-code", "messages": [{**fields, **message}]}


REGISTER = {"email": "nul@example.com", "username": "nul-user", "name": "Nul", "password": PASSWORD}
API = "/api/v1"
CASES: dict[str, Case] = {
    "login.login": Case("POST", f"{API}/auth/login", {"login": "ada\x00", "password": PASSWORD}, signed_in=False),
    "login.password": Case("POST", f"{API}/auth/login", {"login": "ada", "password": "pw\x00" + PASSWORD}, False),
    "register.email": Case("POST", f"{API}/auth/register", {**REGISTER, "email": "n\x00ul@example.com"}, False),
    "register.username": Case("POST", f"{API}/auth/register", {**REGISTER, "username": "nul\x00user"}, False),
    "register.name": Case("POST", f"{API}/auth/register", {**REGISTER, "name": "N\x00ul"}, False),
    "register.password": Case("POST", f"{API}/auth/register", {**REGISTER, "password": PASSWORD + "\x00"}, False),
    "profile.name": Case("PATCH", f"{API}/users/me", {"name": "Ada\x00"}),
    "profile.timezone": Case("PATCH", f"{API}/users/me", {"timezone": "Europe/Paris\x00"}),
    "profile.avatar_url": Case("PATCH", f"{API}/users/me", {"avatar_url": "https://a.example/\x00.png"}),
    "token.name": Case("POST", f"{API}/auth/tokens", {"name": "laptop\x00"}),
    "verify_email.token": Case("POST", f"{API}/auth/verify-email", {"token": "abc\x00def"}),
    "org.create.name": Case("POST", f"{API}/orgs", {"name": "Acme\x00", "slug": "acme-nul"}),
    "org.update.name": Case("PATCH", f"{API}/orgs/{{org}}", {"name": "Acme\x00"}),
    "query.action": Case("GET", f"{API}/orgs/{{org}}/audit-log?action=member.%00"),
    "query.q": Case("GET", f"{API}/orgs/{{org}}/repositories?q=%00"),
    "path.org": Case("GET", f"{API}/orgs/ac%00me"),
    "path.username": Case("GET", f"{API}/users/ad%00a/stats"),
    "path.model": Case("GET", f"{API}/admin/pricing/claude%00"),
    "repository.name": Case(
        "POST", f"{API}/orgs/{{org}}/repositories", {"clone_url": "https://github.com/a/b", "name": "b\x00"}
    ),
    "sync.message_id": Case("POST", f"{API}/sync", _sync(message_id="msg\x00")),
    "sync.machine_id": Case("POST", f"{API}/sync", _sync(machine_id="machine\x00")),
    "sync.client.name": Case("POST", f"{API}/sync", _sync(client={"name": "cli\x00", "version": "1"})),
    "sync.model": Case("POST", f"{API}/sync", _sync(model="claude\x00")),
    "burntop.id": Case("POST", f"{API}/sync", _burntop(id="msg\x00")),
    "burntop.model": Case("POST", f"{API}/sync", _burntop(model="claude\x00")),
}


@pytest.mark.parametrize("name", list(CASES))
async def test_nul_in_a_text_input_is_a_422_problem(
    client: httpx.AsyncClient, make_user: MakeUser, make_org: MakeOrg, name: str
) -> None:
    case = CASES[name]
    ada = await make_user("ada")
    org = await make_org(ada, slug="acme")
    headers = ada.headers if case.signed_in else {}
    content = json.dumps(case.body).encode() if case.body is not None else None
    response = await client.request(
        case.method,
        case.url.replace("{org}", org.slug),
        content=content,
        headers={**headers, "content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "validation_failed"
    assert body["errors"]


@pytest.mark.parametrize(
    ("url", "field"),
    [
        (f"{API}/orgs/{{org}}/repositories?q=a%0Ab", "query.q"),
        (f"{API}/orgs/{{org}}/audit-log?limit=5&action=%7F", "query.action"),
        (f"{API}/orgs/ac%1Bme", "path"),
    ],
)
async def test_control_characters_in_urls_are_refused_before_any_route_runs(
    client: httpx.AsyncClient, make_user: MakeUser, make_org: MakeOrg, url: str, field: str
) -> None:
    ada = await make_user("ada")
    org = await make_org(ada, slug="acme")
    response = await client.get(url.replace("{org}", org.slug), headers=ada.headers)
    assert response.status_code == 422
    assert response.headers["x-request-id"]
    assert response.headers["x-content-type-options"] == "nosniff"
    [error] = response.json()["errors"]
    assert (error["field"], error["code"]) == (field, "control_character")


async def test_single_line_fields_refuse_line_breaks_and_prose_keeps_them(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    ada = await make_user("ada")
    response = await client.patch(f"{API}/users/me", json={"name": "Ada\nLovelace"}, headers=ada.headers)
    assert response.status_code == 422
    assert [(e["field"], e["code"]) for e in response.json()["errors"]] == [("body.name", "control_character")]
    # Plain and non-ASCII text is untouched.
    renamed = await client.patch(f"{API}/users/me", json={"name": "Ada Lovelace 名前 é"}, headers=ada.headers)
    assert renamed.status_code == 200
    assert renamed.json()["name"] == "Ada Lovelace 名前 é"


def test_url_check_is_exact() -> None:
    assert url_control_character("/api/v1/orgs/acme", b"/api/v1/orgs/acme", b"q=a%20b&x=%C3%A9") is None
    assert url_control_character("/api/v1/orgs/a\x00", b"/api/v1/orgs/a%00", b"") == "path"
    assert url_control_character("/a", None, b"x=1&%00=2") == "query.?"


def test_json_nul_check_is_exact() -> None:
    assert json_has_nul(json.dumps({"a": "x\x00"}).encode())
    assert json_has_nul(json.dumps({"k\x00": 1}).encode())
    assert not json_has_nul(json.dumps({"a": "\\u0000"}).encode())  # a backslash, then "u0000"
    assert json_has_nul(json.dumps({"a": "\\\x00"}).encode())  # a backslash, then NUL
    assert not json_has_nul(b'{"a": "plain"}')
