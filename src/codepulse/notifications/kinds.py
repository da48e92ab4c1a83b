"""Every kind of notification, readable at a glance: what it tells and whether it is shown in the
app and mailed unless the user chose otherwise (`GET /api/v1/notifications/kinds`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    name: str
    description: str
    in_app: bool = True
    email: bool = False


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind("scan_completed", "A scan you started finished."),
        Kind("scan_failed", "A scan you started failed.", email=True),
        Kind(
            "new_critical_findings",
            "A scan of a default branch opened new high or critical findings (organization admins).",
            email=True,
        ),
        # Not mailed by default: the invitation itself is mailed (with its link) to every invitee.
        Kind("invitation_received", "You were invited to an organization."),
        Kind("quota_warning", "An organization you administer used 80 % of a plan limit.", email=True),
        Kind("quota_reached", "An organization you administer reached a plan limit.", email=True),
        Kind("payment_failed", "A payment for an organization's subscription failed.", email=True),
        Kind("subscription_changed", "An organization's plan changed."),
        Kind("streak_at_risk", "Your usage streak ends unless you code today."),
        Kind("weekly_summary", "Your week of AI coding usage, on Monday morning.", email=True),
    )
}
