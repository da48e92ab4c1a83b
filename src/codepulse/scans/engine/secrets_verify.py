"""Offline checks of the checksum or structure some token formats carry (the secrets engine's
`verify` rules): a candidate that passes is reported with high confidence, one that fails with low.

Each checker takes the candidate secret and answers True (verified), False (the format's check
fails) or None (this shape carries no check). They never need the network. A change here changes
results: bump `secrets.ENGINE_VERSION` (results are cached per engine version).
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from collections.abc import Callable
from typing import Any, Final

_BASE62: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BECH32: Final = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_GENERATOR: Final = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


def _b64decode(text: str) -> bytes:
    """Standard or URL-safe base64, padding optional; b"" when it is not base64."""
    text = text.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        return b""


def verify_base62_crc32(secret: str) -> bool | None:
    """GitHub (ghp_ gho_ ghu_ ghs_ ghr_) and npm (npm_) tokens: after the prefix, 30 random base62
    characters then their CRC32 in 6 base62 digits (0-9A-Za-z, zero-padded). GitHub blog, "Behind
    GitHub's new authentication token formats" (2021-04-05); npm's new token format (2021-09-23)."""
    body = secret.partition("_")[2]
    if len(body) != 36:
        return None  # e.g. a longer refresh token: no documented checksum
    value = 0
    for char in body[30:]:
        digit = _BASE62.find(char)
        if digit < 0:
            return False
        value = value * 62 + digit
    return value == zlib.crc32(body[:30].encode("ascii"))


def verify_bech32(secret: str) -> bool:
    """age keys (AGE-SECRET-KEY-1...) are Bech32 (BIP 173) strings: check the 6-character checksum."""
    hrp, _, data = secret.lower().rpartition("1")
    values = [_BECH32.find(char) for char in data]
    if not hrp or len(values) < 6 or min(values) < 0:
        return False
    check = 1
    for value in [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp] + values:
        top = check >> 25
        check = (check & 0x1FFFFFF) << 5 ^ value
        for bit, generator in enumerate(_BECH32_GENERATOR):
            if top >> bit & 1:
                check ^= generator
    return check == 1


def _varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[position]  # IndexError on truncated data
        value |= (byte & 0x7F) << shift
        position += 1
        if not byte & 0x80:
            return value, position
        shift += 7


def verify_pypi_macaroon(secret: str) -> bool:
    """PyPI tokens are `pypi-` + a base64url macaroon in libmacaroons' v2 binary format: version 2,
    the location `pypi.org`, an identifier, caveat sections, then a 32-byte signature, nothing after."""
    data = _b64decode(secret.removeprefix("pypi-"))
    if not data.startswith(b"\x02\x01\x08pypi.org"):
        return False
    try:
        position, sections, fields = 1, 0, set[int]()
        while True:  # sections of (type, length, value) fields, each ended by a 0 byte
            field, position = _varint(data, position)
            if field == 0:
                if not fields:  # an empty section ends the caveats
                    break
                sections, fields = sections + 1, set()
                continue
            length, position = _varint(data, position)
            position += length
            fields.add(field)
        field, position = _varint(data, position)
        length, position = _varint(data, position)
    except IndexError:
        return False
    return sections >= 1 and field == 6 and length == 32 and position + 32 == len(data)


def _json_object(segment: str) -> dict[str, Any] | None:
    try:
        value = json.loads(_b64decode(segment))
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def verify_jwt(secret: str) -> bool:
    """A JWT's header and payload are base64url JSON objects, the header naming its `alg`."""
    header, _, rest = secret.partition(".")
    payload = rest.partition(".")[0]
    decoded = _json_object(header)
    return decoded is not None and "alg" in decoded and _json_object(payload) is not None


def verify_jwt_base64(secret: str) -> bool:
    """A base64-encoded JWT (as in a Kubernetes Secret or an env dump)."""
    return verify_jwt(_b64decode(secret).decode("ascii").strip())


def verify_discord_bot_token(secret: str) -> bool:
    """A Discord bot token's first segment is the bot's user ID (a 17-20 digit snowflake) in base64."""
    user_id = _b64decode(secret.partition(".")[0])
    return user_id.isdigit() and 17 <= len(user_id) <= 20


def verify_prefixed_base64_json(secret: str) -> bool:
    """1Password service-account (ops_), Grafana Cloud (glc_) and legacy Grafana (eyJrIjoi) tokens:
    base64 of a JSON object after the prefix."""
    prefix, separator, body = secret.partition("_")
    return _json_object(body if separator and not prefix.startswith("eyJ") else secret) is not None


VERIFIERS: Final[dict[str, Callable[[str], bool | None]]] = {
    "base62_crc32": verify_base62_crc32,
    "bech32": verify_bech32,
    "pypi_macaroon": verify_pypi_macaroon,
    "jwt": verify_jwt,
    "jwt_base64": verify_jwt_base64,
    "discord_bot_token": verify_discord_bot_token,
    "prefixed_base64_json": verify_prefixed_base64_json,
}
"""Checkers a rule names with `verify = "<name>"`."""
