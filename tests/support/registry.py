"""A throwaway image registry for tests: Debian's docker-registry (Distribution v2) on 127.0.0.1, htpasswd auth.

Started as ../shared/lab/e2e-pipeline.sh does: `docker-registry serve CONFIG.yml` with `http.addr:
127.0.0.1:PORT` and a bcrypt htpasswd file made by `htpasswd -Bbn` (the password goes to htpasswd on its
command line: it is a throwaway test password, and this is the test harness, not the CLI under test).
Plain HTTP: dockerd treats 127.0.0.0/8 as an insecure registry, so name it `127.0.0.1:PORT` to a dockerd
(podman only falls back to HTTP for `localhost:PORT`). Stopped by the PID it was started with.

Needs /usr/bin/docker-registry (docker-registry) and /usr/bin/htpasswd (apache2-utils).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_port

REGISTRY = "/usr/bin/docker-registry"
HTPASSWD = "/usr/bin/htpasswd"


def missing() -> str | None:
    """Why a throwaway registry cannot start here (with the install hint), or None if it can."""
    if not os.access(REGISTRY, os.X_OK):
        return "docker-registry is not installed (apt-get install docker-registry)"
    if not os.access(HTPASSWD, os.X_OK):
        return "htpasswd is not installed (apt-get install apache2-utils)"
    return None


@dataclass
class Registry:
    """A running registry and the one user allowed to push and pull."""

    root: Path
    port: int
    pid: int
    username: str
    password: str

    @property
    def server(self) -> str:
        """`127.0.0.1:PORT`: the name a dockerd uses (plain HTTP, loopback being insecure by default)."""
        return f"127.0.0.1:{self.port}"

    def get(self, path: str, *, auth: bool = True) -> tuple[int, bytes]:
        """GET path from the registry API (with basic auth unless auth=False): (status, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        headers = {}
        if auth:
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        try:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def tags(self, repository: str) -> list[str]:
        """The tags of a repository (empty when it does not exist)."""
        import json

        status, body = self.get(f"/v2/{repository}/tags/list")
        if status == 404:
            return []
        if status != 200:
            raise RuntimeError(f"registry answered {status} for the tags of {repository}")
        return sorted(json.loads(body).get("tags") or [])


@contextlib.contextmanager
def registry(
    *, password: str | None = None, username: str = "deployer", start_timeout: float = 120
) -> Iterator[Registry]:
    """Start a throwaway registry with one htpasswd user; yield it; stop it by PID and delete its storage."""
    reason = missing()
    if reason:
        raise RuntimeError(reason)
    password = password or f"reg-{secrets.token_hex(12)}"
    root = Path(tempfile.mkdtemp(prefix="sr-registry-", dir="/tmp"))
    root.chmod(0o700)
    (root / "data").mkdir()
    hashed = subprocess.run(
        [HTPASSWD, "-Bbn", username, password], check=True, capture_output=True, text=True
    ).stdout.strip()
    (root / "htpasswd").write_text(hashed + "\n")
    port = free_port()
    (root / "config.yml").write_text(
        "version: 0.1\n"
        "log: {level: warn}\n"
        "storage:\n"
        f"  filesystem: {{rootdirectory: {root / 'data'}}}\n"
        "  delete: {enabled: true}\n"
        "http:\n"
        f"  addr: 127.0.0.1:{port}\n"
        f"  secret: {secrets.token_hex(16)}\n"
        "auth:\n"
        f"  htpasswd: {{realm: strongroom-test, path: {root / 'htpasswd'}}}\n"
    )
    log = open(root / "registry.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [REGISTRY, "serve", str(root / "config.yml")],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    reg = Registry(root=root, port=port, pid=proc.pid, username=username, password=password)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"docker-registry exited ({proc.returncode}): {(root / 'registry.log').read_text()[-2000:]}"
                )
            with contextlib.suppress(OSError):
                if reg.get("/v2/", auth=False)[0] == 401:  # up, and asking for credentials
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry not ready after {start_timeout}s")
            time.sleep(0.05)
        yield reg
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
        shutil.rmtree(root, ignore_errors=True)
