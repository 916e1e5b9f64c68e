"""Writing files that hold secrets: owner-only (0600), atomically, never through a symlink.

`write_private` writes a temporary file in the target's directory with O_CREAT|O_EXCL|O_NOFOLLOW and mode
0600, fsyncs it, renames it over the target and fsyncs the directory. Renaming replaces the target's inode,
so a pre-existing 0644 file (or a symlink planted at the target) is replaced, never written through, and a
reader sees the old content or the new, never half of it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_private(path: Path, data: bytes, *, mode: int = 0o600, private_dir: bool = False) -> None:
    """Write `data` to `path` atomically with `mode`; create a missing directory 0700 (and force it if asked).

    Raises OSError; callers turn it into a sentence naming what they were writing.
    """
    directory = path.parent
    if private_dir:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdir's mode is filtered by the umask and ignored for a directory that already exists.
        os.chmod(directory, 0o700)
    elif not directory.is_dir():
        directory.mkdir(mode=0o700, parents=True)
    temporary = directory / f".{path.name}.{os.urandom(8).hex()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            if mode != 0o600:
                os.fchmod(file.fileno(), mode)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    fsync_directory(directory)


def fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable; best effort, as not every platform lets a directory be opened."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
