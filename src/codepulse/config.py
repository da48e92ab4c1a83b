"""Settings: one object read from the environment and `.env`, passed to whoever needs it."""

from __future__ import annotations

import math
import os
import secrets
from collections import Counter
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

MIN_SECRET_KEY_LENGTH = 32
# The sync route's own body limit; the SYNC_*_BODY_BYTES settings choose the real one below it.
SYNC_BODY_BYTES_CEILING = 268_435_456
# Values people paste from tutorials; refused whatever their length.
_KNOWN_WEAK_SECRETS = frozenset(
    {"changeme", "change-me", "secret", "secret-key", "your-secret-key", "dev", "development", "test"}
)


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class PlanLimitOverrides(BaseModel):
    """`PLAN_LIMITS` for one plan: the limits it overrides (null: unlimited)."""

    model_config = ConfigDict(extra="forbid")

    repositories: int | None = Field(default=None, ge=0)
    seats: int | None = Field(default=None, ge=1)
    scans_per_month: int | None = Field(default=None, ge=0)


class SettingsError(Exception):
    """Start-up configuration is wrong; the message names each variable and the problem."""


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _shannon_bits_per_char(value: str) -> float:
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


def secret_key_weakness(value: str) -> str | None:
    """Why `value` is not fit to sign production tokens, or None when it is."""
    if value.lower() in _KNOWN_WEAK_SECRETS:
        return "is a well-known placeholder value"
    if len(value) < MIN_SECRET_KEY_LENGTH:
        return f"must be at least {MIN_SECRET_KEY_LENGTH} characters (generate one with `openssl rand -base64 48`)"
    if _shannon_bits_per_char(value) < 3.0:
        return "has too little variety to be random (generate one with `openssl rand -base64 48`)"
    return None


