"""The tests' port allocator: each xdist worker's block lies outside the kernel's ephemeral range and apart
from every other worker's, so a number one worker chose cannot be given to another worker's server."""

from __future__ import annotations

import socket

from tests.support import ports


def test_worker_blocks_are_disjoint_and_outside_the_ephemeral_range() -> None:
    low, high = ports.ephemeral_range()
    blocks = [ports.block(i) for i in range(8)]
    for b in blocks:
        assert len(b) == ports.BLOCK
        assert b.stop <= low or b.start > high, (b, low, high)
        assert b.start > 1024 and b.stop <= 65536
    taken = [n for b in blocks for n in b]
    assert len(taken) == len(set(taken))


def test_handed_out_ports_are_distinct_bindable_and_in_this_workers_block() -> None:
    mine = ports.block(ports.worker_index())
    given = [*ports.free_ports(5), ports.free_port()]
    assert len(set(given)) == len(given)
    for port in given:
        assert port in mine
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_a_taken_port_is_skipped() -> None:
    allocator = ports._Allocator()
    first = allocator.take()
    with socket.socket() as s:
        s.bind(("127.0.0.1", first))
        s.listen()
        # Walk the whole block: the listening port never comes back while it is taken.
        assert all(allocator.take() != first for _ in range(ports.BLOCK))
