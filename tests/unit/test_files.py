"""The one atomic private-file writer (broker/files.py), used by the broker and, re-exported, by the CLI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from broker.files import create_private, install, private_temporary, write_private


def test_the_cli_writes_with_the_broker_writer(tmp_path: Path) -> None:
    import cli.files

    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("keep")
    target = tmp_path / "sub" / "profile"
    target.parent.mkdir(mode=0o755)
    target.symlink_to(elsewhere)
    cli.files.write_private(target, b"canary-value", mode=0o644, private_dir=True)
    assert elsewhere.read_text() == "keep" and not target.is_symlink()
    assert target.read_bytes() == b"canary-value"
    assert target.stat().st_mode & 0o777 == 0o644
    assert target.parent.stat().st_mode & 0o777 == 0o700


def test_a_symlink_at_the_target_is_replaced_not_written_through(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("keep")
    target = tmp_path / "credentials"
    target.symlink_to(elsewhere)
    write_private(target, b"canary-value")
    assert elsewhere.read_text() == "keep"
    assert not target.is_symlink()
    assert target.read_bytes() == b"canary-value"
    assert target.stat().st_mode & 0o777 == 0o600


def test_a_missing_directory_is_created_0700_and_private_dir_forces_an_existing_one(tmp_path: Path) -> None:
    fresh = tmp_path / "a" / "b" / "f"
    write_private(fresh, b"x")
    assert fresh.parent.stat().st_mode & 0o777 == 0o700
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o755)
    write_private(loose / "f", b"x")
    assert loose.stat().st_mode & 0o777 == 0o755, "an existing directory keeps its mode unless asked"
    write_private(loose / "f", b"x", private_dir=True)
    assert loose.stat().st_mode & 0o777 == 0o700


def test_a_wider_mode_is_set_before_the_data_is_written(tmp_path: Path) -> None:
    target = tmp_path / "hosts"
    old = os.umask(0o077)
    try:
        write_private(target, b"public", mode=0o644)
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o644


def test_a_failed_rename_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")

    def refuse(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="No space"):
        write_private(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_create_private_never_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "keys" / "dev.pem"
    assert create_private(target, b"first") is True
    assert create_private(target, b"second") is False
    assert target.read_bytes() == b"first"
    assert target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["dev.pem"]


def test_a_private_temporary_is_installed_over_a_looser_file_with_its_own_mode(tmp_path: Path) -> None:
    """For writers that need a path (a SQLite backup): the temporary is 0600 beside the target, and
    installing it replaces the old file whole."""
    target = tmp_path / "b.backup"
    target.write_bytes(b"old")
    os.chmod(target, 0o644)
    tmp = private_temporary(target)
    assert tmp.parent == target.parent and tmp.stat().st_mode & 0o777 == 0o600
    tmp.write_bytes(b"new")

    install(tmp, target)

    assert target.read_bytes() == b"new" and target.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.backup"]
