"""Private files: written 0600 atomically in a 0700 directory."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


def ensure_private_dir(path: Path) -> None:
    """Create the directory 0700 if missing (an existing one keeps its mode)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def loose_mode(path: Path, what: str) -> str | None:
    """Why `path` is open to other users (a sentence naming it and the chmod that fixes it), or None.

    Every private file and directory of the broker is checked the same way: the key files, the data
    directory, the SQLite database and its -wal/-shm/-journal files, the audit file.
    """
    mode = path.stat().st_mode & 0o777
    if not mode & 0o077:
        return None
    if path.is_dir():
        return f"{what} {path} is open to other users (mode {mode:o}); chmod 700 it"
    return f"{what} {path} is readable by others (mode {mode:o}); chmod 600 it"


def write_private(path: Path, data: bytes) -> None:
    """Write data to path as 0600, atomically: a crash leaves the old file or the new one, never half."""
    with _staged(path, data) as tmp:
        os.replace(tmp, path)
    _sync_dir(path.parent)


def create_private(path: Path, data: bytes) -> bool:
    """Create path as 0600 holding data, atomically, never replacing a file already there (two brokers may
    race to create it): whether this call created it."""
    with _staged(path, data) as tmp:
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
    _sync_dir(path.parent)
    return True


@contextlib.contextmanager
def _staged(path: Path, data: bytes) -> Iterator[Path]:
    """A 0600 temporary file beside path holding data, on disk, removed on leaving (renamed or linked by then)."""
    ensure_private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def _sync_dir(path: Path) -> None:
    # The new directory entry must reach the disk too, or a crash can lose a file already reported written.
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
