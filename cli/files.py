"""Writing files that hold secrets: owner-only (0600), atomically, never through a symlink.

One implementation for the broker and the CLI: `broker.files.write_private` (the standard library only),
which writes a temporary file beside the target with O_CREAT|O_EXCL|O_NOFOLLOW and mode 0600, fsyncs it,
renames it over the target and fsyncs the directory. Renaming replaces the target's inode, so a
pre-existing 0644 file (or a symlink planted at the target) is replaced, never written through, and a
reader sees the old content or the new, never half of it.
"""

from __future__ import annotations

from pathlib import Path


def write_private(path: Path, data: bytes, *, mode: int = 0o600, private_dir: bool = False) -> None:
    """Write `data` to `path` atomically with `mode`; create a missing directory 0700 (and force it if asked).

    Raises OSError; callers turn it into a sentence naming what they were writing.
    """
    # Imported on first write: commands that write no file (`strongroom run`) load no broker module.
    from broker.files import write_private as write

    write(path, data, mode=mode, private_dir=private_dir)
