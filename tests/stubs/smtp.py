"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives, for mail tests."""

from __future__ import annotations

import asyncio
import re
import socket
from email import message_from_bytes
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.arrived = asyncio.Event()
        # Addresses answered "550 no such user", as a real server refuses an unknown mailbox.
        self.refused: set[str] = set()

    async def handle_RCPT(
        self, _server: SMTP, _session: Session, envelope: Envelope, address: str, _options: list[str]
    ) -> str:
        if address in self.refused:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, _server: SMTP, _session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        self.messages.append(message_from_bytes(content if isinstance(content, bytes) else content.encode()))
        return "250 OK"


class SmtpServer:
    """Start with `start()`; `messages` are parsed email.Message objects in arrival order."""

    def __init__(self) -> None:
        self._inbox = _Inbox()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self._controller = Controller(self._inbox, hostname="127.0.0.1", port=self.port)
        self.started = False

    def start(self) -> None:
        self._controller.start()
        self.started = True

    def stop(self) -> None:
        self._controller.stop()
        self.started = False

    def close(self) -> None:
        """Stop it, or release the event loop aiosmtpd made for a server never started."""
        if self.started:
            self.stop()
        else:
            self._controller.loop.close()

    @property
    def messages(self) -> list[Message]:
        return self._inbox.messages

    def clear(self) -> None:
        self._inbox.messages.clear()
        self._inbox.refused.clear()

    def refuse(self, address: str) -> None:
        self._inbox.refused.add(address)

    def settings(self) -> dict[str, Any]:
        return {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": self.port, "SMTP_SECURITY": "none", "SMTP_TIMEOUT_SECONDS": 5}

    def messages_to(self, address: str) -> list[Message]:
        return [m for m in self.messages if m["To"] == address]

    @staticmethod
    def _body(message: Message) -> str:
        payload = message.get_payload(decode=True)
        return payload.decode() if isinstance(payload, bytes) else str(message.get_payload())

    @classmethod
    def link_token_in_path(cls, message: Message, prefix: str) -> str:
        """The last path segment of the first link after `prefix`, e.g. `/invitations/<token>`."""
        match = re.search(re.escape(prefix) + r"([A-Za-z0-9_\-]+)", cls._body(message))
        if match is None:
            raise AssertionError(f"no {prefix} link in: {cls._body(message)}")
        return match.group(1)

    @staticmethod
    def link_token(message: Message, path: str) -> str:
        """The `token` query value of the first link to `path` in a text message."""
        payload = message.get_payload(decode=True)
        body = payload.decode() if isinstance(payload, bytes) else str(message.get_payload())
        match = re.search(re.escape(path) + r"\?token=([A-Za-z0-9_\-]+)", body)
        if match is None:
            raise AssertionError(f"no {path} link in: {body}")
        return match.group(1)
