"""Private files: written 0600 atomically in a 0700 directory."""

from __future__ import annotations

import os
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


def write_private(path: Path, data: bytes, *, mode: int = 0o600, private_dir: bool = False) -> None:
    """Write `data` to `path` atomically with `mode` (0600 unless asked): a crash leaves the old file or the new one.

    The temporary file beside the target is created O_EXCL|O_NOFOLLOW 0600, written, fsynced and renamed over
    the target, so a pre-existing looser file or a symlink planted at the target is replaced, never written
    through; the directory is fsynced after the rename. A missing directory is created 0700; `private_dir`
    also forces an existing one to 0700. Raises OSError; callers say what they were writing.
    """
    _prepare_dir(path.parent, force=private_dir)
    tmp = _written_temporary(path, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def create_private(path: Path, data: bytes) -> bool:
    """Create `path` as a new 0600 file holding `data`, atomically and never replacing one; False if it exists.

    For files several processes may race to create (a development key): the loser reads the winner's.
    """
    _prepare_dir(path.parent, force=False)
    tmp = _written_temporary(path, data, 0o600)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    fsync_directory(path.parent)
    return True


def private_temporary(path: Path) -> Path:
    """A new, empty 0600 file beside `path` (created O_EXCL) for a writer that needs a path rather than bytes
    (a SQLite file); `install` then puts it in place, or the caller unlinks it."""
    _prepare_dir(path.parent, force=False)
    return _written_temporary(path, b"", 0o600)


def install(tmp: Path, path: Path) -> None:
    """Make `tmp` durable and rename it over `path`: a crash leaves the old file or the new one."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make a rename or link in `directory` durable (skipped where a directory cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prepare_dir(directory: Path, *, force: bool) -> None:
    ensure_private_dir(directory)
    if force:
        # mkdir's mode is filtered by the umask and ignored for a directory that already exists.
        os.chmod(directory, 0o700)


def _written_temporary(path: Path, data: bytes, mode: int) -> Path:
    """A fsynced temporary file beside `path` holding `data` with `mode`, for the caller to rename or link."""
    tmp = path.with_name(f".{path.name}.{os.urandom(8).hex()}.tmp")  # not `secrets`: the CLI imports this
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            if mode != 0o600:
                os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp
