"""Readiness checks: database round-trip, schema at head, scheduler running when enabled, and how
mail goes out (`warn` when MAIL_DISABLED: ready, but nothing is mailed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy import text

from codepulse import __version__
from codepulse.db import Database
from codepulse.health.schemas import CheckResult, HealthStatus, Readiness
from codepulse.migrations import schema_version

log = structlog.get_logger("codepulse.health")


@dataclass(frozen=True)
class ReadinessProbe:
    database: Database
    expected_revision: str | None
    timeout_seconds: float
    scheduler_enabled: bool
    scheduler_running: Callable[[], bool]
    clock: Callable[[], datetime]
    mail_backend: str = "smtp"
    production: bool = False

    async def check(self) -> Readiness:
        checks: dict[str, list[CheckResult]] = {}
        database_ok = await self._timed("database:responseTime", checks, self._database_round_trip)
        if database_ok:
            await self._timed("database:schema", checks, self._schema_at_head, unit=None)
        if self.scheduler_enabled:
            running = self.scheduler_running()
            checks["scheduler:running"] = [
                CheckResult(
                    component_type="component",
                    status=HealthStatus.PASS if running else HealthStatus.FAIL,
                    observed_value=running,
                    time=self.clock(),
                    output=None if running else "the scheduler is not running",
                )
            ]
        checks["mail:backend"] = [self._mail()]
        statuses = {result.status for results in checks.values() for result in results}
        if HealthStatus.FAIL in statuses or not database_ok:
            overall = HealthStatus.FAIL
        else:
            overall = HealthStatus.WARN if HealthStatus.WARN in statuses else HealthStatus.PASS
        return Readiness(status=overall, version="1", release_id=__version__, checks=checks)

    def _mail(self) -> CheckResult:
        status, output = HealthStatus.PASS, None
        if self.mail_backend == "disabled":
            status, output = HealthStatus.WARN, "MAIL_DISABLED: no mail is sent (password resets, invitations)"
        elif self.mail_backend == "log" and self.production:
            status, output = HealthStatus.FAIL, "SMTP_HOST is not set: no mail is sent"
        return CheckResult(
            component_type="component",
            status=status,
            observed_value=self.mail_backend,
            time=self.clock(),
            output=output,
        )

    async def _timed(
        self,
        name: str,
        checks: dict[str, list[CheckResult]],
        probe: Callable[[], Awaitable[str | None]],
        unit: str | None = "ms",
    ) -> bool:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_seconds):
                problem = await probe()
        except TimeoutError:
            problem = f"no answer within {self.timeout_seconds:g} s"
        except Exception as exc:  # any driver error means "not ready", never a 500
            problem = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
        if problem:
            log.warning("health.check_failed", check=name, output=problem)
        checks[name] = [
            CheckResult(
                component_type="datastore",
                status=HealthStatus.FAIL if problem else HealthStatus.PASS,
                observed_value=elapsed_ms if unit == "ms" else self.expected_revision,
                observed_unit=unit,
                time=self.clock(),
                output=problem,
            )
        ]
        return problem is None

    async def _database_round_trip(self) -> str | None:
        async with self.database.session(write=False) as session:
            await session.execute(text("SELECT 1"))
        return None

    async def _schema_at_head(self) -> str | None:
        async with self.database.session(write=False) as session:
            revision = await schema_version(session)
        if revision != self.expected_revision:
            return f"schema at {revision or 'nothing'}, expected {self.expected_revision}: run `codepulse migrate`"
        return None
