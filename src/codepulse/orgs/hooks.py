"""The orgs slice's reactions to events of the slices below it (see `codepulse.hooks`)."""

from __future__ import annotations

from codepulse.auth import service as auth_service
from codepulse.orgs.service import refuse_last_owner


def register_hooks() -> None:
    """Called by `create_app` at start-up; registering again is a no-op."""
    auth_service.on_user_delete(refuse_last_owner)
