"""Writing files that hold secrets: owner-only (0600), atomically, never through a symlink.

One implementation for the broker and the CLI: `broker.files` (a pure module: the standard library only),
re-exported here so the CLI's callers keep one import.
"""

from __future__ import annotations

from broker.files import fsync_directory, write_private

__all__ = ["fsync_directory", "write_private"]
