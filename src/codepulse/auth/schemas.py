"""Request and response bodies of the auth domain."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from functools import cache
from typing import Annotated, Any
from zoneinfo import available_timezones

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    ValidationError,
    ValidatorFunctionWrapHandler,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from codepulse.auth.models import EMAIL_MAX_LENGTH
from codepulse.security import password_problems
from codepulse.text import NO_CONTROL, NO_PROSE_CONTROL, Line

USERNAME_PATTERN = re.compile(r"^[a-z0-9_-]{3,30}$")
# Names that read as routes or roles (`/users/me`) or could impersonate the service.
RESERVED_USERNAMES = frozenset(
    {"me", "admin", "administrator", "root", "api", "system", "support", "codepulse", "null", "undefined", "settings"}
)


def _username(value: str) -> str:
    value = value.strip().lower()
    if not USERNAME_PATTERN.match(value):
        raise ValueError("use 3 to 30 of a-z, 0-9, - and _")
    if value in RESERVED_USERNAMES:
        raise ValueError(f"{value!r} is reserved")
    return value


def _email(value: str) -> str:
    return value.strip().lower()


@cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def _timezone(value: str) -> str:
    if value not in _zones():
        raise ValueError(f"{value!r} is not an IANA time zone such as Europe/Paris")
    return value


Username = Annotated[str, NO_CONTROL, AfterValidator(_username)]
Email = Annotated[EmailStr, Field(max_length=EMAIL_MAX_LENGTH), NO_CONTROL, AfterValidator(_email)]
DisplayName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), NO_CONTROL]
TimeZone = Annotated[str, NO_CONTROL, AfterValidator(_timezone)]
# Length rules are checked by the password policy, with its own codes; this only bounds input.
Password = Annotated[str, Field(max_length=1024), NO_PROSE_CONTROL]
AvatarUrl = Annotated[str, StringConstraints(max_length=2048, pattern=r"^https://"), NO_CONTROL]


class RegisterIn(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"email": "ada@example.com", "password": "analytical-engine-1843", "username": "ada", "name": "Ada"}
            ]
        }
    )

    email: Email
    password: Password
    username: Username
    name: DisplayName

    @model_validator(mode="wrap")
    @classmethod
    def _every_problem_at_once(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> RegisterIn:
        """The password policy's problems in the same 422 as the fields' (a missing name and a
        too-short password are reported together, not one round trip each)."""
        policy = _password_policy_errors(data)
        try:
            model: RegisterIn = handler(data)
        except ValidationError as error:
            raise ValidationError.from_exception_data(error.title, [*_line_errors(error), *policy]) from None
        if policy:
            raise ValidationError.from_exception_data(cls.__name__, policy)
        return model


def _line_errors(error: ValidationError) -> list[InitErrorDetails]:
    """The errors again, each with its own type and message (rebuilt as custom errors: a built-in
    type would want its original context back)."""
    return [
        InitErrorDetails(type=PydanticCustomError(item["type"], item["msg"]), loc=item["loc"], input=item["input"])
        for item in error.errors()
    ]


def _password_policy_errors(data: Any) -> list[InitErrorDetails]:
    if not isinstance(data, dict) or not isinstance(data.get("password"), str):
        return []
    email, username = data.get("email"), data.get("username")
    problems = password_problems(
        data["password"],
        email=email if isinstance(email, str) else "",
        username=username.strip() if isinstance(username, str) else "",
    )
    return [
        InitErrorDetails(type=PydanticCustomError(problem.code, problem.message), loc=("password",), input="")
        for problem in problems
    ]


class LoginIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"login": "ada", "password": "analytical-engine-1843"}]})

    login: Line = Field(min_length=1, max_length=EMAIL_MAX_LENGTH, description="Email or username.")
    password: Password


class UserOut(BaseModel):
    """The signed-in user's own view of the account."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    username: str
    name: str
    avatar_url: str | None
    email_verified: bool
    email_verified_at: datetime | None
    has_password: bool
    is_superuser: bool
    timezone: str
    profile_public: bool
    created_at: datetime


class PublicProfile(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    username: str
    name: str
    avatar_url: str | None
    created_at: datetime


class TokenOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "token": "cp_3xAmPl3tOk3n-0nlY-sh0wn-0nc3-xxxxxxxxxxxxxxxxx",
                    "expires_at": "2026-12-23T10:00:00Z",
                    "user": {"id": "7b0f7c1e-4a55-4b5e-9a52-1f4c1c2b9d10", "username": "ada"},
                }
            ]
        }
    )

    token: str = Field(description="Bearer token: send `Authorization: Bearer <token>`. Shown only once.")
    expires_at: datetime
    user: UserOut


class UserUpdate(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"name": "Ada L.", "timezone": "Europe/London"}]}
    )

    name: DisplayName | None = None
    username: Username | None = None
    avatar_url: AvatarUrl | None = None
    timezone: TimeZone | None = None
    profile_public: bool | None = None


class PasswordChangeIn(BaseModel):
    current_password: Password | None = Field(
        default=None, description="Required when the account has a password (OAuth-only accounts set a first one)."
    )
    new_password: Password


class TokenIn(BaseModel):
    token: Line = Field(min_length=1, max_length=200)


class OAuthExchangeIn(TokenIn):
    nonce: Line | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="The nonce whose SHA-256 was the `binding` the GitHub sign-in started with, if any.",
    )


class EmailIn(BaseModel):
    email: Email


class PasswordResetIn(BaseModel):
    token: Line = Field(min_length=1, max_length=200)
    new_password: Password


class CliTokenIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "laptop", "expires_in_days": 90}]})

    name: DisplayName
    expires_in_days: int = Field(default=90, ge=1, le=365)


class CliTokenOut(BaseModel):
    id: uuid.UUID
    name: str
    token: str = Field(description="Shown only once; store it in the CLI's config.")
    expires_at: datetime
    created_at: datetime


class SessionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    kind: str
    name: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    ip: str | None
    user_agent: str | None
    current: bool = False


class GitHubDeviceCodeOut(BaseModel):
    """A started GitHub device sign-in: show `user_code` and `verification_uri`, then poll."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "device_code": "gAAAAABn...opaque...",
                    "user_code": "WDJB-MJHT",
                    "verification_uri": "https://github.com/login/device",
                    "expires_in": 900,
                    "interval": 5,
                }
            ]
        }
    )

    device_code: str = Field(
        description="Opaque, sealed by this server (not GitHub's device code): send it back to "
        "`POST /auth/oauth/github/device/token`. A secret until it expires: never show or log it."
    )
    user_code: str = Field(description="The code the user types at `verification_uri`.")
    verification_uri: str = Field(description="Where the user enters `user_code` (GitHub's device page).")
    expires_in: int = Field(description="Seconds until both codes expire.")
    interval: int = Field(description="Seconds to wait between two polls (more after a `slow_down`).")


class GitHubDeviceTokenIn(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"device_code": "gAAAAABn...opaque...", "name": "laptop", "expires_in_days": 90}]
        }
    )

    device_code: Line = Field(min_length=1, max_length=1024, description="From `POST .../device/code`.")
    name: DisplayName | None = Field(default=None, description="The CLI token's name [default: GitHub device sign-in].")
    expires_in_days: int = Field(default=90, ge=1, le=365)