class Settings(BaseSettings):
    """Every setting codepulse reads. Field names are the environment variable names, unprefixed."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        frozen=True,
    )

    ENVIRONMENT: Environment = Environment.DEVELOPMENT
    VAR_DIR: Path = Path("./var")

    # Security
    SECRET_KEY: SecretStr | None = None

    # Database
    DATABASE_URL: str = "sqlite+aiosqlite:///./var/codepulse.db"
    DB_POOL_SIZE: int = Field(default=10, ge=1, le=200)
    DB_MAX_OVERFLOW: int = Field(default=10, ge=0, le=200)
    DB_POOL_TIMEOUT_SECONDS: float = Field(default=10.0, gt=0)
    DB_POOL_RECYCLE_SECONDS: int = Field(default=1800, ge=-1)
    DB_CONNECT_TIMEOUT_SECONDS: float = Field(default=5.0, gt=0)
    DB_ECHO: bool = False
    SQLITE_BUSY_TIMEOUT_MS: int = Field(default=5000, ge=0)

    # HTTP server (`codepulse serve` flags override these)
    HOST: str = "127.0.0.1"
    PORT: int = Field(default=8000, ge=1, le=65535)
    WEB_CONCURRENCY: int = Field(default=1, ge=1, le=64)
    SHUTDOWN_GRACE_SECONDS: int = Field(default=30, ge=0)

    # HTTP
    CORS_ORIGINS: Annotated[list[str], NoDecode] = Field(default_factory=list)
    MAX_REQUEST_BODY_BYTES: int = Field(default=1_048_576, ge=1024)
    GZIP_MINIMUM_SIZE: int = Field(default=1000, ge=0)
    FORWARDED_ALLOW_IPS: str = "127.0.0.1"

    # Logging
    LOG_LEVEL: LogLevel = LogLevel.INFO
    LOG_JSON: bool = False
    # FastAPI's native OpenTelemetry instrumentation (spans, metrics and logs through the globally
    # configured providers). Off: it costs every request a look for providers even when none is.
    OTEL_ENABLED: bool = False

    # Web dashboard (links in mail, OAuth redirects)
    FRONTEND_URL: str = "http://127.0.0.1:8000"
    # This API as mail readers reach it: links that work without the dashboard (unsubscribe).
    PUBLIC_API_URL: str = "http://127.0.0.1:8000"

    # Auth
    FIRST_SUPERUSER_EMAIL: str | None = None
    FIRST_SUPERUSER_PASSWORD: SecretStr | None = None
    # argon2id cost; hashes made with other parameters are upgraded at the next login.
    PASSWORD_HASH_TIME_COST: int = Field(default=3, ge=1, le=20)
    PASSWORD_HASH_MEMORY_KIB: int = Field(default=65536, ge=1024, le=1_048_576)
    PASSWORD_HASH_PARALLELISM: int = Field(default=4, ge=1, le=16)
    # Read requests may reuse a token's authentication this long (0 turns it off); revocations
    # in this process apply at once, on other replicas within this time.
    AUTH_CACHE_SECONDS: float = Field(default=5.0, ge=0, le=300)
    AUTH_CACHE_MAX_ENTRIES: int = Field(default=10_000, ge=1)
    # limits storage URI: memory:// (per process), or e.g. redis://host:6379 with the redis extra.
    RATE_LIMIT_STORAGE_URL: str = "memory://"
    RATE_LIMIT_ENABLED: bool = True

    # Usage sync (`POST /api/v1/sync`). The Burntop CLI does not split uploads: its own, larger limits.
    SYNC_MAX_RECORDS: int = Field(default=5000, ge=1, le=100_000)
    SYNC_MAX_BODY_BYTES: int = Field(default=10_485_760, ge=1024, le=SYNC_BODY_BYTES_CEILING)
    SYNC_BURNTOP_MAX_MESSAGES: int = Field(default=100_000, ge=1, le=1_000_000)
    SYNC_BURNTOP_MAX_BODY_BYTES: int = Field(default=52_428_800, ge=1024, le=SYNC_BODY_BYTES_CEILING)
    SYNC_RATE_LIMIT: str = "60/minute"

    # Billing: the plan of every organization no subscription or operator has put on another
    # (codepulse.billing.plans), limits overridden per plan and resource
    # ({"free": {"repositories": 5}}; null is unlimited), and the Stripe prices of the paid plans.
    DEFAULT_PLAN: Literal["free", "pro", "team", "enterprise"] = "free"
    PLAN_LIMITS: dict[Literal["free", "pro", "team", "enterprise"], PlanLimitOverrides] = Field(default_factory=dict)
    STRIPE_PRICE_PRO: str | None = None
    STRIPE_PRICE_TEAM: str | None = None
    # Stripe. Without a secret key billing runs self-hosted: every organization is on its assigned
    # plan or DEFAULT_PLAN, and checkout, the portal and invoices answer 503.
    STRIPE_SECRET_KEY: SecretStr | None = None
    STRIPE_WEBHOOK_SECRET: SecretStr | None = None
    # The API's address (tests point it at a local stub).
    STRIPE_API_BASE: str = "https://api.stripe.com"
    STRIPE_TIMEOUT_SECONDS: float = Field(default=10.0, gt=0, le=120)
    # A past-due subscription keeps its plan this long, then the free plan's limits apply.
    BILLING_PAST_DUE_GRACE_DAYS: int = Field(default=7, ge=0, le=90)

    # Notifications: read ones are deleted this long after they were read.
    NOTIFICATIONS_RETENTION_DAYS: int = Field(default=90, ge=1, le=3650)
    # The live stream: a comment this often keeps proxies from closing an idle stream (and the
    # stream looks for anything a lost wake-up missed).
    NOTIFICATIONS_STREAM_KEEPALIVE_SECONDS: float = Field(default=15.0, gt=0, le=300)

    # Repositories: hosts that may be cloned although they are (or resolve to) non-public
    # addresses, and the development/test switch that allows every such host (unsafe elsewhere).
    ALLOWED_GIT_HOSTS: Annotated[list[str], NoDecode] = Field(default_factory=list)
    ALLOW_LOCAL_REPOSITORIES: bool = False

    # Mail: SMTP when SMTP_HOST is set, otherwise (development and tests) messages are written to
    # the log. Production needs SMTP_HOST (password resets, verification and invitations are
    # mailed) unless MAIL_DISABLED says it runs without mail on purpose: then nothing is sent and
    # every message is recorded `failed` in the outbox.
    SMTP_HOST: str | None = None
    MAIL_DISABLED: bool = False
    SMTP_PORT: int = Field(default=587, ge=1, le=65535)
    SMTP_USERNAME: str | None = None
    SMTP_PASSWORD: SecretStr | None = None
    # starttls (upgrade on 587), tls (implicit, 465) or none (local relays, tests).
    SMTP_SECURITY: Literal["starttls", "tls", "none"] = "starttls"
    SMTP_TIMEOUT_SECONDS: float = Field(default=10.0, gt=0)
    MAIL_FROM: str = "codepulse <no-reply@codepulse.localhost>"
    # The outbox: attempts per message (retried with TASK_RETRY_BACKOFF_SECONDS doubling), how
    # long a sent or failed message's body is kept, and how long its row.
    MAIL_MAX_ATTEMPTS: int = Field(default=8, ge=1, le=100)
    MAIL_BODY_RETENTION_HOURS: int = Field(default=72, ge=0, le=24 * 365)
    MAIL_OUTBOX_RETENTION_DAYS: int = Field(default=30, ge=1, le=3650)

    # GitHub OAuth (GitHub Enterprise: change both base URLs)
    GITHUB_CLIENT_ID: str | None = None
    GITHUB_CLIENT_SECRET: SecretStr | None = None
    GITHUB_URL: str = "https://github.com"
    GITHUB_API_URL: str = "https://api.github.com"
    GITHUB_TIMEOUT_SECONDS: float = Field(default=10.0, gt=0)

    # Health
    READINESS_TIMEOUT_SECONDS: float = Field(default=1.0, gt=0, le=10)

    # Scheduler
    SCHEDULER_ENABLED: bool = True
    SCHEDULER_MISFIRE_GRACE_SECONDS: int = Field(default=60, ge=1)
    JOB_RUNS_RETENTION_DAYS: int = Field(default=30, ge=1)

    # Task queue and workers (scans now; billing and notifications later)
    WORKER_CONCURRENCY: int = Field(default=2, ge=0, le=64)
    TASK_LEASE_SECONDS: float = Field(default=30.0, gt=0, le=3600)
    TASK_POLL_SECONDS: float = Field(default=1.0, gt=0, le=60)
    TASK_RETRY_BACKOFF_SECONDS: float = Field(default=10.0, ge=0, le=86_400)
    TASK_MAX_ATTEMPTS: int = Field(default=3, ge=1, le=100)
    WORKER_SHUTDOWN_GRACE_SECONDS: float = Field(default=10.0, ge=0, le=3600)
    TASKS_RETENTION_DAYS: int = Field(default=14, ge=1)

    # Connecting a repository asks the remote (git ls-remote) whether it is a Git repository and
    # for its default branch, within this many seconds; 0 turns the check off.
    REPOSITORY_PROBE_SECONDS: float = Field(default=10.0, ge=0, le=60)

    # Scans
    SCAN_MAX_FILE_BYTES: int = Field(default=1_048_576, ge=1024)
    SCAN_MAX_REPOSITORY_BYTES: int = Field(default=524_288_000, ge=1024)
    # A history scan: every file version it reads, added up (the clone itself is held to the
    # repository limit above).
    SCAN_MAX_HISTORY_BYTES: int = Field(default=2_147_483_648, ge=1024)
    SCAN_CLONE_TIMEOUT_SECONDS: float = Field(default=300.0, gt=0, le=3600)
    # Engine processes per worker process; 0: one per CPU core.
    SCAN_PROCESSES: int = Field(default=0, ge=0, le=64)
    # Clones go under <SCAN_WORK_DIR>/<process>/; empty: <system temp>/codepulse-scans-<uid>.
    SCAN_WORK_DIR: Path | None = None
    # CPU time a repository's .codepulse.yml may take to parse and apply (in the engine pool).
    SCAN_CONFIG_TIME_BUDGET_SECONDS: float = Field(default=10.0, gt=0, le=300)

    # Leaderboard: every board recomputed on this interval (minutes); the community benchmarks
    # hourly. Cache efficiency ranks only people with at least this many tokens in the window.
    LEADERBOARD_RECOMPUTE_MINUTES: int = Field(default=10, ge=1, le=1440)
    LEADERBOARD_CACHE_MIN_TOKENS: int = Field(default=1_000_000, ge=0)
    # How long a process serves a board page from memory before reading the snapshot again.
    LEADERBOARD_CACHE_SECONDS: float = Field(default=5.0, ge=0, le=600)

    @field_validator("SCAN_WORK_DIR", mode="before")
    @classmethod
    def _empty_work_dir(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("CORS_ORIGINS", mode="before")
    @classmethod
    def _parse_origins(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("ALLOWED_GIT_HOSTS", mode="before")
    @classmethod
    def _parse_git_hosts(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("ALLOWED_GIT_HOSTS")
    @classmethod
    def _check_git_hosts(cls, hosts: list[str]) -> list[str]:
        cleaned = [host.strip().lower().removeprefix("[").removesuffix("]").removesuffix(".") for host in hosts]
        for host in cleaned:
            if not host or "/" in host or "@" in host or host.startswith("-"):
                raise ValueError(f"{host!r} is not a host name or IP address (no scheme, path or port)")
        return cleaned

    @field_validator("CORS_ORIGINS")
    @classmethod
    def _check_origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"{origin!r} is not an origin like https://app.example.com")
        return [origin.rstrip("/") for origin in origins]

    @field_validator("FRONTEND_URL", "PUBLIC_API_URL", "GITHUB_URL", "GITHUB_API_URL")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")

    @field_validator("SYNC_RATE_LIMIT")
    @classmethod
    def _check_rate_limit(cls, value: str) -> str:
        from limits import parse_many

        try:
            parse_many(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a rate limit like 60/minute or 60/minute;1000/hour") from None
        return value

    @field_validator("LOG_LEVEL", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("DATABASE_URL")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        # SQLAlchemy is imported when a URL is checked, not with this module: `codepulse scan`
        # builds its settings without a database and need not pay the ~150 ms.
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError("is not a database URL") from None
        if url.drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
            raise ValueError(
                f"driver {url.drivername!r} is not supported; "
                "use sqlite+aiosqlite:///path.db or postgresql+asyncpg://user:pass@host/db"
            )
        return value

    @model_validator(mode="after")
    def _check_local_repositories(self) -> Self:
        if self.ENVIRONMENT is Environment.PRODUCTION and self.ALLOW_LOCAL_REPOSITORIES:
            raise ValueError(
                "ALLOW_LOCAL_REPOSITORIES must be false when ENVIRONMENT=production; "
                "list trusted internal Git hosts in ALLOWED_GIT_HOSTS instead"
            )
        return self

    @model_validator(mode="after")
    def _check_secret_key(self) -> Self:
        if self.ENVIRONMENT is Environment.PRODUCTION:
            if self.SECRET_KEY is None:
                raise ValueError("SECRET_KEY is required when ENVIRONMENT=production")
            weakness = secret_key_weakness(self.SECRET_KEY.get_secret_value())
            if weakness:
                raise ValueError(f"SECRET_KEY {weakness}")
        return self

    @model_validator(mode="after")
    def _check_mail(self) -> Self:
        if self.ENVIRONMENT is Environment.PRODUCTION and not self.SMTP_HOST and not self.MAIL_DISABLED:
            raise ValueError(
                "SMTP_HOST is required when ENVIRONMENT=production (password resets, email verification "
                "and invitations are mailed); set MAIL_DISABLED=true to run without mail on purpose"
            )
        return self

    @cached_property
    def database_url(self) -> URL:
        from sqlalchemy.engine import make_url

        return make_url(self.DATABASE_URL)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.get_backend_name() == "sqlite"

    @property
    def is_production(self) -> bool:
        return self.ENVIRONMENT is Environment.PRODUCTION

    @property
    def mail_backend(self) -> Literal["smtp", "log", "disabled"]:
        """How mail goes out: `disabled` (MAIL_DISABLED), `smtp` (SMTP_HOST) or `log`."""
        if self.MAIL_DISABLED:
            return "disabled"
        return "smtp" if self.SMTP_HOST else "log"

    @property
    def secret_key(self) -> str:
        if self.SECRET_KEY is None:  # pragma: no cover - load_settings always fills it
            raise SettingsError("SECRET_KEY: not resolved; build settings with load_settings()")
        return self.SECRET_KEY.get_secret_value()


def _format_validation_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        name = ".".join(str(part) for part in item["loc"]) or "settings"
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "missing":
            message = "is required but not set"
        lines.append(f"{name}: {message}" if item["loc"] else message)
    return "\n".join(lines)


def _development_secret_key(var_dir: Path) -> str:
    """A random key generated once and kept under VAR_DIR, so dev sessions survive restarts."""
    path = var_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    var_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    # O_EXCL: when two processes start together, one writes and the other reads its key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key


def load_settings(**overrides: Any) -> Settings:
    """Read settings, raising SettingsError with one line per bad variable (no traceback needed)."""
    try:
        settings = Settings(**overrides)
    except ValidationError as error:
        raise SettingsError(_format_validation_error(error)) from None
    if settings.SECRET_KEY is None:
        key = _development_secret_key(settings.VAR_DIR)
        settings = settings.model_copy(update={"SECRET_KEY": SecretStr(key)})
    if settings.is_sqlite:
        database = settings.database_url.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
    return settings
