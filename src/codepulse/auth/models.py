"""Users, bearer sessions, linked OAuth accounts and one-time tokens."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from codepulse.db import Base, Timestamps, UUIDPrimaryKey

# RFC 5321 caps a forward path at 256 octets; 320 covers every address we accept.
EMAIL_MAX_LENGTH = 320
TOKEN_HASH_LENGTH = 64  # hex SHA-256


class User(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "users"
    # Accounts created per day (the superusers' statistics).
    __table_args__ = (Index("ix_users_created_at", "created_at"),)

    # Stored lower-cased: comparisons are case-insensitive and the unique index enforces it.
    email: Mapped[str] = mapped_column(String(EMAIL_MAX_LENGTH), unique=True)
    username: Mapped[str] = mapped_column(String(30), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    avatar_url: Mapped[str | None] = mapped_column(String(2048))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    email_verified_at: Mapped[datetime | None]
    is_superuser: Mapped[bool] = mapped_column(Boolean, default=False)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    # Private by default, whatever path creates the account (registration, GitHub sign-up, the
    # first superuser): a user opts in to public stats and boards with PATCH /users/me.
    profile_public: Mapped[bool] = mapped_column(Boolean, default=False)
    # Set by a superuser (PATCH /admin/users/{id}): no sign-in and no session is accepted.
    disabled_at: Mapped[datetime | None]

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None

    @property
    def email_verified(self) -> bool:
        return self.email_verified_at is not None

    @property
    def has_password(self) -> bool:
        return self.password_hash is not None


class SessionKind(StrEnum):
    WEB = "web"
    CLI = "cli"


class AuthSession(UUIDPrimaryKey, Base):
    """A bearer token. Only the SHA-256 of the token is stored."""

    __tablename__ = "auth_sessions"
    __table_args__ = (Index("ix_auth_sessions_user_id", "user_id"), Index("ix_auth_sessions_expires_at", "expires_at"))

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(TOKEN_HASH_LENGTH), unique=True)
    kind: Mapped[str] = mapped_column(String(10))
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime]
    # Sliding expiry for web sessions; never later than absolute_expires_at.
    expires_at: Mapped[datetime]
    absolute_expires_at: Mapped[datetime]
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(lazy="raise")


class OAuthAccount(UUIDPrimaryKey, Timestamps, Base):
    """A linked external identity, keyed on the provider's immutable numeric id."""

    __tablename__ = "oauth_accounts"
    __table_args__ = (
        UniqueConstraint("provider", "provider_user_id"),
        UniqueConstraint("user_id", "provider"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(20))
    provider_user_id: Mapped[str] = mapped_column(String(64))
    login: Mapped[str] = mapped_column(String(100))
    email: Mapped[str | None] = mapped_column(String(EMAIL_MAX_LENGTH))
    # Fernet ciphertext (key derived from SECRET_KEY); never the clear token.
    access_token_encrypted: Mapped[str | None] = mapped_column(Text)
    scopes: Mapped[str | None] = mapped_column(String(500))


class TokenPurpose(StrEnum):
    VERIFY_EMAIL = "verify_email"
    PASSWORD_RESET = "password_reset"  # noqa: S105 - a purpose name, not a password
    OAUTH_EXCHANGE = "oauth_exchange"
    OAUTH_LINK = "oauth_link"


class OneTimeToken(UUIDPrimaryKey, Base):
    """Single-use tokens sent by mail or through a redirect. Only the hash is stored."""

    __tablename__ = "one_time_tokens"
    __table_args__ = (
        Index("ix_one_time_tokens_user_id", "user_id"),
        Index("ix_one_time_tokens_expires_at", "expires_at"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(20))
    token_hash: Mapped[str] = mapped_column(String(TOKEN_HASH_LENGTH), unique=True)
    # For email verification: the address the mail went to; a changed email voids the token.
    email: Mapped[str | None] = mapped_column(String(EMAIL_MAX_LENGTH))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    # Device of the OAuth callback, replayed onto the web session the exchange creates.
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(512))
