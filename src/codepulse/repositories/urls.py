"""Clone URLs: parsing, the canonical form, and the safety checks made before anything is cloned.

Two steps, because only the second needs the network:

- `parse_clone_url(raw, ...)` (pure): accepts `https://host[:port]/path` and SSH in both forms,
  `ssh://[user@]host[:port]/path` and scp-like `[user@]host:path`; refuses everything else with a
  `CloneUrlError` whose `code` says why (credentials in the URL, another scheme or a remote helper,
  an option-looking value, a malformed host or path). It derives the canonical URL.
- `check_host(url, ...)` (async): refuses hosts that are, or resolve to, anything but public
  unicast addresses (loopback, private, link-local, shared, reserved, multicast, cloud metadata),
  unless the host is in ALLOWED_GIT_HOSTS or ALLOW_LOCAL_REPOSITORIES is on. Known metadata
  endpoints are refused even then. DNS runs off the event loop with a timeout.

Canonical form (the identity of a repository, unique per organization): `https://<host>[:<port>]/<path>`
- host lower-cased, a trailing dot dropped, IPv6 in brackets; GitHub's, GitLab's and Bitbucket's
  SSH-over-443 hosts map to their main host; the port is kept only for https on a port other
  than 443 (an SSH port says nothing about which repository it is);
- path without leading or trailing slashes and without a trailing `.git`; lower-cased on hosts
  whose paths are case-insensitive (github.com, gitlab.com, bitbucket.org and GITHUB_URL's host);
  case is kept elsewhere (a plain git server's paths are file names).

So `https://github.com/A/B.git`, `git@github.com:a/b`, `ssh://git@github.com/a/b` and
`https://github.com/a/b/` are all `https://github.com/a/b`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], Awaitable[list[str]]]

MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT_SECONDS = 5.0

CASE_INSENSITIVE_HOSTS = frozenset({"github.com", "gitlab.com", "bitbucket.org"})
# SSH over port 443 is served under another name; the repository is the same.
HOST_ALIASES = {
    "ssh.github.com": "github.com",
    "altssh.gitlab.com": "gitlab.com",
    "altssh.bitbucket.org": "bitbucket.org",
}
PROVIDER_HOSTS = {"github.com": "github", "gitlab.com": "gitlab", "bitbucket.org": "bitbucket"}

# Cloud instance metadata endpoints: refused whatever the settings say.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
    )
)
METADATA_HOSTS = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal"}
)
# Not public, yet not all flagged by `ipaddress` on every Python version.
_NON_PUBLIC_NETWORKS = tuple(
    ipaddress.ip_network(network)
    for network in ("100.64.0.0/10", "192.0.0.0/24", "198.18.0.0/15", "fec0::/10", "64:ff9b:1::/48")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_REMOTE_HELPER = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")
_SCP = re.compile(r"^(?:(?P<user>[^@/:\[\]]+)@)?(?P<host>\[[^\]/]*\]|[^:/\[\]@]+):(?P<path>.*)$")
_SCP_WITH_PASSWORD = re.compile(r"^[^@/]*:[^@/]*@[^/]*:")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# inet_aton's spellings of an IPv4 address ("127.1", "0x7f000001", "017700000001"), which getaddrinfo accepts.
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_PATH_SEGMENT = re.compile(r"^[A-Za-z0-9._~!$&'()*+,;=:@%-]+$")
_GITHUB_OWNER = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$")
_GITHUB_REPO = re.compile(r"^[A-Za-z0-9._-]{1,100}$")

CONNECT_GITHUB_HINT = (
    "For a private GitHub repository, link your GitHub account and import it from "
    "/api/v1/orgs/{org}/github/repositories instead: codepulse clones it with your token, which is "
    "never stored in a URL."
)


class CloneUrlError(ValueError):
    """Why a clone URL is refused: `code` for clients, the message for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class CloneUrl:
    url: str
    """The URL as given (surrounding whitespace removed): what `git clone` is handed."""
    scheme: Literal["https", "ssh", "file"]
    """file: a local repository, only with ALLOW_LOCAL_REPOSITORIES (development and tests)."""
    host: str
    """Lower-case, without brackets for IPv6, trailing dot removed."""
    port: int | None
    path: str
    """Without leading/trailing slashes and `.git`; case as given."""
    canonical: str
    ip: IPAddress | None = field(default=None)
    """The host itself when it is an IP literal."""


def _error(code: str, message: str) -> CloneUrlError:
    return CloneUrlError(code, message)


def _invalid(message: str) -> CloneUrlError:
    return _error("invalid_clone_url", message)


def _credentials() -> CloneUrlError:
    return _error(
        "credentials_in_url",
        "Remove the credentials from the URL: tokens and passwords in clone URLs would be stored and logged. "
        + CONNECT_GITHUB_HINT,
    )


