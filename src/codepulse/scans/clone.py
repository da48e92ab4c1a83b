"""Cloning a repository for a scan, and asking a remote which commit a ref points at.

`clone(url, ref, dest, ...)`: a shallow, single-branch, tag-less clone without a checkout (the
files are read from git's object store with `git cat-file --batch`, so nothing in the tree, not
a symlink, a case collision or a filter, ever touches the file system). Hardening:

- protocol allow-list through config (`protocol.allow=never`, then https and ssh, and file only
  when local repositories are allowed), hooks off (`core.hooksPath=/dev/null`), no submodules;
- an environment of its own: no system or global config, an isolated HOME and XDG config, no
  inherited `GIT_*` variables, `GIT_TERMINAL_PROMPT=0`, SSH in batch mode;
- a time limit (SCAN_CLONE_TIMEOUT_SECONDS; the whole process group is killed) and a size limit
  (SCAN_MAX_REPOSITORY_BYTES, watched while git downloads and checked again on the tree);
- a GitHub token goes in as an `http.<origin>/.extraHeader` config entry passed through the
  environment (GIT_CONFIG_COUNT/KEY/VALUE), scoped to the repository's origin: never in the URL,
  argv or a log line;
- with the addresses the URL's host was validated against, the connection is pinned to them, so
  DNS cannot change between the check and the clone: https through `http.curloptResolve`, SSH by
  telling ssh to connect to the first checked address (`-o HostName=<address>`) while it checks
  the host key under the URL's host name (`HostKeyAlias`, `CheckHostIP=no`);
- no HTTP redirects (`http.followRedirects=false`): a redirect would leave the checked, pinned
  host for one nobody checked (and curl would resolve it itself);
- errors say what failed, never what the remote answered (git's own message goes to the log
  only): a clone URL must not become a probe telling which hosts and ports answer.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import structlog

from codepulse.config import Settings
from codepulse.scans.errors import ScanFailure
from codepulse.scans.git import (
    GitResult,
    directory_size,
    git_environment,
    is_commit_sha,
    redact,
    rev_parse,
    run_git,
    too_large,
)
from codepulse.scans.scratch import scratch

log = structlog.get_logger("codepulse.scans")

_SCP_LIKE = re.compile(r"^(?:[^@/:\[\]]+@)?(?:\[[^\]/]*\]|[^:/\[\]@]+):")
_REF_NOT_FOUND = (
    "remote branch",
    "not found in upstream",
    "couldn't find remote ref",
    "could not find remote ref",
    "not our ref",
    "unadvertised object",
    "no such remote ref",
    "invalid refspec",
    "bad object",
)


def _check_ref(ref: str) -> None:
    if (
        not ref
        or len(ref) > 255
        or ref.startswith(("-", "/"))
        or ref.endswith(("/", ".", ".lock"))
        or ".." in ref
        or "@{" in ref
        or "//" in ref
        or any(ch <= " " or ch in "~^:?*[\\\x7f" for ch in ref)
    ):
        raise ScanFailure("invalid_ref", f"{ref!r} is not a valid branch, tag or commit name.")


def _scheme(url: str) -> str:
    """The git transport a URL uses: https, ssh, file (also for a local path), or another."""
    if "://" in url:
        return url.split("://", 1)[0].lower()
    if _SCP_LIKE.match(url) and not url.startswith(("/", ".")):
        return "ssh"
    return "file"


def _check_url(url: str, allow_local: bool) -> str:
    url = url.strip()
    if not url or url.startswith("-") or any(ch < " " or ch == "\x7f" for ch in url) or "::" in url.split("/")[0]:
        raise ScanFailure("clone_failed", "The clone URL is not acceptable.")
    scheme = _scheme(url)
    if scheme == "file":
        if not allow_local:
            raise ScanFailure("clone_failed", "Local repositories are not allowed (ALLOW_LOCAL_REPOSITORIES).")
        if "://" not in url:
            url = Path(url).resolve().as_uri()
    elif scheme not in ("https", "ssh"):
        raise ScanFailure("clone_failed", f"{scheme}:// URLs are not allowed: use https:// or SSH.")
    return url


def _origin(url: str) -> str | None:
    """`https://host[:port]/` for an https URL (the scope of the token header), else None."""
    if _scheme(url) != "https":
        return None
    parts = urlsplit(url)
    if not parts.hostname:
        return None
    return f"https://{parts.netloc.rpartition('@')[2]}/"


def _resolve_entry(url: str, addresses: Sequence[str]) -> str | None:
    """`host:port:addr[,addr]` for curl's resolve list, or None when it does not apply."""
    if not addresses or _scheme(url) != "https":
        return None
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        return None
    formatted: list[str] = []
    for address in addresses:
        ip = ipaddress.ip_address(address)  # raises on junk: never let a value inject options
        formatted.append(f"[{ip}]" if ip.version == 6 else str(ip))
    host_part = f"[{host}]" if ":" in host else host
    return f"{host_part}:{parts.port or 443}:{','.join(formatted)}"


