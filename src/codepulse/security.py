"""Secrets every slice may use: token generation and hashing, password hashing and policy, and
encryption at rest of secrets we must read back (GitHub access tokens).

Encryption: Fernet (AES-128-CBC + HMAC-SHA256, authenticated) with a key derived from SECRET_KEY by
HKDF, so no second key has to be configured and the raw SECRET_KEY is never used as a cipher key
directly. The fixed `info` label binds the derived key to this one purpose: the same SECRET_KEY also
signs cookies, and a key derived for another purpose must not open these ciphertexts.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from collections.abc import Sequence
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from codepulse.config import Settings
from codepulse.errors import FieldError

SESSION_TOKEN_PREFIX = "cp_"  # noqa: S105 - a public prefix, not a secret
# 32 random bytes -> 43 url-safe characters; a session token is "cp_" + that.
TOKEN_BYTES = 32
PASSWORD_MIN_LENGTH = 10
PASSWORD_MAX_LENGTH = 256


def new_session_token() -> str:
    return SESSION_TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def new_one_time_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(raw: str) -> str:
    """SHA-256 is right for tokens (unlike passwords): they carry 256 bits of randomness."""
    return hashlib.sha256(raw.encode()).hexdigest()


@cache
def _common_passwords() -> frozenset[str]:
    # zxcvbn ships the 30,000 most common passwords from public breach corpora.
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(FREQUENCY_LISTS["passwords"])


def password_problems(password: str, *, email: str, username: str, field: str = "body.password") -> list[FieldError]:
    """Every policy rule the password breaks, as field errors (empty when it is acceptable)."""
    problems = []
    if len(password) < PASSWORD_MIN_LENGTH:
        problems.append(
            FieldError(
                field=field, code="password_too_short", message=f"Use at least {PASSWORD_MIN_LENGTH} characters."
            )
        )
    if len(password) > PASSWORD_MAX_LENGTH:
        problems.append(
            FieldError(field=field, code="password_too_long", message=f"Use at most {PASSWORD_MAX_LENGTH} characters.")
        )
    lowered = password.lower()
    if lowered in _common_passwords():
        problems.append(FieldError(field=field, code="password_too_common", message="This password is too common."))
    if lowered in {email.lower(), username.lower()}:
        problems.append(
            FieldError(field=field, code="password_matches_identity", message="Do not use your email or username.")
        )
    return problems


class PasswordHasher:
    """argon2id via pwdlib, off the event loop. Hashes made with other parameters are re-hashed
    on the next successful verify (`verify` returns the new hash)."""

    def __init__(self, settings: Settings) -> None:
        self._hash = PasswordHash(
            (
                Argon2Hasher(
                    time_cost=settings.PASSWORD_HASH_TIME_COST,
                    memory_cost=settings.PASSWORD_HASH_MEMORY_KIB,
                    parallelism=settings.PASSWORD_HASH_PARALLELISM,
                ),
            )
        )
        self._dummy: str | None = None

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hash.hash, password)

    async def verify(self, password: str, password_hash: str) -> tuple[bool, str | None]:
        """(matches, upgraded hash or None)."""
        return await asyncio.to_thread(self._hash.verify_and_update, password, password_hash)

    async def verify_nothing(self, password: str) -> None:
        """Spend the time of a real verify, for unknown accounts: login timing reveals nothing."""
        if self._dummy is None:
            self._dummy = await self.hash(secrets.token_urlsafe(16))
        await asyncio.to_thread(self._hash.verify, password, self._dummy)


# --- encryption at rest ---------------------------------------------------------------------

_INFO = b"codepulse/oauth-tokens"


class SecretBoxError(Exception):
    """A ciphertext could not be opened: tampered, truncated, or sealed under another key."""


def _fernet(secret_key: str) -> Fernet:
    if not secret_key:
        raise ValueError("SecretBox needs a non-empty secret key")
    # No salt: SECRET_KEY is already high-entropy, and a salt would have to be stored somewhere.
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret_key.encode("utf-8"))
    return Fernet(base64.urlsafe_b64encode(key))


class SecretBox:
    """Encrypts with `secret_key`; decrypts with it or any of `previous_keys`, so SECRET_KEY can be
    rotated without losing what was sealed under the old one (re-encrypt with `encrypt` on read)."""

    def __init__(self, secret_key: str, previous_keys: Sequence[str] = ()) -> None:
        self._fernet = MultiFernet([_fernet(secret_key), *(_fernet(key) for key in previous_keys)])

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            # Never echo the token: it is a ciphertext of a credential.
            raise SecretBoxError("cannot decrypt: the value was tampered with or sealed under another key") from None
