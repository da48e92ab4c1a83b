"""Why a scan stopped: a failure with a stable code, or a cancel."""

from __future__ import annotations


class ScanFailure(Exception):
    """A scan that cannot complete; `code` is stable (the scan's problem-style error code), the
    message is for people and never holds a secret.

    Codes: clone_failed, clone_timeout, ref_not_found, invalid_ref, repository_too_large,
    engine_failed.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"ScanFailure({self.code!r}, {self.message!r})"


class ScanCancelled(Exception):
    """The scan was cancelled through its `cancelled` signal; partial results were discarded.

    Not an `asyncio.CancelledError`: a task runner must not mistake a user's cancel for its own
    shutdown (which re-queues the task).
    """
