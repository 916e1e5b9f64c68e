"""A throwaway Docker engine for the renderer oracle tests (one per module run)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import need
from tests.support import docker


@pytest.fixture(scope="module")
def engine() -> Iterator[docker.Engine]:
    """A dockerd of our own on a unix socket, with the busybox test image imported."""
    reason = docker.missing()
    if reason:
        need(reason)
    with docker.engine() as eng:
        eng.busybox_image()
        yield eng
