"""Loopback port numbers for the servers the tests start.

A number from bind(0) is free only at that instant: the kernel hands out the same ephemeral range to every
process's bind(0) and outgoing connection, so between choosing a number and a server binding it another
xdist worker's server could take it (CI once scraped an HAProxy of another test on a broker's metrics port).
Here each xdist worker hands out numbers from its own block below the kernel's ephemeral range, where
neither bind(0) nor a connection's local port is ever placed, and a number is not handed out again
before the rest of the block has been.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

BLOCK = 500  # numbers per xdist worker; a run uses far fewer servers than this per worker
_FLOOR = 10_000  # below it sit well-known services


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for bind(0) and outgoing connections (Linux's default when unreadable)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def worker_index() -> int:
    """This xdist worker's number (gw3 -> 3); 0 outside xdist."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else 0


def block(index: int) -> range:
    """The numbers worker `index` hands out: below the ephemeral range when room is left there, else above."""
    low, high = ephemeral_range()
    if low - _FLOOR >= BLOCK:
        start, size = _FLOOR, low - _FLOOR
    else:
        start, size = high + 1, 65536 - (high + 1)
    blocks = max(size // BLOCK, 1)
    first = start + (index % blocks) * BLOCK
    return range(first, first + min(BLOCK, size))


class _Allocator:
    """Walks this process's block from a random place (two runs at once rarely meet), skipping taken ports."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._numbers: Iterator[int] | None = None

    def take(self) -> int:
        with self._lock:
            if self._numbers is None:
                mine = block(worker_index())
                offset = secrets.randbelow(len(mine))  # not `random`: a seeded test run would repeat it
                self._numbers = itertools.cycle([*mine[offset:], *mine[:offset]])
            for _ in range(BLOCK):
                port = next(self._numbers)
                if _bindable(port):
                    return port
        raise RuntimeError(f"no free port in {block(worker_index())}")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


_ALLOCATOR = _Allocator()


def free_port() -> int:
    """A loopback port nothing listens on, that no other worker of this run will be given."""
    return _ALLOCATOR.take()


def free_ports(count: int) -> list[int]:
    """`count` distinct such ports."""
    return [_ALLOCATOR.take() for _ in range(count)]


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port where nothing listens and nothing can start listening while the block runs."""
    # Bound here but never listened on: a connection is refused, and no other process can take the port
    # meanwhile.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])
