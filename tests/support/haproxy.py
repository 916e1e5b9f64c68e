"""HAProxy from Debian terminating TLS in front of broker replicas on loopback, and its stats socket."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BACKEND = "brokers"

# The configuration docs/production.md shows, with the test's paths and ports filled in. Why each line:
# - `option httpchk GET /up` every `inter` (200 ms), `fall 2`, `rise 1`, `timeout check 2s`: a replica
#   that stopped listening leaves the rotation within about half a second; a slow answer on a loaded
#   machine is not taken for a dead replica; a restarted one comes back at its first good answer.
# - `retries 3` and `option redispatch 1`: a refused connection (a replica that closed its listener on
#   SIGTERM, or was killed) is tried again on the other replica, so no client sees it.
# - `retry-on conn-failure empty-response` with `option http-buffer-request`: a request the replica
#   closed without answering (a connection still in its accept queue when it closed the listener, a crash
#   mid-request) is sent again to the other replica; HAProxy can only resend a request it holds whole.
#   A write can thus run twice after a crash (two versions holding the same value); a client that needs
#   exactly-once writes sends `cas`.
# - `http-reuse never`: one server connection per request. A reused idle connection that the replica
#   closes on SIGTERM (or that died with it) makes HAProxy close the client's connection without an
#   answer instead of retrying, which a client sees as an error.
# - `option forwardfor` with STRONGROOM_TRUSTED_PROXIES naming the proxy: audit records and the
#   per-address limits see the client's address, not the proxy's.
CONFIG = """\
global
    maxconn 512
    stats socket {stats} mode 600 level admin
    log stderr format raw local0
    tune.ssl.default-dh-param 2048

defaults
    mode http
    log global
    option httplog
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout queue 10s
    timeout check 2s
    timeout http-request 10s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response
    option http-buffer-request

frontend https
    bind 127.0.0.1:{port} ssl crt {pem}
    option forwardfor
    http-request set-header X-Forwarded-Proto https
    default_backend {backend}

backend {backend}
    balance roundrobin
    option httpchk GET /up
    http-reuse never
    default-server check inter {inter_ms}ms fall 2 rise 1
{servers}
"""


@dataclass
class Proxy:
    """A running HAProxy: its TLS port, stats socket and process."""

    port: int
    stats: Path
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        """The broker's address through the proxy."""
        return f"https://127.0.0.1:{self.port}"

    def command(self, line: str) -> str:
        """One command on the stats socket (the runtime API); its whole answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(self.stats))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def server_states(self) -> dict[str, int]:
        """Each server's operational state from `show servers state` (0 down, 2 running)."""
        lines = self.command(f"show servers state {BACKEND}").splitlines()
        header = next(line for line in lines if line.startswith("# "))[2:].split()
        name, state = header.index("srv_name"), header.index("srv_op_state")
        rows = [line.split() for line in lines[1:] if line.strip() and not line.startswith("#")]
        return {row[name]: int(row[state]) for row in rows}

    def wait_state(self, server: str, up: bool, deadline: float = 120.0) -> None:
        """Poll the stats socket until `server` is up (running) or down (readiness, not a sleep)."""
        want = 2 if up else 0
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited with {self.proc.returncode}: {self.log.read_text()}")
            if self.server_states().get(server) == want:
                return
            time.sleep(0.05)  # the next health check has not run yet; poll again
        raise RuntimeError(f"haproxy never saw {server} {'up' if up else 'down'}: {self.server_states()}")


def binary() -> str | None:
    """The haproxy binary, if installed (apt-get install haproxy)."""
    return shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if os.access(p, os.X_OK)), None)


def config(*, port: int, pem: Path, stats: Path, servers: dict[str, int], inter_ms: int = 200) -> str:
    """The proxy's configuration: TLS on `port` with `pem`, round robin over `servers` (name: port)."""
    lines = "\n".join(f"    server {name} 127.0.0.1:{p}" for name, p in servers.items())
    return CONFIG.format(stats=stats, port=port, pem=pem, backend=BACKEND, inter_ms=inter_ms, servers=lines)


@contextlib.contextmanager
def running(
    workdir: Path, *, port: int, cert: Path, key: Path, servers: dict[str, int], inter_ms: int = 200
) -> Iterator[Proxy]:
    """Start HAProxy in the foreground with the certificate and key in one 0600 file; stop it by its PID."""
    exe = binary()
    if exe is None:
        raise RuntimeError("haproxy is not installed (apt-get install haproxy)")
    workdir.mkdir(parents=True, exist_ok=True)
    pem = workdir / "proxy.pem"
    fd = os.open(pem, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(cert.read_bytes() + key.read_bytes())
    stats = workdir / "stats.sock"
    cfg = workdir / "haproxy.cfg"
    cfg.write_text(config(port=port, pem=pem, stats=stats, servers=servers, inter_ms=inter_ms))
    check = subprocess.run([exe, "-c", "-q", "-f", str(cfg)], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        raise RuntimeError(f"haproxy refused its configuration: {check.stderr or check.stdout}")
    log = workdir / "haproxy.log"
    with log.open("ab") as handle:
        proc = subprocess.Popen(
            [exe, "-db", "-f", str(cfg)], stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    proxy = Proxy(port=port, stats=stats, proc=proc, log=log)
    try:
        end = time.monotonic() + 120
        while not stats.exists():  # the socket appears once the configuration is loaded
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"haproxy did not start: {log.read_text()}")
            time.sleep(0.05)
        yield proxy
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
