"""A recording reverse proxy on loopback between the strongroom CLI and the broker (tests only).

The deploy token lives only inside the CLI process, which runs as a subprocess here; the proxy sees it in
the broker's 201 answer to `POST …/deploys`. Before passing that answer on, it calls `on_deploy` with it,
so a test can use the token while the deploy is running (to prove what it can and cannot read) and again
after the CLI has finished (to prove it is dead). Everything else is forwarded unchanged. This is a plain
HTTP relay, not a fake: every answer is the real broker's.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_DEPLOY_CREATE = re.compile(r"^/v1/projects/[^/]+/environments/[^/]+/deploys$")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclass
class Exchange:
    """One request the CLI made and the broker's answer."""

    method: str
    path: str
    status: int
    authorization: str | None


@dataclass
class Proxy:
    """The running proxy: its URL and what went through it."""

    url: str
    exchanges: list[Exchange] = field(default_factory=list)
    on_deploy: Callable[[dict[str, Any]], None] | None = None


@contextmanager
def broker_proxy(upstream_port: int) -> Iterator[Proxy]:
    """Relay 127.0.0.1:<free port> to the broker on upstream_port; yield the Proxy; stop it."""
    state = Proxy(url="")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def _relay(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            upstream = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=120)
            try:
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                answer_headers = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
                status = response.status
            finally:
                upstream.close()
            state.exchanges.append(
                Exchange(self.command, self.path, status, self.headers.get("Authorization"))
            )
            if (
                self.command == "POST"
                and status == 201
                and _DEPLOY_CREATE.match(self.path.split("?")[0])
                and state.on_deploy is not None
            ):
                state.on_deploy(json.loads(data))
            self.send_response(status)
            for key, value in answer_headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _relay

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="broker-proxy", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