def _ssh_host(url: str) -> str | None:
    """The host an SSH URL (ssh:// or scp-like) connects to, or None."""
    if _scheme(url) != "ssh":
        return None
    if "://" in url:
        return urlsplit(url).hostname
    match = _SCP_LIKE.match(url)
    if match is None:  # pragma: no cover - _scheme said scp-like
        return None
    host = match.group(0)[:-1].rpartition("@")[2]
    return host[1:-1] if host.startswith("[") else host.lower()


def _ssh_pin(url: str, addresses: Sequence[str]) -> list[str]:
    """ssh options that connect to the first checked address instead of resolving the host again,
    keeping the host name for the host key (known_hosts entries stay per name, not per address)."""
    host = _ssh_host(url)
    if not addresses or not host:
        return []
    address = str(ipaddress.ip_address(addresses[0]))  # raises on junk: never an injected option
    if not re.fullmatch(r"[A-Za-z0-9.:_-]+", host) or host.startswith("-"):
        raise ScanFailure("clone_failed", "The clone URL is not acceptable.")
    return ["-o", f"HostName={address}", "-o", f"HostKeyAlias={host}", "-o", "CheckHostIP=no"]


def _config_args(allow_file: bool) -> list[str]:
    config = [
        "http.followRedirects=false",
        "core.hooksPath=/dev/null",
        "core.fsmonitor=false",
        "core.askPass=",
        "credential.helper=",
        "protocol.allow=never",
        "protocol.https.allow=always",
        "protocol.ssh.allow=always",
        f"protocol.file.allow={'always' if allow_file else 'never'}",
        "submodule.recurse=false",
        "fetch.recurseSubmodules=false",
        "advice.detachedHead=false",
        "init.defaultBranch=main",
        "gc.auto=0",
        "maintenance.auto=false",
    ]
    args: list[str] = []
    for item in config:
        args += ["-c", item]
    return args


def _failure(result: GitResult, *, ref: str | None, secrets: Sequence[str]) -> ScanFailure:
    stderr = redact(result.stderr, secrets)
    lowered = stderr.lower()
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    detail = next((line for line in reversed(lines) if line.lower().startswith(("fatal:", "error:"))), "")
    if not detail and lines:
        detail = lines[-1]
    if ref is not None and any(marker in lowered for marker in _REF_NOT_FOUND):
        return ScanFailure("ref_not_found", f"The ref {ref!r} was not found in the repository.")
    # What the remote said (refused, unknown host, TLS, HTTP status, redirect) is for operators:
    # in the scan's error it would tell the caller whether something answers at that address.
    log.info("scan.git_failed", detail=detail[:500])
    return ScanFailure(
        "clone_failed",
        "git could not clone the repository: check the URL, that the repository exists and that codepulse may read it.",
    )


def _clean_ref(ref: str | None) -> str | None:
    if ref is not None:
        ref = ref.strip() or None
    if ref is not None:
        _check_ref(ref)
    return ref


def _environment(
    url: str, home: Path | None, token: str | None, resolve: Sequence[str], *, inherit: bool = False
) -> dict[str, str]:
    return git_environment(
        home, config=_remote_config(url, token, resolve), ssh_options=_ssh_pin(url, resolve), inherit=inherit
    )


def _remote_config(url: str, token: str | None, resolve: Sequence[str]) -> dict[str, str]:
    """Config entries for talking to the remote: the token as an origin-scoped header (never in
    the URL or argv) and the pinned addresses."""
    config: dict[str, str] = {}
    origin = _origin(url)
    if token and origin is not None:
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode("ascii")
        config[f"http.{origin}.extraHeader"] = f"Authorization: Basic {basic}"
    resolve_entry = _resolve_entry(url, resolve)
    if resolve_entry is not None:
        config["http.curloptResolve"] = resolve_entry
    return config


async def _ls_remote(
    url: str,
    patterns: Sequence[str],
    *,
    settings: Settings,
    token: str | None,
    resolve: Sequence[str],
    seconds: float,
    allow_file: bool,
    symref: bool = False,
) -> GitResult | None:
    """One `git ls-remote` of a checked URL with the clone's safety settings, a scratch HOME and a
    time limit (no objects are transferred); None when it timed out or could not run."""
    home = await asyncio.to_thread(scratch(settings.SCAN_WORK_DIR).mkdtemp, "git-home-")
    try:
        env = _environment(url, home, token, resolve)
        args = [*_config_args(allow_file), "ls-remote", *(["--symref"] if symref else []), "--", url, *patterns]
        async with asyncio.timeout(seconds):
            return await run_git(args, env=env)
    except (TimeoutError, ScanFailure):
        return None
    finally:
        await asyncio.to_thread(shutil.rmtree, home, True)


