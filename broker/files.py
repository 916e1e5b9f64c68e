"""Private files: written 0600 atomically in a 0700 directory."""

from __future__ import annotations

import os
import secrets
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
    ensure_private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
