"""Health responses in the IETF "Health Check Response Format for HTTP APIs" draft shape."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

HEALTH_CONTENT_TYPE = "application/health+json"


class HealthStatus(StrEnum):
    PASS = "pass"  # noqa: S105 - a health status, not a password
    WARN = "warn"
    FAIL = "fail"


class CheckResult(BaseModel):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    component_type: str | None = Field(default=None, alias="componentType")
    status: HealthStatus
    observed_value: float | str | bool | None = Field(default=None, alias="observedValue")
    observed_unit: str | None = Field(default=None, alias="observedUnit")
    time: datetime
    output: str | None = Field(default=None, description="Why the check did not pass.")


class Liveness(BaseModel):
    status: HealthStatus = HealthStatus.PASS


class Readiness(BaseModel):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    status: HealthStatus
    version: str
    release_id: str = Field(alias="releaseId")
    service_id: str = Field(default="codepulse", alias="serviceId")
    description: str = "codepulse API readiness"
    checks: dict[str, list[CheckResult]]