async def remote_commit(
    url: str,
    ref: str | None,
    *,
    settings: Settings,
    token: str | None = None,
    resolve: tuple[str, ...] = (),
    allow_local: bool | None = None,
) -> str | None:
    """The commit `ref` (the default branch when None) points at on the remote, asked with one
    `git ls-remote` (no objects are transferred): a re-scan can tell the repository has not
    changed without cloning it. None when it cannot tell (unknown ref, unreachable remote, time
    limit): the caller then clones, which reports the error properly."""
    allow_file = settings.ALLOW_LOCAL_REPOSITORIES if allow_local is None else allow_local
    try:
        clean_url = _check_url(url, allow_file)
        ref = _clean_ref(ref)
    except ScanFailure:
        return None
    if ref is not None and is_commit_sha(ref):
        return ref.lower()
    patterns = ["HEAD"] if ref is None else [f"refs/heads/{ref}", f"refs/tags/{ref}", f"refs/tags/{ref}^{{}}"]
    result = await _ls_remote(
        clean_url, patterns, settings=settings, token=token, resolve=resolve,
        seconds=min(30.0, settings.SCAN_CLONE_TIMEOUT_SECONDS), allow_file=allow_file,
    )  # fmt: skip
    if result is None or result.returncode != 0:
        return None
    refs: dict[str, str] = {}
    for line in result.stdout.decode("utf-8", "replace").splitlines():
        sha, _, name = line.partition("\t")
        if is_commit_sha(sha):
            refs[name] = sha.lower()
    if ref is None:
        return refs.get("HEAD")
    # A branch wins over a tag of the same name (as `git clone --branch`); an annotated tag's
    # commit is its peeled `^{}` entry.
    return refs.get(f"refs/heads/{ref}") or refs.get(f"refs/tags/{ref}^{{}}") or refs.get(f"refs/tags/{ref}")


_NOT_A_REPOSITORY = (
    "does not appear to be a git repository",
    "not a git repository",
    "is this a git repository",
    "repository not found",
    "' not found",
)
_NEEDS_CREDENTIALS = (
    "could not read username",
    "could not read password",
    "authentication failed",
    "permission denied",
)


@dataclass(frozen=True)
class RemoteHead:
    """What one `git ls-remote --symref` said about a remote: whether it is a Git repository
    (None: could not tell — credentials needed, too slow, unreachable), and its default branch."""

    is_repository: bool | None
    default_branch: str | None = None


async def remote_head(
    url: str, *, settings: Settings, resolve: tuple[str, ...] = (), seconds: float = 10.0
) -> RemoteHead:
    """Ask the remote for its HEAD with the clone's safety settings and a short time limit (no
    objects are transferred): connecting a repository refuses a URL that is surely not a Git
    repository and learns the default branch. Only a definite answer refuses: a remote that
    wants credentials (a private repository before they are set up), times out or cannot be
    reached is given the benefit of the doubt (the first scan reports it properly)."""
    allow_file = settings.ALLOW_LOCAL_REPOSITORIES
    try:
        clean_url = _check_url(url, allow_file)
    except ScanFailure:
        return RemoteHead(False)
    result = await _ls_remote(
        clean_url, ["HEAD"], settings=settings, token=None, resolve=resolve, seconds=seconds,
        allow_file=allow_file, symref=True,
    )  # fmt: skip
    if result is None:
        return RemoteHead(None)
    if result.returncode == 0:
        for line in result.stdout.decode("utf-8", "replace").splitlines():
            target, _, name = line.partition("\t")
            if name == "HEAD" and target.startswith("ref: refs/heads/"):
                return RemoteHead(True, target.removeprefix("ref: refs/heads/") or None)
        return RemoteHead(True)  # an empty repository: no HEAD commit yet
    stderr = result.stderr.lower()
    log.info("repository.probe_failed", detail=redact(result.stderr, ())[-300:])
    if any(marker in stderr for marker in _NEEDS_CREDENTIALS):
        return RemoteHead(None)
    return RemoteHead(False if any(marker in stderr for marker in _NOT_A_REPOSITORY) else None)


