"""Clone URL parsing, canonical forms and host safety, without HTTP."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import pytest

from codepulse.config import Settings
from codepulse.errors import ValidationFailed
from codepulse.repositories.service import validate_clone_url
from codepulse.repositories.urls import (
    CloneUrlError,
    check_host,
    is_public_address,
    parse_clone_url,
    provider_for_host,
    system_resolver,
)
from tests.repositories.conftest import FakeResolver


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/A/B.git",
        "https://github.com/a/b",
        "https://github.com/a/b/",
        "https://GitHub.com./a/B.git/",
        "https://github.com:443/a/b",
        "git@github.com:a/b",
        "git@github.com:A/B.git",
        "github.com:a/b.git",
        "ssh://git@github.com/a/b.git",
        "ssh://git@ssh.github.com:443/a/b",
        "  https://github.com/a/b  ",
    ],
)
def test_one_github_repository_many_spellings(url: str) -> None:
    assert parse_clone_url(url).canonical == "https://github.com/a/b"


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        # Case is kept where paths are file names.
        ("https://git.example.org/Team/App.git", "https://git.example.org/Team/App"),
        ("git@git.example.org:Team/App", "https://git.example.org/Team/App"),
        ("ssh://git@git.example.org:2222/srv/Team/App.git", "https://git.example.org/srv/Team/App"),
        ("https://git.example.org:8443/Team/App", "https://git.example.org:8443/Team/App"),
        ("https://gitlab.com/Group/Sub/Project.git", "https://gitlab.com/group/sub/project"),
        ("git@bitbucket.org:Team/Repo.git", "https://bitbucket.org/team/repo"),
        ("https://[2606:4700::1111]/x/y.git", "https://[2606:4700::1111]/x/y"),
        ("git@[2606:4700::1111]:x/y", "https://[2606:4700::1111]/x/y"),
        ("https://140.82.121.4/octo/engine.git", "https://140.82.121.4/octo/engine"),
    ],
)
def test_canonical_forms(url: str, canonical: str) -> None:
    assert parse_clone_url(url).canonical == canonical


def test_case_insensitive_hosts_are_configurable() -> None:
    # GitHub Enterprise: the service adds GITHUB_URL's host.
    url = parse_clone_url("https://ghe.corp.example/Octo/Engine", case_insensitive_hosts={"ghe.corp.example"})
    assert url.canonical == "https://ghe.corp.example/octo/engine"
    assert provider_for_host("ghe.corp.example", {"ghe.corp.example"}) == "github"


@pytest.mark.parametrize(
    ("host", "provider"),
    [("github.com", "github"), ("ssh.github.com", "github"), ("gitlab.com", "gitlab"),
     ("bitbucket.org", "bitbucket"), ("git.example.org", "git")],
)  # fmt: skip
def test_provider_from_host(host: str, provider: str) -> None:
    assert provider_for_host(host) == provider


@pytest.mark.parametrize(
    ("url", "code"),
    [
        # Credentials: the user is told to connect GitHub instead.
        ("https://ghp_abc123@github.com/a/b.git", "credentials_in_url"),
        ("https://x-access-token:ghp_abc123@github.com/a/b.git", "credentials_in_url"),
        ("https://user@git.example.org/a/b", "credentials_in_url"),
        ("ssh://git:secret@git.example.org/a/b", "credentials_in_url"),
        ("git:secret@git.example.org:a/b", "credentials_in_url"),
        # Other schemes, remote helpers and local paths.
        ("file:///etc/passwd", "unsupported_scheme"),
        ("FILE:///srv/repo.git", "unsupported_scheme"),
        ("git://github.com/a/b.git", "unsupported_scheme"),
        ("http://github.com/a/b.git", "unsupported_scheme"),
        ("ftp://git.example.org/a/b", "unsupported_scheme"),
        ("ext::sh%20-c%20touch%20/tmp/pwned", "unsupported_scheme"),
        ("fd::17/a", "unsupported_scheme"),
        ("/srv/git/repo.git", "unsupported_scheme"),
        ("./repo", "unsupported_scheme"),
        ("repo.git", "unsupported_scheme"),
        # Values that read as options of git or ssh.
        ("-u/tmp/x", "option_like_url"),
        ("--upload-pack=touch /tmp/pwned", "option_like_url"),
        ("--upload-pack=touch", "option_like_url"),
        ("ssh://-oProxyCommand=touch/a/b", "option_like_url"),
        ("-oProxyCommand=touch@host:a/b", "option_like_url"),
        ("git@-oProxyCommand=x:a/b", "option_like_url"),
        ("https://git.example.org/-x", "option_like_url"),
        # Malformed.
        ("", "invalid_clone_url"),
        ("https://github.com", "invalid_clone_url"),
        ("https://github.com/octo", "invalid_clone_url"),
        ("https://github.com/octo/engine/tree/main", "invalid_clone_url"),
        ("https://git.example.org/a/../b", "invalid_clone_url"),
        ("https://git.example.org/a//b", "invalid_clone_url"),
        ("https://git.example.org/a/%2e%2e/b", "invalid_clone_url"),
        ("https://git.example.org/a%2Fb/c", "invalid_clone_url"),
        ("https://git.example.org/a?ref=main", "invalid_clone_url"),
        ("https://git.example.org/a#main", "invalid_clone_url"),
        ("https://git.example.org/a b", "invalid_clone_url"),
        ("https://git.example.org/a\nb", "invalid_clone_url"),
        ("https://gït.example.org/a", "invalid_clone_url"),
        ("https://git.example.org\\@evil/a", "invalid_clone_url"),
        ("https://git.example.org:99999/a", "invalid_clone_url"),
        ("https://[::1/a", "invalid_clone_url"),
        ("https://[fe80::1%25eth0]/a", "invalid_clone_url"),
        ("https://under_score.example/a", "invalid_clone_url"),
        ("git@host:", "invalid_clone_url"),
        ("https://git.example.org/" + "a" * 2048, "invalid_clone_url"),
        ("git@git.example.org:" + "a" * 2027, "invalid_clone_url"),  # its canonical form is longer
        # inet_aton spellings of 127.0.0.1, which getaddrinfo would resolve.
        ("https://127.1/a", "invalid_clone_url"),
        ("https://2130706433/a", "invalid_clone_url"),
        ("https://0x7f000001/a", "invalid_clone_url"),
        ("https://0x7f.0.0.1/a", "invalid_clone_url"),
        ("https://017700000001/a", "invalid_clone_url"),
    ],
)
def test_refused_forms(url: str, code: str) -> None:
    with pytest.raises(CloneUrlError) as refused:
        parse_clone_url(url)
    assert refused.value.code == code


def test_credentials_error_points_to_github() -> None:
    with pytest.raises(CloneUrlError) as refused:
        parse_clone_url("https://ghp_secret@github.com/a/b.git")
    assert "link your GitHub account" in refused.value.message
    assert "ghp_secret" not in refused.value.message


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "127.8.9.10", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "169.254.1.1",
        "100.64.0.1", "100.100.100.200", "192.0.0.192", "0.0.0.0",  # noqa: S104
        "255.255.255.255", "224.0.0.1", "240.0.0.1",
        "198.18.0.1", "192.0.2.1", "0.1.2.3",
        "::1", "::", "fd00::1", "fd00:ec2::254", "fe80::1", "fec0::1", "ff02::1", "2001:db8::1",
        "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::127.0.0.1", "2002:7f00:1::1", "64:ff9b::a9fe:a9fe",
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo of 127.0.0.1
    ],
)  # fmt: skip
def test_non_public_addresses(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["140.82.121.4", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1"])
def test_public_addresses(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "url",
    ["https://127.0.0.1/a/b", "https://[::1]/a/b", "git@[::1]:a/b", "https://[fd00::1]/a/b", "https://10.0.0.8/a"],
)
async def test_ip_literals_are_checked_without_dns(url: str) -> None:
    resolver = FakeResolver()
    with pytest.raises(CloneUrlError) as refused:
        await check_host(parse_clone_url(url), resolver=resolver)
    assert refused.value.code == "forbidden_host"
    assert resolver.calls == []


async def test_every_resolved_address_must_be_public() -> None:
    resolver = FakeResolver()
    resolver.names["internal.example.org"] = ["10.0.0.5"]
    resolver.names["split.example.org"] = ["140.82.121.4", "192.168.0.10"]
    resolver.names["metadata.example.org"] = ["169.254.169.254"]
    for host in ("internal.example.org", "split.example.org", "metadata.example.org"):
        with pytest.raises(CloneUrlError) as refused:
            await check_host(parse_clone_url(f"https://{host}/a/b"), resolver=resolver)
        assert refused.value.code == "forbidden_host"
        assert "10.0.0.5" not in refused.value.message  # internal addresses are not echoed
    checked = await check_host(parse_clone_url("https://gitlab.com/a/b"), resolver=resolver)
    assert checked.addresses == ("172.65.251.78", "2606:4700:90:0:f22e:fbec:5bed:a9b9")


async def test_real_dns_localhost_resolves_to_loopback_and_is_refused() -> None:
    assert "127.0.0.1" in await system_resolver("localhost")
    for url in ("https://localhost/a/b.git", "git@localhost:a/b", "ssh://git@LOCALHOST./a/b"):
        with pytest.raises(CloneUrlError) as refused:
            await check_host(parse_clone_url(url))  # the production resolver
        assert refused.value.code == "forbidden_host"


async def test_unresolvable_and_slow_names() -> None:
    with pytest.raises(CloneUrlError) as refused:
        await check_host(parse_clone_url("https://nowhere.invalid/a/b"), resolver=FakeResolver())
    assert refused.value.code == "unresolvable_host"

    async def hanging(host: str) -> list[str]:
        await asyncio.Event().wait()  # never answers: only the check's own timeout ends it
        return []

    with pytest.raises(CloneUrlError) as slow:
        await check_host(parse_clone_url("https://slow.example.org/a/b"), resolver=hanging, resolve_seconds=0.05)
    assert slow.value.code == "unresolvable_host"

    async def broken(host: str) -> list[str]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    with pytest.raises(CloneUrlError):
        await check_host(parse_clone_url("https://flaky.example.org/a/b"), resolver=broken)


async def test_allowed_hosts_and_local_switch_waive_the_address_check() -> None:
    resolver = FakeResolver()
    resolver.names["git.corp.example"] = ["10.0.0.12"]
    corp = parse_clone_url("https://git.corp.example/team/app.git")
    with pytest.raises(CloneUrlError):
        await check_host(corp, resolver=resolver)
    assert (await check_host(corp, allowed_hosts=["git.corp.example"], resolver=resolver)).waived
    assert (await check_host(parse_clone_url("https://10.0.0.12/a"), allowed_hosts=["10.0.0.12"])).waived
    assert (await check_host(parse_clone_url("https://[::1]/a"), allowed_hosts=["::1"])).waived
    local = await check_host(parse_clone_url("https://localhost/a/b"), allow_local=True, resolver=resolver)
    assert local.waived
    assert resolver.calls == ["git.corp.example"]  # a waived check resolves nothing


@pytest.mark.parametrize(
    "url",
    ["https://169.254.169.254/latest/meta-data", "https://metadata.google.internal/a/b", "https://[fd00:ec2::254]/a"],
)
async def test_metadata_endpoints_are_refused_even_when_local_is_allowed(url: str) -> None:
    parsed = parse_clone_url(url)
    with pytest.raises(CloneUrlError) as refused:
        await check_host(parsed, allow_local=True, allowed_hosts=[parsed.host])
    assert refused.value.code == "forbidden_host"


async def test_validate_clone_url_for_the_scans_domain(settings: Settings) -> None:
    resolver = FakeResolver()
    checked = await validate_clone_url("git@github.com:Octo/Engine.git", settings, resolver=resolver)
    assert (checked.url.canonical, checked.addresses) == ("https://github.com/octo/engine", ("140.82.121.4",))
    with pytest.raises(ValidationFailed) as refused:
        await validate_clone_url("https://localhost/a/b", settings)
    assert [(e.field, e.code) for e in refused.value.errors] == [("clone_url", "forbidden_host")]
