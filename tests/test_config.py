from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from codepulse.config import Environment, SettingsError, load_settings

STRONG_KEY = "Zx8-q7RkT2mWv9LpB4nY-Hc3Jd6Fs1Ga5Ke0Pu"


def load(tmp_path: Path, **overrides: object) -> object:
    return load_settings(_env_file=None, VAR_DIR=tmp_path / "var", **overrides)


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    settings = load_settings(_env_file=None, VAR_DIR=tmp_path / "var")
    assert settings.DATABASE_URL == "sqlite+aiosqlite:///./var/codepulse.db"
    assert settings.ENVIRONMENT is Environment.DEVELOPMENT
    assert settings.SCHEDULER_ENABLED is True
    assert settings.CORS_ORIGINS == []


def test_reads_environment_and_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("LOG_LEVEL=debug\nCORS_ORIGINS=https://a.test, https://b.test/\n")
    monkeypatch.setenv("LOG_JSON", "true")
    settings = load_settings(_env_file=env_file, VAR_DIR=tmp_path / "var")
    assert settings.LOG_LEVEL.value == "DEBUG"
    assert settings.LOG_JSON is True
    assert settings.CORS_ORIGINS == ["https://a.test", "https://b.test"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"DATABASE_URL": "mysql://x@y/z"}, "DATABASE_URL: driver 'mysql' is not supported"),
        ({"DATABASE_URL": "not a url"}, "DATABASE_URL: is not a database URL"),
        ({"DB_POOL_SIZE": "lots"}, "DB_POOL_SIZE: Input should be a valid integer"),
        ({"LOG_LEVEL": "chatty"}, "LOG_LEVEL: Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
        ({"CORS_ORIGINS": "app.example.com"}, "CORS_ORIGINS: 'app.example.com' is not an origin"),
        ({"ENVIRONMENT": "staging"}, "ENVIRONMENT: Input should be 'development', 'test' or 'production'"),
    ],
)
def test_bad_values_name_the_variable(tmp_path: Path, overrides: dict[str, object], expected: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load(tmp_path, **overrides)
    assert str(raised.value).startswith(expected)
    assert "\n" not in str(raised.value)


def test_production_refuses_missing_or_weak_secret_key(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="SECRET_KEY is required when ENVIRONMENT=production"):
        load(tmp_path, ENVIRONMENT="production")
    for weak in ("changeme", "short-key", "a" * 64):
        with pytest.raises(SettingsError, match="SECRET_KEY"):
            load(tmp_path, ENVIRONMENT="production", SECRET_KEY=weak)
    settings = load_settings(_env_file=None, ENVIRONMENT="production", SECRET_KEY=STRONG_KEY, SMTP_HOST="smtp.test")
    assert settings.secret_key == STRONG_KEY
    assert STRONG_KEY not in repr(settings)


def test_production_refuses_to_run_without_mail_unless_told(tmp_path: Path) -> None:
    # Without SMTP, password resets, verifications and invitations would vanish unnoticed.
    for smtp_host in (None, ""):
        with pytest.raises(SettingsError, match="SMTP_HOST is required when ENVIRONMENT=production") as raised:
            load(tmp_path, ENVIRONMENT="production", SECRET_KEY=STRONG_KEY, SMTP_HOST=smtp_host)
        assert "MAIL_DISABLED=true" in str(raised.value)
    disabled = load(tmp_path, ENVIRONMENT="production", SECRET_KEY=STRONG_KEY, MAIL_DISABLED="true")
    assert disabled.mail_backend == "disabled"  # type: ignore[attr-defined]
    smtp = load(tmp_path, ENVIRONMENT="production", SECRET_KEY=STRONG_KEY, SMTP_HOST="smtp.test")
    assert smtp.mail_backend == "smtp"  # type: ignore[attr-defined]
    # Development keeps writing messages to the log.
    assert load(tmp_path).mail_backend == "log"  # type: ignore[attr-defined]
    assert load(tmp_path, SMTP_HOST="smtp.test", MAIL_DISABLED=True).mail_backend == "disabled"  # type: ignore[attr-defined]


def test_codepulse_serve_refuses_production_without_mail(tmp_path: Path) -> None:
    env = {
        **{name: value for name, value in os.environ.items() if name not in ("SMTP_HOST", "MAIL_DISABLED")},
        "ENVIRONMENT": "production",
        "SECRET_KEY": STRONG_KEY,
        "VAR_DIR": str(tmp_path / "var"),
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'prod.db'}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "codepulse", "serve"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "SMTP_HOST is required when ENVIRONMENT=production" in done.stderr
    assert not (tmp_path / "prod.db").exists()  # refused before anything was touched


def test_development_key_is_generated_once_and_kept(tmp_path: Path) -> None:
    first = load_settings(_env_file=None, VAR_DIR=tmp_path / "var")
    second = load_settings(_env_file=None, VAR_DIR=tmp_path / "var")
    assert first.secret_key == second.secret_key
    assert len(first.secret_key) >= 48
    key_file = tmp_path / "var" / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    other = load_settings(_env_file=None, VAR_DIR=tmp_path / "elsewhere")
    assert other.secret_key != first.secret_key


def test_cli_reports_a_bad_setting_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": "mysql://nope", "DB_POOL_SIZE": "-3", "VAR_DIR": str(tmp_path / "var")}
    result = subprocess.run(
        [sys.executable, "-m", "codepulse", "serve"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    lines = result.stderr.strip().removeprefix("codepulse: configuration error: ").splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("DATABASE_URL: driver 'mysql' is not supported")
    assert lines[1] == "DB_POOL_SIZE: Input should be greater than or equal to 1"
    assert "Traceback" not in result.stderr


def test_env_example_documents_every_setting_with_its_default() -> None:
    from codepulse.config import Settings

    example = Path(__file__).resolve().parent.parent / ".env.example"
    documented = dict(
        line.split("=", 1) for line in example.read_text().splitlines() if line and not line.startswith("#")
    )
    assert set(documented) == set(Settings.model_fields)
    defaults = Settings.model_construct()
    for name, value in documented.items():
        default = getattr(defaults, name)
        if default is None or default == []:
            assert value == "", name
        elif isinstance(default, bool):
            assert value == str(default).lower(), name
        elif hasattr(default, "value"):
            assert value == default.value, name
        elif isinstance(default, Path):
            assert Path(value) == default, name
        else:
            assert value == str(default), name
