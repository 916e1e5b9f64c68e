"""C64 inside the server: a start-up the app itself refuses reaches uvicorn as one sentence.

Starlette reports a failed lifespan start-up with the whole traceback as its message, which uvicorn
prints; the edge replaces it with the broker's own sentence. `serve` checks the schema before uvicorn
starts (tests/e2e/test_startup_errors.py); this is the net under every other start-up refusal.
"""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from broker.errors import Unavailable
from broker.main import build_runtime, create_app
from tests.conftest import make_settings, sqlite_db


def test_a_failed_start_up_is_sent_as_one_sentence(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"  # no schema at all
    app = create_app(build_runtime(make_settings(url, tmp_path)))
    sent: list[dict[str, Any]] = []

    async def go() -> None:
        events = [{"type": "lifespan.startup"}]

        async def receive() -> dict[str, Any]:
            return events.pop(0)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)

    with pytest.raises(Unavailable):  # still raised, for in-process callers (uvicorn ignores it once told)
        asyncio.run(go())
    assert len(sent) == 1 and sent[0]["type"] == "lifespan.startup.failed"
    message = sent[0]["message"]
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith("database schema is at nothing but this broker needs ")
    assert message.endswith("run `strongroom-server db upgrade` first")


@pytest.mark.parametrize("freeze", [False, True])
def test_a_served_process_freezes_what_it_started_with(
    tmp_path: Path, sqlite_template: Path, freeze: bool
) -> None:
    """`serve` (and each of its workers) leaves the objects alive once started out of garbage collection;
    an app built in process for something else (a test, a command) does not touch the collector."""
    settings = make_settings(sqlite_db(tmp_path / "broker.db", sqlite_template), tmp_path)
    gc.unfreeze()
    try:
        with TestClient(create_app(build_runtime(settings), freeze_heap=freeze)) as client:
            frozen = gc.get_freeze_count()
            assert client.get("/up").status_code == 200
        assert (frozen > 0) is freeze
    finally:
        gc.unfreeze()