def _parse_host(raw: str) -> tuple[str, IPAddress | None]:
    if raw.startswith("[") and raw.endswith("]"):
        inner = raw[1:-1]
        if "%" in inner:
            raise _invalid("IPv6 zone identifiers are not accepted in a clone URL.")
        try:
            return inner.lower(), ipaddress.IPv6Address(inner)
        except ValueError:
            raise _invalid(f"{raw!r} is not an IPv6 address.") from None
    host = raw.lower().removesuffix(".")
    if not host:
        raise _invalid("The URL has no host.")
    if host.startswith("-"):
        raise _error("option_like_url", "A host cannot start with '-' (it would read as a command option).")
    try:
        return host, ipaddress.IPv4Address(host)
    except ValueError:
        pass
    labels = host.split(".")
    if len(host) > 253 or not all(_LABEL.match(label) for label in labels):
        raise _invalid(f"{raw!r} is not a valid host name.")
    if all(_NUMERIC_LABEL.match(label) for label in labels):
        raise _invalid(f"{raw!r} is not a valid host: write IPv4 addresses as four decimal numbers.")
    return host, None


def _parse_port(raw: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise _invalid(f"{raw!r} is not a valid port.")
    return int(raw)


def _split_host_port(hostport: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        end = hostport.find("]")
        if end == -1:
            raise _invalid("Unclosed '[' in the host.")
        rest = hostport[end + 1 :]
        if rest and not rest.startswith(":"):
            raise _invalid("Unexpected characters after the IPv6 address.")
        return hostport[: end + 1], _parse_port(rest[1:]) if rest else None
    host, colon, port = hostport.partition(":")
    return host, _parse_port(port) if colon else None


def _clean_path(raw: str) -> str:
    path = raw.strip("/")
    if path.lower().endswith(".git"):
        path = path[:-4].rstrip("/")
    if not path:
        raise _invalid("The URL names no repository path.")
    segments = path.split("/")
    for segment in segments:
        decoded = unquote(segment)
        if decoded in ("", ".", "..") or "/" in decoded or "\\" in decoded:
            raise _invalid("The path has an empty, '.' or '..' segment (or an encoded slash).")
        if not _PATH_SEGMENT.match(segment):
            raise _invalid(f"The path segment {segment!r} has characters a clone URL cannot hold.")
    if path.startswith("-"):
        raise _error("option_like_url", "A path cannot start with '-' (it would read as a command option).")
    return path


def canonical_host(host: str) -> str:
    return HOST_ALIASES.get(host, host)


def provider_for_host(host: str, github_hosts: Collection[str] = ()) -> str:
    """The provider a host belongs to: github, gitlab, bitbucket, else plain git."""
    host = canonical_host(host)
    if host in github_hosts:
        return "github"
    return PROVIDER_HOSTS.get(host, "git")


def parse_clone_url(raw: str, *, case_insensitive_hosts: Collection[str] = CASE_INSENSITIVE_HOSTS) -> CloneUrl:
    """A clone URL git may be given, with its canonical form; raises CloneUrlError otherwise."""
    url = raw.strip()
    scheme_match = _SCHEME.match(url)
    _check_characters(url, scheme_match)
    if scheme_match is not None:
        scheme, host_raw, port, raw_path = _split_url(url, scheme_match)
    else:
        scheme, host_raw, port, raw_path = _split_scp_like(url)
    host, ip = _parse_host(host_raw)
    path = _clean_path(raw_path)
    identity_host = canonical_host(host)
    canonical_path = path.lower() if identity_host in case_insensitive_hosts else path
    if identity_host == "github.com":
        segments = path.split("/")
        if len(segments) != 2 or not _GITHUB_OWNER.match(segments[0]) or not _GITHUB_REPO.match(segments[1]):
            raise _invalid("A GitHub repository URL looks like https://github.com/<owner>/<repository>.")
    display_host = f"[{host}]" if isinstance(ip, ipaddress.IPv6Address) else identity_host
    port_part = f":{port}" if scheme == "https" and port not in (None, 443) else ""
    canonical = f"https://{display_host}{port_part}/{canonical_path}"
    if len(canonical) > MAX_URL_LENGTH:  # an scp-like form grows by a few characters
        raise _invalid(f"The clone URL is longer than {MAX_URL_LENGTH} characters.")
    return CloneUrl(url=url, scheme=scheme, host=host, port=port, path=path, canonical=canonical, ip=ip)


def _check_characters(url: str, scheme_match: re.Match[str] | None) -> None:
    """The checks on the whole string: length, option-like, scheme, characters."""
    if not url:
        raise _invalid("The clone URL is empty.")
    if len(url) > MAX_URL_LENGTH:
        raise _invalid(f"The clone URL is longer than {MAX_URL_LENGTH} characters.")
    if url.startswith("-"):
        raise _error("option_like_url", "A clone URL cannot start with '-' (it would read as a command option).")
    if _REMOTE_HELPER.match(url):
        raise _error("unsupported_scheme", "Git remote helpers (transport::address) are not accepted.")
    if scheme_match is not None and scheme_match.group(1).lower() not in ("https", "ssh"):
        raise _error(
            "unsupported_scheme",
            f"{scheme_match.group(1).lower()}:// URLs are not accepted: use https:// or SSH (git@host:path).",
        )
    if not url.isascii() or any(ch <= " " or ch == "\x7f" for ch in url):
        raise _invalid("The clone URL contains spaces, control or non-ASCII characters (percent-encode them).")
    if "\\" in url:
        raise _invalid("Backslashes are not accepted in a clone URL.")


_Parts = tuple[Literal["https", "ssh"], str, int | None, str]
"""scheme, raw host, port, raw path"""


def _split_url(url: str, scheme_match: re.Match[str]) -> _Parts:
    """An https:// or ssh:// URL."""
    scheme: Literal["https", "ssh"] = "https" if scheme_match.group(1).lower() == "https" else "ssh"
    try:
        parts = urlsplit(url)
    except ValueError:
        raise _invalid("The clone URL is malformed.") from None
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise _invalid("A clone URL has no query string or fragment.")
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if at:
        if scheme == "https" or ":" in userinfo:
            raise _credentials()
        if not _USER.match(userinfo):
            raise _error("option_like_url", f"{userinfo!r} is not a valid SSH user name.")
    host_raw, port = _split_host_port(hostport)
    if not parts.path.startswith("/"):
        raise _invalid("The URL names no repository path.")
    return scheme, host_raw, port, parts.path


def _split_scp_like(url: str) -> _Parts:
    """An SSH address in scp form: [user@]host:path."""
    if _SCP_WITH_PASSWORD.match(url):
        raise _credentials()
    scp = _SCP.match(url)
    if scp is None or "://" in url:
        raise _error(
            "unsupported_scheme",
            "Use an https:// URL or an SSH address (git@host:owner/repo.git); local paths are not accepted.",
        )
    user = scp.group("user")
    if user is not None and not _USER.match(user):
        raise _error("option_like_url", f"{user!r} is not a valid SSH user name.")
    raw_path = scp.group("path")
    if "?" in raw_path or "#" in raw_path:
        raise _invalid("A clone URL has no query string or fragment.")
    return "ssh", scp.group("host"), None, raw_path


# --- host safety ---------------------------------------------------------------------------------


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, 6to4, Teredo client, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_metadata_address(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return embedded in METADATA_ADDRESSES
    return ip in METADATA_ADDRESSES


def is_public_address(ip: IPAddress) -> bool:
    """Only global unicast addresses: not loopback, private, link-local, shared (CGNAT),
    reserved, multicast, unspecified, documentation, or an IPv6 form of one of those."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return is_public_address(embedded)
    if ip in METADATA_ADDRESSES or any(ip in network for network in _NON_PUBLIC_NETWORKS):
        return False
    flags = (ip.is_loopback, ip.is_private, ip.is_link_local, ip.is_multicast, ip.is_reserved, ip.is_unspecified)
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return False
    return ip.is_global and not any(flags)


async def system_resolver(host: str) -> list[str]:
    """The host's addresses from the system resolver (getaddrinfo, in the loop's thread pool)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]).split("%", 1)[0] for info in infos]


