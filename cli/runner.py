"""The only place the CLI hands control to another program.

`replace_process` execs rather than spawning a child: the program gets the terminal, signals and exit status
directly, and no Strongroom process lingers holding the values in memory. `supervise` (for `run --watch`)
is the exception the user asks for: it keeps a parent alive to restart the program when values change.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import NoReturn

from cli.errors import CliError


def replace_process(argv: Sequence[str], environ: Mapping[str, str]) -> NoReturn:
    """Exec `argv` (looked up on the PATH of `environ`) with `environ`; fail with 127 or 126 like a shell."""
    program = argv[0]
    # Anything buffered would be lost by exec.
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(program, list(argv), dict(environ))  # noqa: S606 (argv, never a shell string)
    except FileNotFoundError:
        raise CliError(f"{program}: command not found", exit_code=127) from None
    except PermissionError:
        raise CliError(f"{program}: permission denied", exit_code=126) from None
    except OSError as exc:
        raise CliError(
            f"{program}: cannot execute it ({(exc.strerror or 'error').lower()})", exit_code=126
        ) from None


# Signals a supervisor passes on to the program (SIGINT too, unless the terminal already sent it to both).
FORWARDED = ("SIGTERM", "SIGHUP", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH")
STOPPING = ("SIGTERM", "SIGHUP", "SIGINT", "SIGQUIT")
STOP_GRACE_SECONDS = 10.0


def _terminal_sent_sigint() -> bool:
    """Whether Ctrl-C on our terminal reaches the child directly (we share the foreground process group)."""
    for fd in (0, 1, 2):
        try:
            if os.isatty(fd):
                return os.tcgetpgrp(fd) == os.getpgrp()
        except OSError:
            continue
    return False


def supervise(
    argv: Sequence[str],
    environ_for: Callable[[Mapping[str, str]], Mapping[str, str]],
    values: Mapping[str, str],
    fetch: Callable[[], Mapping[str, str]],
    *,
    interval: float,
    note: Callable[[str], None],
) -> int:
    """Run `argv` as a child; every `interval` seconds `fetch` the values and restart the child if they changed.

    The child gets `environ_for(values)`. Signals sent to this process are passed on to the child; once the
    child ends (by itself or by a passed-on signal) the supervisor returns its status: the exit code, or
    -N when a signal N ended it (as subprocess reports it). A fetch that fails leaves the child running.
    """
    import signal
    import subprocess
    import time

    program = argv[0]
    state = {"stopping": False}
    child: subprocess.Popen[bytes] | None = None

    def start(current: Mapping[str, str]) -> subprocess.Popen[bytes]:
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            return subprocess.Popen(list(argv), env=dict(environ_for(current)))  # noqa: S603 (argv, no shell)
        except FileNotFoundError:
            raise CliError(f"{program}: command not found", exit_code=127) from None
        except PermissionError:
            raise CliError(f"{program}: permission denied", exit_code=126) from None

    def forward(signum: int, _frame: object) -> None:
        if signal.Signals(signum).name in STOPPING:
            state["stopping"] = True
        if child is not None and child.poll() is None:
            if signum == signal.SIGINT and _terminal_sent_sigint():
                return
            child.send_signal(signum)

    previous = {}
    for name in FORWARDED:
        signum = getattr(signal, name, None)
        if signum is not None:
            previous[signum] = signal.signal(signum, forward)
    try:
        child = start(values)
        failing = False
        next_poll = time.monotonic() + interval
        while True:
            try:
                return child.wait(timeout=max(0.0, next_poll - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            next_poll = time.monotonic() + interval
            if state["stopping"]:
                continue  # the child was told to stop: wait for it, fetch nothing more
            try:
                fresh = fetch()
            except CliError as exc:
                if not failing:
                    note(f"cannot check for new values ({exc.message}); the program keeps the ones it has")
                failing = True
                continue
            if failing:
                note("the broker answers again")
                failing = False
            if dict(fresh) == dict(values):
                continue
            note(f"values changed; restarting {program}")
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            if state["stopping"]:
                return child.returncode
            values = fresh
            child = start(values)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def exit_like(status: int) -> NoReturn:
    """End this process the way a child with `status` ended: its exit code, or killed by the same signal."""
    if status >= 0:
        raise SystemExit(status)
    import signal

    signum = -status
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    except (OSError, ValueError):
        pass
    raise SystemExit(128 + signum)
