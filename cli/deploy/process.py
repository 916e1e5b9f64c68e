"""The one place a deploy starts another program (docker, ssh, git, kamal).

Every child gets an argv list (never a shell string), secrets only on stdin, and an environment built from
ours minus the broker token plus the caller's `env`. Its output comes back decoded and passed through the
run's redactor before anyone sees it. Tests install a recorder (`set_recorder`) that sees every argv,
environment and stdin before the child starts; production code never records.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO

from cli.errors import CliError

# Variables of ours a child never inherits: the broker token is for this process only. A caller that
# means to hand a token on (kamal deploy gets the short-lived deploy token) passes it in `env`.
WITHHELD = frozenset({"STRONGROOM_TOKEN"})

Redactor = Callable[[str], str]


@dataclass(frozen=True)
class Completed:
    """How a child ended: its exit status and its output, decoded and redacted."""

    returncode: int
    stdout: str
    stderr: str
    argv: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether the child exited 0."""
        return self.returncode == 0


@dataclass(frozen=True)
class Invocation:
    """What a recorder sees of one child: argv, the full environment it got, its stdin and directory."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    stdin: bytes | None
    cwd: str | None


Recorder = Callable[[Invocation], None]
_recorder: Recorder | None = None


def set_recorder(recorder: Recorder | None) -> None:
    """Have `recorder` called with every invocation before the child starts (tests only); None stops it."""
    global _recorder  # noqa: PLW0603 (a test hook, one per process by design)
    _recorder = recorder


def child_environment(env: Mapping[str, str] | None) -> dict[str, str]:
    """Our environment without the withheld variables, then `env` on top."""
    merged = {name: value for name, value in os.environ.items() if name not in WITHHELD}
    if env:
        merged.update(env)
    return merged


def _start(
    argv: Sequence[str], stdin: bytes | None, env: Mapping[str, str] | None, cwd: str | None
) -> subprocess.Popen[bytes]:
    if not argv:
        raise ValueError("argv is empty")
    argv = [str(part) for part in argv]
    environ = child_environment(env)
    recorder = _recorder
    if recorder is not None:
        recorder(Invocation(tuple(argv), dict(environ), stdin, cwd))
    program = argv[0]
    try:
        return subprocess.Popen(  # noqa: S603 (an argv list, never a shell)
            argv,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environ,
            cwd=cwd,
        )
    except FileNotFoundError:
        raise CliError(f"{program}: command not found", exit_code=127) from None
    except PermissionError:
        raise CliError(f"{program}: permission denied", exit_code=126) from None
    except OSError as exc:
        raise CliError(
            f"{program}: cannot execute it ({(exc.strerror or 'error').lower()})", exit_code=126
        ) from None


def _decode(data: bytes, redactor: Redactor | None) -> str:
    text = data.decode("utf-8", errors="replace")
    return redactor(text) if redactor is not None else text


def _timed_out(argv: Sequence[str], timeout: float | None) -> CliError:
    return CliError(f"{argv[0]}: no answer within {timeout:g} s; stopped it")


def run(
    argv: Sequence[str],
    *,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    redactor: Redactor | None = None,
    timeout: float | None = None,
    cwd: str | None = None,
) -> Completed:
    """Run `argv` to the end and return its status and redacted output; CliError if it cannot start or times out."""
    child = _start(argv, stdin, env, cwd)
    try:
        out, err = child.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        raise _timed_out(argv, timeout) from None
    return Completed(child.returncode, _decode(out, redactor), _decode(err, redactor), tuple(map(str, argv)))


def stream(
    argv: Sequence[str],
    *,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    redactor: Redactor | None = None,
    timeout: float | None = None,
    cwd: str | None = None,
    on_stdout: Callable[[str], None] | None = None,
    on_stderr: Callable[[str], None] | None = None,
) -> Completed:
    """Like `run`, but each redacted output line (without its newline) goes to on_stdout/on_stderr as it comes.

    For long steps (build, push, the remote script). The callbacks run on reader threads, one per stream.
    """
    child = _start(argv, stdin, env, cwd)
    captured: dict[str, list[str]] = {"stdout": [], "stderr": []}

    def read(pipe: IO[bytes], name: str, sink: Callable[[str], None] | None) -> None:
        for raw in iter(pipe.readline, b""):
            line = _decode(raw, redactor)
            captured[name].append(line)
            if sink is not None:
                sink(line.rstrip("\r\n"))
        pipe.close()

    def feed(pipe: IO[bytes], data: bytes) -> None:
        # A child that stops reading early breaks the pipe: its exit status says why, not this.
        with contextlib.suppress(BrokenPipeError):
            pipe.write(data)
        with contextlib.suppress(BrokenPipeError):
            pipe.close()

    assert child.stdout is not None and child.stderr is not None
    threads = [
        threading.Thread(target=read, args=(child.stdout, "stdout", on_stdout), daemon=True),
        threading.Thread(target=read, args=(child.stderr, "stderr", on_stderr), daemon=True),
    ]
    if stdin is not None:
        assert child.stdin is not None
        threads.append(threading.Thread(target=feed, args=(child.stdin, stdin), daemon=True))
    for thread in threads:
        thread.start()
    try:
        returncode = child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        for thread in threads:
            thread.join()
        raise _timed_out(argv, timeout) from None
    for thread in threads:
        thread.join()
    return Completed(
        returncode, "".join(captured["stdout"]), "".join(captured["stderr"]), tuple(map(str, argv))
    )