@dataclass(frozen=True)
class HostCheck:
    """How a host passed: the addresses it resolved to (empty when the check was waived)."""

    addresses: tuple[str, ...]
    waived: bool


def _forbidden(host: str) -> CloneUrlError:
    return _error(
        "forbidden_host",
        f"{host} is or resolves to a loopback, private, link-local or otherwise non-public address; "
        "codepulse only clones from public hosts (an operator can allow internal hosts with ALLOWED_GIT_HOSTS).",
    )


def _addresses(values: Iterable[str]) -> list[IPAddress]:
    result: list[IPAddress] = []
    for value in values:
        try:
            result.append(ipaddress.ip_address(value))
        except ValueError:
            continue
    return result


async def check_host(
    url: CloneUrl,
    *,
    allowed_hosts: Collection[str] = (),
    allow_local: bool = False,
    resolver: Resolver = system_resolver,
    resolve_seconds: float = RESOLVE_TIMEOUT_SECONDS,
) -> HostCheck:
    """Refuse a host that is, or resolves to, a non-public address (CloneUrlError `forbidden_host`,
    or `unresolvable_host` when DNS fails or times out). Cloud metadata endpoints are refused
    even when the check is otherwise waived."""
    host = url.host
    if host in METADATA_HOSTS or (url.ip is not None and is_metadata_address(url.ip)):
        raise _forbidden(host)
    if allow_local or host in allowed_hosts:
        return HostCheck(addresses=(), waived=True)
    if url.ip is not None:
        if not is_public_address(url.ip):
            raise _forbidden(host)
        return HostCheck(addresses=(str(url.ip),), waived=False)
    try:
        async with asyncio.timeout(resolve_seconds):
            resolved = await resolver(host)
    except (OSError, UnicodeError, TimeoutError):
        resolved = []
    addresses = _addresses(resolved)
    if not addresses:
        raise _error("unresolvable_host", f"{host} could not be resolved; check the host name.")
    # Every address must be public: git may connect to any of them.
    if not all(is_public_address(address) for address in addresses):
        raise _forbidden(host)
    return HostCheck(addresses=tuple(str(address) for address in addresses), waived=False)
