"""C63: a request header over the documented bound gets 431 without the server reading it whole.

Against the real `strongroom-server serve` (uvicorn with httptools, broker/api/protocol.py) over a socket:
the defaults are 16 KiB for one header and 64 KiB for the request line and all headers.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import wait_up
from tests.support.ports import free_port

BIN = Path(sys.executable).parent
KIB = 1024
MIB = 1024 * KIB


@dataclass
class Server:
    port: int
    proc: subprocess.Popen[bytes]

    def rss(self) -> int:
        """Resident memory of the broker process, in bytes."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * KIB
        raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("headers")
    port = free_port()
    env = {
        "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(tmp),
        "LANG": "C.UTF-8",
        "STRONGROOM_DATA_DIR": str(tmp / "data"),
    }
    if "PYTHONPATH" in os.environ:  # a work tree under test, not the installed copy
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    with (tmp / "broker.log").open("ab") as log:
        proc = subprocess.Popen(
            [str(BIN / "strongroom-server"), "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_up(port, proc)
        yield Server(port, proc)
    finally:
        proc.terminate()
        proc.wait(timeout=120)


def connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset after the answer ends it too)."""
    out = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk


def status_and_body(raw: bytes) -> tuple[int, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def request(server: Server, raw: bytes) -> tuple[int, bytes]:
    """Send one request (it asks the server to close, or the server closes after a 431) and read the answer."""
    with connect(server) as sock:
        sock.sendall(raw)
        return status_and_body(read_all(sock))


def test_a_32_mib_header_gets_431_before_the_client_has_sent_it(server: Server) -> None:
    rss_before = server.rss()
    sent = 0
    failure: list[BaseException] = []
    total = 32 * MIB
    sock = connect(server)

    def send() -> None:
        nonlocal sent
        try:
            sock.sendall(b"GET /up HTTP/1.1\r\nHost: broker\r\nX-Big: ")
            block = b"a" * MIB
            while sent < total:
                sock.sendall(block)
                sent += len(block)
            sock.sendall(b"\r\n\r\n")
        except OSError as exc:  # the server closed the connection: what this test wants
            failure.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    raw = read_all(sock)
    sender.join(timeout=120)
    sock.close()
    assert not sender.is_alive()
    status, body = status_and_body(raw)
    assert status == 431, raw[:200]
    assert json.loads(body)["status"] == 431
    assert b"connection: close" in raw.split(b"\r\n\r\n")[0].lower()
    # The connection closed while the client was still sending: the server never took the header whole.
    assert failure and sent < total, (sent, failure)
    assert server.rss() - rss_before < 8 * MIB


def test_one_header_over_16_kib_gets_431(server: Server) -> None:
    status, body = request(
        server,
        b"GET /up HTTP/1.1\r\nHost: b\r\nConnection: close\r\nX-One: " + b"a" * (17 * KIB) + b"\r\n\r\n",
    )
    assert status == 431
    assert "16384" in json.loads(body)["detail"]


def test_many_small_headers_over_64_kib_get_431(server: Server) -> None:
    headers = b"".join(b"X-H%d: %s\r\n" % (i, b"a" * 1000) for i in range(70))
    status, body = request(
        server, b"GET /up HTTP/1.1\r\nHost: b\r\nConnection: close\r\n" + headers + b"\r\n"
    )
    assert status == 431
    assert "65536" in json.loads(body)["detail"]


def test_heads_within_the_bounds_are_served_and_a_large_body_is_not_a_large_head(server: Server) -> None:
    # Just under both bounds: 15 KiB in one header, about 60 KiB in all.
    headers = (
        b"X-One: "
        + b"a" * (15 * KIB)
        + b"\r\n"
        + b"".join(b"X-H%d: %s\r\n" % (i, b"a" * 1000) for i in range(44))
    )
    status, _ = request(server, b"GET /up HTTP/1.1\r\nHost: b\r\nConnection: close\r\n" + headers + b"\r\n")
    assert status == 200
    # A 512 KiB body arriving with its head is counted as body: not 431 (the token route refuses the secret).
    body = json.dumps({"client_id": "x", "client_secret": "a" * (512 * KIB)}).encode()
    raw = (
        b"POST /v1/auth/token HTTP/1.1\r\nHost: b\r\nConnection: close\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    status, body = request(server, raw)
    assert status == 400, body
    assert "client_secret" in json.loads(body)["detail"]


def test_the_bound_is_per_request_on_a_kept_alive_connection(server: Server) -> None:
    one = b"GET /up HTTP/1.1\r\nHost: b\r\nX-One: " + b"a" * (15 * KIB) + b"\r\n\r\n"
    last = b"GET /up HTTP/1.1\r\nHost: b\r\nConnection: close\r\nX-One: " + b"a" * (15 * KIB) + b"\r\n\r\n"
    with connect(server) as sock:
        sock.sendall(one * 5 + last)  # 96 KiB of heads on one connection, each request within the bound
        raw = read_all(sock)
    assert raw.count(b"HTTP/1.1 200 OK") == 6, raw[:300]
