"""Symmetric encryption of secrets we must read back later (GitHub access tokens).

Fernet (AES-128-CBC + HMAC-SHA256, authenticated) with a key derived from SECRET_KEY by HKDF, so
no second key has to be configured and the raw SECRET_KEY is never used as a cipher key directly.
The fixed `info` label binds the derived key to this one purpose: the same SECRET_KEY also signs
cookies, and a key derived for another purpose must not open these ciphertexts.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

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
