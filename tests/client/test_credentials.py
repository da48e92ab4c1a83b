"""The CLI's credentials: created readable by the user only, replaced atomically, read back,
forgotten; the directories follow the platform or the environment."""

from __future__ import annotations

import stat
from pathlib import Path

from codepulse.client.credentials import CREDENTIALS_FILE, Credentials, config_dir, state_dir


def test_credentials_are_private_to_the_user_and_read_back(tmp_path: Path) -> None:
    saved = Credentials("https://codepulse.example", "cp_secret-token")
    path = saved.save(tmp_path / "config")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Credentials.load(tmp_path / "config") == saved
    assert "cp_secret-token" not in repr(saved)
    Credentials("https://other.example", "cp_next").save(tmp_path / "config")  # replaced
    assert Credentials.load(tmp_path / "config") == Credentials("https://other.example", "cp_next")
    assert sorted(p.name for p in (tmp_path / "config").iterdir()) == [CREDENTIALS_FILE]
    assert Credentials.delete(tmp_path / "config") is True
    assert Credentials.delete(tmp_path / "config") is False
    assert Credentials.load(tmp_path / "config") is None


def test_a_file_that_is_not_ours_is_no_credentials(tmp_path: Path) -> None:
    (tmp_path / CREDENTIALS_FILE).write_text('{"server": 1}')
    assert Credentials.load(tmp_path) is None
    (tmp_path / CREDENTIALS_FILE).write_text("garbage")
    assert Credentials.load(tmp_path) is None


def test_directories_follow_the_environment_or_the_platform(tmp_path: Path) -> None:
    environ = {"CODEPULSE_CONFIG_DIR": str(tmp_path / "c"), "CODEPULSE_STATE_DIR": str(tmp_path / "s")}
    assert (config_dir(environ), state_dir(environ)) == (tmp_path / "c", tmp_path / "s")
    assert config_dir({}).name == "codepulse"
    assert state_dir({}).name == "codepulse"
