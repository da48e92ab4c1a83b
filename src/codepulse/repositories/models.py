"""Git repositories an organization connects for scanning.

Other domains hang rows off a repository with `ForeignKey("repositories.id", ondelete="CASCADE")`
(scans, findings): deleting a repository removes them with it. The last-scan summary columns
belong to the scans domain, which keeps them current through `service.update_scan_summary`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from codepulse.db import Base, Timestamps, UUIDPrimaryKey

URL_MAX_LENGTH = 2048
NAME_MAX_LENGTH = 200
BRANCH_MAX_LENGTH = 255


class Provider(StrEnum):
    GITHUB = "github"
    GITLAB = "gitlab"
    BITBUCKET = "bitbucket"
    GIT = "git"


class ScanSchedule(StrEnum):
    NONE = "none"
    DAILY = "daily"
    WEEKLY = "weekly"


class Severity(StrEnum):
    """Severities counted in the open-findings summary, most severe first."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class Repository(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "repositories"
    # Also the index behind every per-organization list and lookup.
    __table_args__ = (UniqueConstraint("org_id", "canonical_url"),)

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(NAME_MAX_LENGTH))
    provider: Mapped[str] = mapped_column(String(20))
    # What `git clone` is given: https:// or ssh (scp-like included), never with credentials.
    clone_url: Mapped[str] = mapped_column(String(URL_MAX_LENGTH))
    # The identity of the repository whatever URL form was given: https://host/path, no .git.
    canonical_url: Mapped[str] = mapped_column(String(URL_MAX_LENGTH))
    # None: the remote's HEAD.
    default_branch: Mapped[str | None] = mapped_column(String(BRANCH_MAX_LENGTH))
    # The provider's id when imported (GitHub's numeric repository id, as text).
    external_id: Mapped[str | None] = mapped_column(String(64))
    private: Mapped[bool] = mapped_column(Boolean, default=False)
    scan_schedule: Mapped[str] = mapped_column(String(10), default=ScanSchedule.NONE.value)
    # Whoever connected it (never a reason to use their GitHub token: see credential_user_id).
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # The clone credential: whose linked GitHub token clones it, granted by a GitHub import for
    # exactly this repository (GitHub's id and the canonical URL at the time). Changing the URL or
    # the provider drops all three; a scan uses the token only while they still describe the
    # repository, the user is still a member and GitHub still shows it to their account.
    credential_user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    credential_external_id: Mapped[str | None] = mapped_column(String(64))
    credential_canonical_url: Mapped[str | None] = mapped_column(String(URL_MAX_LENGTH))
    archived: Mapped[bool] = mapped_column(Boolean, default=False)

    # Last scan summary, written by the scans domain (service.update_scan_summary).
    last_scan_id: Mapped[uuid.UUID | None]
    last_scan_status: Mapped[str | None] = mapped_column(String(20))
    last_scan_finished_at: Mapped[datetime | None]
    open_critical: Mapped[int] = mapped_column(Integer, default=0)
    open_high: Mapped[int] = mapped_column(Integer, default=0)
    open_medium: Mapped[int] = mapped_column(Integer, default=0)
    open_low: Mapped[int] = mapped_column(Integer, default=0)
