"""Time, injected: rules that depend on "now" take a clock so tests control it instead of sleeping.

The app's clock is `app.state.clock` (`create_app(clock=...)`); services receive it as a `ClockFunc`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

ClockFunc = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)
