"""Text inputs without control characters: one rule for every schema, query string and path.

PostgreSQL's text types cannot hold NUL (a NUL reaching a query was a 500), and no name, id,
token, email or search term has a use for control characters. Schemas annotate their strings
with `Line` (no control character at all) or `Text` (multi-line prose: tabs and line breaks
allowed); `url_control_character` checks a request's path and query string once, for every
route, before any parameter is parsed. Refusals are 422 problems with the error code
`control_character`.
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import parse_qsl

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

CONTROL_CHARACTER = "control_character"

# C0 controls and DEL; `_PROSE_CONTROL` spares tab, line feed and carriage return.
_ANY_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PROSE_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# A NUL escaped in a JSON document: `\u0000` after an even number of backslashes.
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def _refuse(pattern: re.Pattern[str], message: str) -> AfterValidator:
    def check(value: str) -> str:
        if pattern.search(value):
            raise PydanticCustomError(CONTROL_CHARACTER, message)
        return value

    return AfterValidator(check)


NO_CONTROL = _refuse(_ANY_CONTROL, "Control characters (NUL, line breaks, tabs, ...) are not allowed here.")
NO_PROSE_CONTROL = _refuse(_PROSE_CONTROL, "Control characters other than tabs and line breaks are not allowed.")

# A single-line string: names, ids, tokens, emails, URLs.
Line = Annotated[str, NO_CONTROL]
# Prose: a reason, a description; tabs and line breaks allowed.
Text = Annotated[str, NO_PROSE_CONTROL]


def has_control_character(value: str) -> bool:
    return _ANY_CONTROL.search(value) is not None


def json_has_nul(body: bytes) -> bool:
    """Whether a JSON document holds a NUL in any string (key or value), without parsing it;
    for bodies parsed outside FastAPI (the usage sync), where no schema sees every string.
    A raw NUL is no valid JSON anyway; escaped, it is `\\u0000`."""
    return b"\\u0000" in body and _JSON_NUL.search(body) is not None


def url_control_character(path: str, raw_path: bytes | None, query_string: bytes) -> str | None:
    """Where a request's decoded path or query string holds a control character
    (`path`, `query.<name>`), else None. Cheap in the usual case: without a `%` in the raw
    path and query string nothing was percent-decoded, and HTTP parsers refuse raw controls."""
    if (raw_path is None or b"%" in raw_path) and has_control_character(path):
        return "path"
    if b"%" in query_string:
        for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True, encoding="utf-8"):
            if has_control_character(name) or has_control_character(value):
                return "query." + (name if not has_control_character(name) else "?")
    return None
