"""The credential cache: its place, its permissions, atomic writes, and the renewal rule (time injected)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cli_test_support import canary

from cli import credentials
from cli.client import Principal
from cli.credentials import Credential
from cli.errors import CliError


def credential(
    *, token: str = "srt_x", obtained_at: float = 1000.0, expires_in: int = 900, max_in: int | None = 28800
) -> Credential:
    return Credential(
        url="https://broker.example",
        token=token,
        accessor="sra_x",
        principal=Principal(id="p1", type="user", name="alice"),
        obtained_at=obtained_at,
        expires_in=expires_in,
        max_expires_in=max_in,
    )


def test_cache_path_follows_xdg_config_home(tmp_path: Path) -> None:
    assert (
        credentials.cache_path({"XDG_CONFIG_HOME": str(tmp_path)})
        == tmp_path / "strongroom" / "credentials.json"
    )


@pytest.mark.parametrize("xdg", [None, "", "relative/dir"])
def test_cache_path_falls_back_to_dot_config_when_xdg_is_unset_or_relative(
    xdg: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    environ = {} if xdg is None else {"XDG_CONFIG_HOME": xdg}

    assert credentials.cache_path(environ) == tmp_path / ".config" / "strongroom" / "credentials.json"


def test_save_creates_a_0700_directory_and_a_0600_file_and_load_reads_it_back(tmp_path: Path) -> None:
    path = tmp_path / "config" / "strongroom" / "credentials.json"
    original = credential(token=canary())

    credentials.save(path, original)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert credentials.load(path) == original
    assert os.listdir(path.parent) == ["credentials.json"]  # no temporary file left behind


def test_save_under_a_permissive_umask_is_still_0600_and_0700(tmp_path: Path) -> None:
    path = tmp_path / "strongroom" / "credentials.json"
    previous = os.umask(0)
    try:
        credentials.save(path, credential())
    finally:
        os.umask(previous)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_save_replaces_a_0644_file_and_tightens_a_0755_directory(tmp_path: Path) -> None:
    path = tmp_path / "strongroom" / "credentials.json"
    path.parent.mkdir(mode=0o755)
    path.parent.chmod(0o755)
    path.write_text("old")
    path.chmod(0o644)
    old_inode = path.stat().st_ino

    credentials.save(path, credential())

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.stat().st_ino != old_inode  # replaced by rename, not rewritten in place


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "strongroom" / "credentials.json"
    credentials.save(path, credential(token="srt_old"))

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)

    with pytest.raises(CliError, match=r"cannot write the session cache .*: no space left on device"):
        credentials.save(path, credential(token="srt_new"))

    loaded = credentials.load(path)
    assert loaded is not None and loaded.token == "srt_old"
    assert os.listdir(path.parent) == ["credentials.json"]


def test_load_tightens_a_cache_file_someone_made_readable(tmp_path: Path) -> None:
    path = tmp_path / "strongroom" / "credentials.json"
    credentials.save(path, credential())
    path.chmod(0o644)

    assert credentials.load(path) is not None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_load_of_a_missing_file_is_none(tmp_path: Path) -> None:
    assert credentials.load(tmp_path / "nothing.json") is None


@pytest.mark.parametrize("content", [b"", b"[]", b'{"format": 2}', b'{"format": 1, "url": "x"}', b"\xff"])
def test_load_of_a_damaged_file_says_to_log_in(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "credentials.json"
    path.write_bytes(content)

    with pytest.raises(CliError, match="unreadable: run strongroom login"):
        credentials.load(path)


def test_delete_reports_whether_there_was_a_file(tmp_path: Path) -> None:
    path = tmp_path / "strongroom" / "credentials.json"
    credentials.save(path, credential())

    assert credentials.delete(path) is True
    assert credentials.delete(path) is False
    assert not path.exists()


def test_repr_never_shows_the_token() -> None:
    secret = canary()

    assert secret not in repr(credential(token=secret))


@pytest.mark.parametrize(
    ("elapsed", "due"),
    [(0, False), (599, False), (599.9, False), (600, True), (899, True), (5000, True)],
)
def test_renewal_is_due_at_two_thirds_of_the_lifetime(elapsed: float, due: bool) -> None:
    assert credential(obtained_at=1000.0, expires_in=900).needs_renewal(1000.0 + elapsed) is due


def test_renewal_is_due_when_the_local_clock_went_backwards() -> None:
    assert credential(obtained_at=1000.0).needs_renewal(999.0) is True


def test_renewal_is_not_due_when_the_lifetime_already_reaches_the_hard_maximum() -> None:
    assert credential(expires_in=900, max_in=900).needs_renewal(1000.0 + 800) is False


def test_renewal_is_due_when_the_hard_maximum_is_unknown() -> None:
    assert credential(expires_in=900, max_in=None).needs_renewal(1000.0 + 700) is True
