"""A failed `strongroom-server` command prints one sentence: aiosqlite's worker thread finishing a close after
the command's event loop was closed must not add a traceback (seen under load in test_startup_errors.py)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from click.testing import CliRunner

from broker import cli


def _args(exc: BaseException, thread_name: str) -> Any:
    thread = threading.Thread(target=lambda: None, name=thread_name)
    return threading.ExceptHookArgs([type(exc), exc, None, thread])


def test_the_closed_loop_error_of_a_driver_thread_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(cli, "_THREAD_HOOK", seen.append)
    cli.quiet_closed_loop(_args(RuntimeError("Event loop is closed"), "Thread-1 (_connection_worker_thread)"))
    assert seen == []


@pytest.mark.parametrize(
    ("exc", "name"),
    [
        (RuntimeError("Event loop is closed"), "Thread-2 (worker)"),  # another thread: not ours to hide
        (RuntimeError("something else"), "Thread-1 (_connection_worker_thread)"),
        (ValueError("Event loop is closed"), "Thread-1 (_connection_worker_thread)"),
    ],
)
def test_every_other_thread_error_reaches_pythons_hook(
    monkeypatch: pytest.MonkeyPatch, exc: BaseException, name: str
) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(cli, "_THREAD_HOOK", seen.append)
    cli.quiet_closed_loop(_args(exc, name))
    assert [a.exc_value for a in seen] == [exc]


def test_the_command_group_installs_it() -> None:
    before = threading.excepthook
    try:
        CliRunner().invoke(cli.main, ["db"])  # any command: the group's invoke runs before it
        assert threading.excepthook is cli.quiet_closed_loop
    finally:
        threading.excepthook = before
