"""The repositories domain's settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from codepulse.config import SettingsError, load_settings

STRONG_KEY = "Zx8-q7RkT2mWv9LpB4nY-Hc3Jd6Fs1Ga5Ke0Pu"


def test_allowed_git_hosts_are_normalised(tmp_path: Path) -> None:
    settings = load_settings(_env_file=None, VAR_DIR=tmp_path, ALLOWED_GIT_HOSTS=" Git.Corp.Example. , [::1],10.0.0.12")
    assert settings.ALLOWED_GIT_HOSTS == ["git.corp.example", "::1", "10.0.0.12"]
    for bad in ("https://git.corp.example", "git@corp", "-oProxyCommand"):
        with pytest.raises(SettingsError, match="ALLOWED_GIT_HOSTS"):
            load_settings(_env_file=None, VAR_DIR=tmp_path, ALLOWED_GIT_HOSTS=bad)


def test_local_repositories_are_refused_in_production(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="ALLOW_LOCAL_REPOSITORIES must be false"):
        load_settings(
            _env_file=None, VAR_DIR=tmp_path, ENVIRONMENT="production", SECRET_KEY=STRONG_KEY,
            ALLOW_LOCAL_REPOSITORIES=True,
        )  # fmt: skip
    assert load_settings(_env_file=None, VAR_DIR=tmp_path, ALLOW_LOCAL_REPOSITORIES=True).ALLOW_LOCAL_REPOSITORIES
