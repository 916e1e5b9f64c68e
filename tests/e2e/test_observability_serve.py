"""`strongroom-server serve --workers 2` on PostgreSQL with metrics on their own listener and JSON logs:
the scrape adds up both worker processes (prometheus_client's multiprocess mode, a per-run directory
removed at exit), and every request line carries a request id, the route template, status, duration and
the token's accessor, never a value, a token, a query string or a path's names."""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import start, stop, wait_up
from tests.support import pg, ports

BIN = Path(sys.executable).parent
READ = "/v1/projects/{project}/environments/{environment}/secrets/{name}"


@dataclass
class Served:
    env: dict[str, str]
    port: int
    metrics_port: int
    proc: subprocess.Popen[bytes]
    log: Path
    parent: Path  # PROMETHEUS_MULTIPROC_DIR given to serve: the run's own directory is made inside it


def call(
    port: int,
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: object = None,
    rid: str | None = None,
) -> tuple[int, Any, dict[str, str]]:
    """One request on a new connection (so the kernel hands it to either worker)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if rid is not None:
        headers["X-Request-Id"] = rid
    conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
    r = conn.getresponse()
    raw = r.read()
    conn.close()
    return r.status, (json.loads(raw) if raw and raw[:1] in b"{[" else raw), dict(r.getheaders())


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def served(pg_cluster: pg.Cluster, tmp_path: Path) -> Iterator[Served]:
    db = f"obs_{os.getpid()}_{secrets.token_hex(6)}"
    pg_cluster.psql(f"CREATE DATABASE {db} TEMPLATE strongroom_template")
    port, metrics_port = ports.free_ports(2)
    parent = tmp_path / "metrics"
    parent.mkdir(mode=0o700)
    env = {
        "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "STRONGROOM_DATABASE_URL": pg_cluster.url(db),
        "STRONGROOM_DATA_DIR": str(tmp_path / "data"),
        "STRONGROOM_KEY_FILE": str(tmp_path / "keys" / "keyring.json"),
        "STRONGROOM_AUDIT_SIGNING_KEY_FILE": str(tmp_path / "keys" / "audit.pem"),
        "STRONGROOM_AUDIT_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
        "STRONGROOM_METRICS_PORT": str(metrics_port),
        "STRONGROOM_LOG_FORMAT": "json",
        "PROMETHEUS_MULTIPROC_DIR": str(parent),
    }
    if os.environ.get("PYTHONPATH"):  # a worktree's code, not the checkout the virtualenv came from
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    (tmp_path / "keys").mkdir(mode=0o700)
    for args in (
        ("keys", "generate", "--out", env["STRONGROOM_KEY_FILE"]),
        ("audit", "keygen", "--out", env["STRONGROOM_AUDIT_SIGNING_KEY_FILE"]),
        ("bootstrap",),
    ):
        done = subprocess.run(
            [str(BIN / "strongroom-server"), *args], env=env, capture_output=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr
    log = tmp_path / "broker.log"
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            [str(BIN / "strongroom-server"), "serve", "--port", str(port), "--workers", "2"],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_up(port, proc)
        yield Served(env, port, metrics_port, proc, log, parent)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for_both_workers(served: Served) -> dict[Any, float]:
    """Poll the scrape until both workers have started (each adds its pool's size); fail after 120 s."""
    end = time.monotonic() + 120
    while time.monotonic() < end:
        samples = scrape(served.metrics_port)
        if value(samples, "strongroom_db_pool_size") == 2 * 20:  # pool 10 + overflow 10, per worker
            return samples
        time.sleep(0.1)  # polling a condition with a deadline, as wait_up does
    raise AssertionError(f"both workers did not start: {served.log.read_text(errors='replace')}")


@pytest.mark.postgres
def test_two_workers_add_up_and_logs_carry_no_value(served: Served, tmp_path: Path) -> None:
    wait_for_both_workers(served)
    runs = list(served.parent.iterdir())
    assert len(runs) == 1 and runs[0].stat().st_mode & 0o777 == 0o700
    pids = {m.group(1) for f in runs[0].iterdir() if (m := re.search(r"_(\d+)\.db$", f.name))}
    assert len(pids) >= 2, pids  # both workers' files, summed by the scrape

    secret = (tmp_path / "data" / "bootstrap-admin.secret").read_text().strip()
    status, body, _ = call(
        served.port, "POST", "/v1/auth/token", body={"client_id": "admin", "client_secret": secret}
    )
    assert status == 200, body
    token, accessor = body["token"], body["accessor"]
    project, name = "p" + secrets.token_hex(5), "N_" + secrets.token_hex(6).upper()
    value_canary, query_canary = "CANARY" + secrets.token_hex(12), "QCANARY" + secrets.token_hex(12)
    assert call(served.port, "POST", "/v1/projects", token=token, body={"slug": project})[0] == 201
    assert (
        call(served.port, "POST", f"/v1/projects/{project}/environments", token=token, body={"slug": "prod"})[
            0
        ]
        == 201
    )
    url = f"/v1/projects/{project}/environments/prod/secrets/{name}"
    assert call(served.port, "PUT", url, token=token, body={"value": value_canary})[0] == 200

    before = scrape(served.metrics_port)
    reads = 40
    for i in range(reads):
        status, body, headers = call(
            served.port, "GET", f"{url}?q={query_canary}", token=token, rid=f"trace-{i}.a"
        )
        assert status == 200 and body["value"] == value_canary
        # The broker's own id answers (unique, the audit event's); the caller's is logged beside it.
        assert (
            re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"])
            and headers["x-request-id"] != f"trace-{i}.a"
        )
    _, _, headers = call(served.port, "GET", "/up", rid='bad id "quoted"')
    generated = headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert call(served.port, "GET", "/metrics")[0] == 404  # only on the metrics listener
    after = scrape(served.metrics_port)

    read = {"method": "GET", "route": READ, "outcome": "2xx"}
    assert (
        value(after, "strongroom_http_requests_total", **read)
        - value(before, "strongroom_http_requests_total", **read)
        == reads
    )
    assert (
        value(after, "strongroom_http_request_duration_seconds_count", method="GET", route=READ)
        - value(before, "strongroom_http_request_duration_seconds_count", method="GET", route=READ)
        == reads
    )

    served.proc.terminate()
    assert served.proc.wait(timeout=120) == 0  # two workers stopping on a loaded machine
    assert not runs[0].exists()  # the run's metric files go with it

    output = served.log.read_text(errors="replace")
    for leaked in (value_canary, query_canary, token, secret, project, name, "Bearer"):
        assert leaked not in output, leaked
    records = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    lines = [r for r in records if r["logger"] == "strongroom.request"]
    read_lines = [r for r in lines if r["route"] == READ and r["method"] == "GET"]
    assert len(read_lines) == reads
    assert {r["client_request_id"] for r in read_lines} == {f"trace-{i}.a" for i in range(reads)}
    assert len({r["request_id"] for r in read_lines}) == reads
    for r in read_lines:
        assert r["status"] == 200 and r["actor"] == accessor and r["duration_ms"] > 0
        assert set(r) == {
            "time",
            "level",
            "logger",
            "message",
            "request_id",
            "client_request_id",
            "method",
            "route",
            "status",
            "duration_ms",
            "actor",
        }
    assert [r["request_id"] for r in lines if r["route"] == "/up" and r["request_id"] == generated]


def test_one_worker_serves_metrics_and_removes_its_directory_on_sigterm(tmp_path: Path) -> None:
    """The embedded default, one process: the same files, the same listener; SIGTERM ends it cleanly."""
    parent = tmp_path / "metrics"
    parent.mkdir(mode=0o700)
    port, metrics_port = ports.free_ports(2)
    broker = start(
        tmp_path / "data",
        tmp_path / "home" / ".config",
        tmp_path / "broker.log",
        port=port,
        server_env={"STRONGROOM_METRICS_PORT": str(metrics_port), "PROMETHEUS_MULTIPROC_DIR": str(parent)},
    )
    try:
        for _ in range(3):
            assert call(broker.port, "GET", "/readyz")[0] == 200
        samples = scrape(metrics_port)
        assert (
            value(samples, "strongroom_http_requests_total", method="GET", route="/readyz", outcome="2xx")
            == 3
        )
        assert len(list(parent.iterdir())) == 1
    finally:
        stop(broker)
    assert broker.proc.returncode == 0
    assert list(parent.iterdir()) == []