async def clone(
    url: str,
    ref: str | None,
    dest: Path,
    *,
    settings: Settings,
    token: str | None = None,
    resolve: tuple[str, ...] = (),
    allow_local: bool | None = None,
    isolated: bool = True,
    history: bool = False,
) -> str:
    """Clone `url` at `ref` (branch, tag or full commit SHA; the default branch when None) into
    `dest` (created; must not exist or be empty) without a checkout; returns the commit SHA.

    `resolve`: the addresses the host was validated against (pins https and SSH connections to
    them).
    `allow_local`: file:// URLs and local paths (default ALLOW_LOCAL_REPOSITORIES).
    `isolated`: no user or system git config (the server); the local CLI passes False so a
    developer's SSH agent and credential helpers work.
    `history`: the ref's whole history (a history scan) instead of its one commit; the same
    safety settings, time and size limits.

    Raises ScanFailure: clone_failed, clone_timeout, ref_not_found, invalid_ref,
    repository_too_large.
    """
    allow_file = settings.ALLOW_LOCAL_REPOSITORIES if allow_local is None else allow_local
    clean_url = _check_url(url, allow_file)
    ref = _clean_ref(ref)
    secrets = (token,) if token else ()
    pinned = bool(_resolve_entry(clean_url, resolve) or _ssh_pin(clean_url, resolve))

    limit = settings.SCAN_MAX_REPOSITORY_BYTES
    home = await asyncio.to_thread(scratch(settings.SCAN_WORK_DIR).mkdtemp, "git-home-") if isolated else None
    env = _environment(clean_url, home, token, resolve, inherit=not isolated)
    config = _config_args(allow_file)
    log.info("scan.clone_started", url=redact(clean_url, secrets), ref=ref, pinned=pinned)
    try:
        async with asyncio.timeout(settings.SCAN_CLONE_TIMEOUT_SECONDS):
            await asyncio.to_thread(dest.mkdir, mode=0o700, parents=True, exist_ok=True)
            if ref is not None and is_commit_sha(ref):
                sha = await _fetch_commit(
                    clean_url, ref.lower(), dest, env=env, config=config, limit=limit, secrets=secrets, history=history
                )
            else:
                args = [
                    *config,
                    "clone",
                    "--quiet",
                    "--template=",
                    "--no-checkout",
                    *_depth(history),
                    "--single-branch",
                ]
                args += ["--no-tags", "--no-recurse-submodules"]
                if ref is not None:
                    args += ["--branch", ref]
                args += ["--", clean_url, str(dest)]
                result = await run_git(args, env=env, watch=(dest, limit))
                if result.returncode != 0:
                    raise _failure(result, ref=ref, secrets=secrets)
                sha = await rev_parse(dest, "HEAD", env=env)
            if sha is None:
                raise ScanFailure("clone_failed", "The repository has no commits.")
            if await asyncio.to_thread(directory_size, dest) > limit:
                raise too_large(limit)
    except TimeoutError:
        log.info("scan.clone_timeout", seconds=settings.SCAN_CLONE_TIMEOUT_SECONDS)
        raise ScanFailure(
            "clone_timeout",
            f"Cloning took longer than {settings.SCAN_CLONE_TIMEOUT_SECONDS:g} s (SCAN_CLONE_TIMEOUT_SECONDS).",
        ) from None
    except ScanFailure as failure:
        log.info("scan.clone_failed", code=failure.code)
        raise
    finally:
        if home is not None:
            shutil.rmtree(home, ignore_errors=True)
    log.info("scan.cloned", commit_sha=sha)
    return sha


def _depth(history: bool) -> list[str]:
    """One commit, unless the whole history is wanted."""
    return [] if history else ["--depth", "1"]


async def _fetch_commit(
    url: str,
    sha: str,
    dest: Path,
    *,
    env: Mapping[str, str],
    config: Sequence[str],
    limit: int,
    secrets: Sequence[str],
    history: bool,
) -> str | None:
    result = await run_git([*config, "init", "--quiet", "--template=", "--", str(dest)], env=env)
    if result.returncode != 0:
        raise _failure(result, ref=None, secrets=secrets)
    fetch = [*config, "fetch", "--quiet", *_depth(history), "--no-tags", "--no-recurse-submodules"]
    fetch += ["--no-write-fetch-head", "--", url, f"{sha}:refs/codepulse/scan"]
    result = await run_git(fetch, env=env, cwd=dest, watch=(dest, limit))
    if result.returncode != 0:
        raise _failure(result, ref=sha, secrets=secrets)
    resolved = await rev_parse(dest, "refs/codepulse/scan^{commit}", env=env)
    if resolved is None:
        raise ScanFailure("ref_not_found", f"The ref {sha!r} is not a commit of the repository.")
    result = await run_git(["update-ref", "--no-deref", "HEAD", resolved], env=env, cwd=dest)
    if result.returncode != 0:
        raise _failure(result, ref=None, secrets=secrets)
    return resolved
