"""A real broker process on a free loopback port, started the way the README's quick start does."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.ports import free_port

BIN = Path(sys.executable).parent


@dataclass
class BrokerProcess:
    """A running `strongroom-server serve` and the environment a user's shell would have."""

    url: str
    port: int
    data_dir: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    log: Path
    outputs: list[str] = field(default_factory=list)

    def cli(
        self, *args: str, input: bytes | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the `strongroom` CLI as a user would; every output is kept for canary checks."""
        done = subprocess.run(
            [str(BIN / "strongroom"), *args],
            input=input,
            env={**self.env, **(env or {})},
            capture_output=True,
            timeout=300,  # a bound for a hung CLI, not a speed check: it costs nothing when the CLI answers
            check=False,
        )
        out = subprocess.CompletedProcess(
            done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
        )
        self.outputs += [out.stdout, out.stderr]
        return out

    def server_output(self) -> str:
        """Everything the broker printed so far."""
        return self.log.read_text(errors="replace")


def wait_up(port: int, proc: subprocess.Popen[bytes], deadline: float = 120.0) -> None:
    """Poll /up until the broker answers (readiness, not a sleep), failing fast if it exits."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/up")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.05)  # a connection refusal means not bound yet; poll again
    raise RuntimeError("broker did not come up")


def start(
    data_dir: Path,
    config_dir: Path,
    log: Path,
    port: int | None = None,
    server_env: dict[str, str] | None = None,
) -> BrokerProcess:
    """Start a broker on the embedded default in data_dir (`server_env`: extra variables for the server only)."""
    port = port or free_port()
    env = {
        "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(config_dir.parent),
        "XDG_CONFIG_HOME": str(config_dir),
        "STRONGROOM_DATA_DIR": str(data_dir),
        "LANG": "C.UTF-8",
    }
    if "PYTHONPATH" in os.environ:  # a worktree under test (PYTHONPATH=tree) runs its own CLI and server
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    handle = log.open("ab")
    proc = subprocess.Popen(
        [str(BIN / "strongroom-server"), "serve", "--port", str(port)],
        env={**env, **(server_env or {})},
        stdout=handle,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    wait_up(port, proc)
    return BrokerProcess(f"http://127.0.0.1:{port}", port, data_dir, env, proc, log)


def stop(broker: BrokerProcess) -> None:
    """Stop the broker by its PID."""
    broker.proc.terminate()
    try:
        broker.proc.wait(timeout=120)  # a loaded machine can take seconds to shut down cleanly
    except subprocess.TimeoutExpired:
        broker.proc.kill()
        broker.proc.wait()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    """A fresh broker on the embedded default."""
    b = start(tmp_path / "data", tmp_path / "home" / ".config", tmp_path / "broker.log")
    try:
        yield b
    finally:
        stop(b)
