"""Time, injected: rules that depend on "now" take a clock so tests control it instead of sleeping."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request

ClockFunc = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def _clock(request: Request) -> ClockFunc:
    clock: ClockFunc = request.app.state.clock
    return clock


Clock = Annotated[ClockFunc, Depends(_clock)]
