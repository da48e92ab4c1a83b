"""Request and response bodies of the orgs domain."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from slugify import slugify

from codepulse.auth.schemas import AvatarUrl, Email
from codepulse.orgs.models import Role
from codepulse.text import NO_CONTROL, Line

SLUG_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{1,38})[a-z0-9]$")
# Words that read as routes, roles or the product itself.
RESERVED_SLUGS = frozenset(
    {
        "admin", "api", "app", "auth", "billing", "codepulse", "dashboard", "docs", "help", "invitations",
        "login", "logout", "me", "new", "org", "orgs", "settings", "signup", "status", "support", "users", "www",
    }
)  # fmt: skip


def _slug(value: str) -> str:
    value = value.strip().lower()
    if not SLUG_PATTERN.match(value) or "--" in value:
        raise ValueError("use 3 to 40 of a-z, 0-9 and single hyphens, starting and ending with a letter or digit")
    if value in RESERVED_SLUGS:
        raise ValueError(f"{value!r} is reserved")
    return value


Slug = Annotated[str, NO_CONTROL, AfterValidator(_slug)]
OrgName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), NO_CONTROL]


class OrgCreate(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "Analytical Engines", "slug": "engines"}, {"name": "Engines Ltd"}]}
    )

    name: OrgName
    slug: Slug | None = Field(
        default=None,
        description="Omit to derive one from the name (lower-case ASCII and hyphens, `-2`, `-3`… when taken); "
        "it can be changed later.",
    )


def slug_candidates(name: str) -> list[str]:
    """Slugs for an organization called `name`, best first: the name transliterated to ASCII,
    lower-cased and hyphenated (python-slugify), padded or replaced when too short or reserved;
    then the same with `-2` to `-99`."""
    base = slugify(name, max_length=36, word_boundary=True) or "org"
    if len(base) < 3 or base in RESERVED_SLUGS:
        base = f"{base}-org" if base else "org"
    base = base[:36].strip("-")
    return [base, *(f"{base}-{number}" for number in range(2, 100))]


class OrgUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "Engines Ltd"}]})

    name: OrgName | None = None
    slug: Slug | None = None
    avatar_url: AvatarUrl | None = None


class OrgDelete(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"confirm_slug": "engines"}]})

    confirm_slug: Line = Field(max_length=60, description="The organization's slug, typed again.")


class OrgOut(BaseModel):
    id: uuid.UUID
    name: str
    slug: str
    avatar_url: str | None
    created_at: datetime
    role: Role | None = Field(default=None, description="My role here (null for a superuser who is not a member).")
    plan: str = Field(description="The billing plan (GET /orgs/{org}/billing: limits and usage).")


class MemberUser(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    username: str
    name: str
    email: str
    avatar_url: str | None


class MemberOut(BaseModel):
    user: MemberUser
    role: Role
    joined_at: datetime


class RoleUpdate(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"role": "admin"}]})

    role: Role


class InvitationCreate(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"email": "grace@example.com", "role": "member"}]})

    email: Email
    role: Role = Role.MEMBER


class InvitationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    role: Role
    created_at: datetime
    expires_at: datetime
    invited_by: uuid.UUID | None


class OrgSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    slug: str


class MyInvitation(BaseModel):
    id: uuid.UUID
    org: OrgSummary | None = Field(
        description="The inviting organization; null until the email is verified (anyone can type an "
        "address: an unverified account must not learn who invited it)."
    )
    role: Role
    expires_at: datetime
    can_accept: bool = Field(description="Whether `POST /invitations/{id}/accept` would succeed now.")
    reason: str | None = Field(
        description="Why it cannot be accepted now: `email_not_verified` (verify the email first: "
        "`POST /auth/verify-email/request` mails a new link)."
    )


class AcceptIn(BaseModel):
    token: Line = Field(min_length=1, max_length=200)


class AuditEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    action: str
    actor_id: uuid.UUID | None
    target_type: str | None
    target_id: str | None
    metadata: dict[str, Any] = Field(validation_alias="details")
    ip: str | None
    created_at: datetime
