"""What git may reach: no redirects away from the checked host, SSH pinned to the checked address,
and error messages that do not tell which hosts answer. Real servers on loopback, no network."""

from __future__ import annotations

import asyncio
import datetime
import http.server
import ipaddress
import shlex
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from codepulse.config import Settings
from codepulse.scans import clone as clone_module
from codepulse.scans.clone import clone, remote_commit
from codepulse.scans.errors import ScanFailure
from codepulse.scans.git import git_environment

PINNED_HOST = "git.example.test"  # never resolvable: only the pinned address reaches it


def _settings(**overrides: Any) -> Settings:
    return Settings.model_construct().model_copy(update={"SCAN_CLONE_TIMEOUT_SECONDS": 30.0, **overrides})


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for the pinned name, localhost and 127.0.0.1: (cert, key) files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "codepulse test")])
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.DNSName(PINNED_HOST), x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class _HttpsServer:
    """A TLS HTTP server on 127.0.0.1 in a thread: answers every GET with `status` and `location`,
    recording the paths it was asked for."""

    def __init__(self, cert: Path, key: Path, status: int, location: str | None = None) -> None:
        self.paths: list[str] = []
        recorded = self.paths

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorded.append(self.path)
                self.send_response(status)
                if location is not None:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """The test certificate, trusted by the git clone runs (GIT_SSL_CAINFO: the only change made
    to codepulse's isolated git environment)."""
    cert, key = _certificate(tmp_path)

    def trusting_environment(*args: Any, **kwargs: Any) -> dict[str, str]:
        return git_environment(*args, **kwargs) | {"GIT_SSL_CAINFO": str(cert)}

    monkeypatch.setattr(clone_module, "git_environment", trusting_environment)
    return cert, key


@pytest.fixture
def other_host(tls: tuple[Path, Path]) -> Iterator[_HttpsServer]:
    server = _HttpsServer(*tls, status=404)
    yield server
    server.close()


@pytest.mark.parametrize("status", [301, 302, 307])
async def test_no_redirect_to_another_host(
    tls: tuple[Path, Path], other_host: _HttpsServer, tmp_path: Path, status: int
) -> None:
    """The checked, pinned host answers with a redirect to another host: git does not follow it,
    and the scan's error does not say what the remote answered."""
    target = f"https://localhost:{other_host.port}/internal/secrets.git/info/refs?service=git-upload-pack"
    pinned = _HttpsServer(*tls, status=status, location=target)
    try:
        url = f"https://{PINNED_HOST}:{pinned.port}/acme/app.git"
        with structlog.testing.capture_logs() as logs, pytest.raises(ScanFailure) as raised:
            await clone(url, None, tmp_path / "clone", settings=_settings(), resolve=("127.0.0.1",))
        assert await remote_commit(url, None, settings=_settings(), resolve=("127.0.0.1",)) is None
    finally:
        pinned.close()
    assert pinned.paths  # the pinned host was asked...
    assert other_host.paths == []  # ...and where it pointed was not
    assert raised.value.code == "clone_failed"
    assert str(status) not in raised.value.message
    assert "localhost" not in raised.value.message
    assert any(event["event"] == "scan.git_failed" for event in logs)  # the detail is for operators


async def test_errors_do_not_say_whether_a_host_answered(other_host: _HttpsServer, tmp_path: Path) -> None:
    """A refused connection and a server answering 404 read the same to the caller."""
    answering = f"https://{PINNED_HOST}:{other_host.port}/acme/app.git"
    refused = f"https://{PINNED_HOST}:{_free_port()}/acme/app.git"
    messages: list[tuple[str, str]] = []
    for url in (answering, refused):
        with pytest.raises(ScanFailure) as raised:
            await clone(url, None, tmp_path / f"clone-{len(messages)}", settings=_settings(), resolve=("127.0.0.1",))
        messages.append((raised.value.code, raised.value.message))
    assert other_host.paths  # the first one really answered
    assert messages[0] == messages[1]


def _free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- SSH --------------------------------------------------------------------------------------


class _SshEndpoint:
    """A TCP server speaking the first line of SSH: records the client's identification string."""

    def __init__(self) -> None:
        self.banners: list[bytes] = []
        self.connected = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-codepulse-test\r\n")
        await writer.drain()
        try:
            self.banners.append(await asyncio.wait_for(reader.readline(), timeout=10))
        finally:
            self.connected.set()
            writer.close()

    async def __aenter__(self) -> _SshEndpoint:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


async def test_ssh_connects_to_the_checked_address(tmp_path: Path) -> None:
    """ssh is told the checked address: the host name (which does not resolve at all here, as a
    rebinding name would resolve elsewhere) is never looked up again."""
    async with _SshEndpoint() as endpoint:
        url = f"ssh://git@{PINNED_HOST}:{endpoint.port}/acme/app.git"
        with pytest.raises(ScanFailure) as raised:
            await clone(url, None, tmp_path / "clone", settings=_settings(), resolve=("127.0.0.1",))
    assert raised.value.code == "clone_failed"
    assert endpoint.connected.is_set()
    assert endpoint.banners
    assert endpoint.banners[0].startswith(b"SSH-2.0-OpenSSH")


def _effective_ssh_config(command: str, host: str) -> dict[str, str]:
    """What ssh would do for `host` with git's ssh command (`ssh -G`: evaluated, not connected)."""
    argv = [*shlex.split(command), "-G", host]
    output = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return dict(line.split(" ", 1) for line in output.splitlines() if " " in line)


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("git@git.example.test:acme/app.git", "git.example.test"),
        ("ssh://git@Git.Example.Test:2222/acme/app.git", "git.example.test"),
        ("git@[2001:db8::1]:acme/app.git", "2001:db8::1"),
    ],
)
def test_ssh_command_is_bound_to_the_checked_address(url: str, host: str, tmp_path: Path) -> None:
    env = clone_module._environment(url, tmp_path, None, ("93.184.215.14", "93.184.215.15"))
    config = _effective_ssh_config(env["GIT_SSH_COMMAND"], host)
    assert config["hostname"] == "93.184.215.14"
    assert config["hostkeyalias"] == host  # known_hosts stays keyed on the name
    assert config["checkhostip"] == "no"
    assert config["batchmode"] == "yes"
    # Without checked addresses (the waived check, the local CLI) nothing is pinned.
    unpinned = clone_module._environment(url, tmp_path, None, ())
    assert "HostName" not in unpinned["GIT_SSH_COMMAND"]


def test_ssh_pin_refuses_junk() -> None:
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        clone_module._ssh_pin("git@git.example.test:a/b", ("127.0.0.1 -oProxyCommand=x",))
