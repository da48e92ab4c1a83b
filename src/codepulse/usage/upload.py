"""A sync request's body as sent: size limits while reading it, and gzip."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

from codepulse.errors import DomainError, FieldError, PayloadTooLarge, ValidationFailed


class UnsupportedMediaType(DomainError):
    status = 415
    code = "unsupported_media_type"
    title = "Unsupported media type"


def too_large(limit: int, what: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request is larger than {limit:,} bytes {what}; split the upload into smaller batches.",
        extra={"limit_bytes": limit},
    )


async def read_body(chunks: AsyncIterator[bytes], content_encoding: str | None, limit: int) -> bytes:
    """The request body, gunzipped when `Content-Encoding: gzip`; 413 past `limit` bytes, compressed
    or not (a small gzip body that inflates past the limit is refused while inflating)."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip"):
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not supported; send gzip or no encoding.",
            code="unsupported_content_encoding",
        )
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise too_large(limit, "(as sent)")
    if encoding == "identity":
        return bytes(body)
    return gunzip(bytes(body), limit)


def gunzip(data: bytes, limit: int) -> bytes:
    """Inflate gzip `data` (several members allowed), refusing more than `limit` bytes of output."""
    out = bytearray()
    remaining = data
    while remaining:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(remaining, limit + 1 - len(out))
        except zlib.error:
            raise _bad_gzip() from None
        if len(out) > limit or inflater.unconsumed_tail:
            raise too_large(limit, "once decompressed")
        if not inflater.eof:
            raise _bad_gzip()
        remaining = inflater.unused_data
    return bytes(out)


def _bad_gzip() -> ValidationFailed:
    return ValidationFailed(
        [FieldError(field="body", code="invalid_gzip", message="The body is not complete, valid gzip data.")],
        detail="The body says it is gzip but cannot be decompressed.",
    )
