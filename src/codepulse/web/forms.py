"""Form bodies of the pages (`application/x-www-form-urlencoded`, no multipart) and the API's
validation errors as messages beside their fields."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from urllib.parse import parse_qsl

from fastapi import Request
from pydantic import ValidationError

from codepulse.errors import FieldError, PayloadTooLarge

MAX_FORM_BYTES = 64 * 1024

FieldErrors = dict[str, list[str]]


async def read_form(request: Request) -> dict[str, str]:
    """The fields of an urlencoded form (the last value of a repeated name); 413 beyond 64 KiB."""
    cached: dict[str, str] | None = getattr(request.state, "web_form", None)
    if cached is not None:
        return cached
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise PayloadTooLarge("The form is too large.")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)) if body else {}
    if content_type not in ("", "application/x-www-form-urlencoded"):
        form = {}
    request.state.web_form = form
    return form


async def read_form_list(request: Request, name: str) -> list[str]:
    """Every value of a repeated field (checkboxes of one name), in the form's order."""
    await read_form(request)  # the size and content type checks, once
    if not request.state.web_form:
        return []
    body = await request.body()
    return [value for key, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True) if key == name]


def validation_errors(error: ValidationError) -> FieldErrors:
    """pydantic's errors by field (the first part of each location; `form` for the model's own)."""
    return by_field((str(item["loc"][0]) if item["loc"] else "form", item["msg"]) for item in error.errors())


def field_errors(errors: Sequence[FieldError]) -> FieldErrors:
    """A domain ValidationFailed's errors (locations like `body.password` or `password`) by field."""
    return by_field((error.field.removeprefix("body.").split(".")[0] or "form", error.message) for error in errors)


def by_field(pairs: Iterable[tuple[str, str]]) -> FieldErrors:
    result: FieldErrors = {}
    for field, message in pairs:
        text = message.removeprefix("Value error, ")
        if text not in result.setdefault(field, []):
            result[field].append(text)
    return result
