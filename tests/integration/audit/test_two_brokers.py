"""H49: two real broker processes (`strongroom-server serve`) on one PostgreSQL database under parallel
requests write one linear chain: seq 1..N without gaps or forks, every prev_hash the hash before it, and
an auditor's `strongroom audit export` + `strongroom audit verify` (the real CLI, against a real broker,
then offline) accept it, as does `strongroom-server audit verify`."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import wait_up
from tests.support import pg
from tests.support.ports import free_ports

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.postgres


@dataclass
class Pair:
    env: dict[str, str]
    ports: list[int]
    procs: list[subprocess.Popen[bytes]]
    cluster: pg.Cluster
    db: str


def server(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "strongroom-server"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def pair(pg_cluster: pg.Cluster, tmp_path: Path) -> Iterator[Pair]:
    db = f"h49_{os.getpid()}"
    pg_cluster.psql(f"CREATE DATABASE {db} TEMPLATE strongroom_template")
    env = {
        "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "STRONGROOM_DATABASE_URL": pg_cluster.url(db),
        "STRONGROOM_DATA_DIR": str(tmp_path / "data"),
        "STRONGROOM_KEY_FILE": str(tmp_path / "keys" / "keyring.json"),
        "STRONGROOM_AUDIT_SIGNING_KEY_FILE": str(tmp_path / "keys" / "audit.pem"),
        "STRONGROOM_AUDIT_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
        "STRONGROOM_AUDIT_CHECKPOINT_EVERY": "40",
        "STRONGROOM_AUTH_FAILURE_LIMIT": "100000",
    }
    if os.environ.get("PYTHONPATH"):  # a worktree's code, not the checkout the virtualenv came from
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    (tmp_path / "keys").mkdir(mode=0o700)
    for args in (
        ("keys", "generate", "--out", env["STRONGROOM_KEY_FILE"]),
        ("audit", "keygen", "--out", env["STRONGROOM_AUDIT_SIGNING_KEY_FILE"]),
        ("bootstrap",),
    ):
        done = server(env, *args)
        assert done.returncode == 0, done.stderr
    ports = free_ports(2)
    procs = []
    try:
        for port in ports:
            log = (tmp_path / f"broker-{port}.log").open("wb")
            proc = subprocess.Popen(
                [str(BIN / "strongroom-server"), "serve", "--port", str(port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            procs.append(proc)
            wait_up(port, proc)
        yield Pair(env, ports, procs, pg_cluster, db)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def call(
    port: int, method: str, path: str, token: str | None = None, body: object = None
) -> tuple[int, object]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
    r = conn.getresponse()
    raw = r.read()
    conn.close()
    return r.status, (json.loads(raw) if raw else None)


def test_h49_two_brokers_one_linear_chain(pair: Pair, tmp_path: Path) -> None:
    a, b = pair.ports
    secret = (tmp_path / "data" / "bootstrap-admin.secret").read_text().strip()
    status, token_body = call(
        a, "POST", "/v1/auth/token", body={"client_id": "admin", "client_secret": secret}
    )
    assert status == 200
    token = token_body["token"]  # type: ignore[index]
    base = "/v1/projects/microblog/environments"
    assert call(b, "POST", "/v1/projects", token, {"slug": "microblog"})[0] == 201
    assert call(a, "POST", base, token, {"slug": "production"})[0] == 201
    assert call(b, "PUT", f"{base}/production/secrets/SHARED", token, {"value": "v0"})[0] == 200

    def work(i: int) -> int:
        port = pair.ports[i % 2]
        if i % 5 == 0:
            return call(
                port, "PUT", f"{base}/production/secrets/SHARED", token, {"value": f"v{i}", "cas": 1}
            )[0]
        if i % 5 == 1:
            return call(port, "PUT", f"{base}/production/secrets/K{i}", token, {"value": f"v{i}"})[0]
        return call(port, "GET", f"{base}/production/secrets/SHARED", token)[0]

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(work, range(300)))
    assert set(statuses) <= {200, 409} and statuses.count(200) > 200

    cli_env = {**pair.env, "STRONGROOM_TOKEN": token, "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    export = tmp_path / "audit.jsonl"
    done = subprocess.run(
        [str(BIN / "strongroom"), "--url", f"http://127.0.0.1:{b}", "audit", "export", "--out", str(export)],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert export.stat().st_mode & 0o777 == 0o600
    told = re.search(r"--exported-at (\S+)", done.stdout)
    assert told is not None, done.stdout
    exported_at = ["--exported-at", told.group(1)]

    # The database: every event linked, seq 1..N, no fork.
    rows = pair.cluster.psql(
        "SELECT count(*), count(seq), min(seq), max(seq), count(DISTINCT seq), count(DISTINCT prev_hash) FROM audit_events",
        db=pair.db,
    ).split("|")
    total, linked, low, high, distinct, prevs = (int(x) for x in rows)
    assert total >= 300 + 4
    assert linked >= total - 4  # the export fixed its range before the last few events (its own among them)
    assert (low, high, distinct, prevs) == (1, linked, linked, linked)
    broken = pair.cluster.psql(
        "SELECT count(*) FROM audit_events e JOIN audit_events p ON p.seq = e.seq - 1 WHERE e.prev_hash <> p.hash",
        db=pair.db,
    )
    assert int(broken) == 0

    public = tmp_path / "keys" / "audit.pem.pub.pem"
    verify = subprocess.run(
        [
            str(BIN / "strongroom"),
            "audit",
            "verify",
            str(export),
            "--public-key",
            str(public),
            "--checkpoints",
            pair.env["STRONGROOM_AUDIT_CHECKPOINT_DIR"],
            # As `audit export` tells the auditor to: checkpoints signed after the export (the brokers
            # keep signing) vouch for events the file cannot hold.
            *exported_at,
        ],
        # PYTHONPATH as the brokers have it: the worktree's CLI, not whichever checkout the shared virtualenv's
        # editable install points at.
        env={"PATH": cli_env["PATH"], "HOME": str(tmp_path)}
        | {k: v for k, v in cli_env.items() if k == "PYTHONPATH"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.startswith("ok: ")
    # Checkpoints vouched for the export (not a vacuous pass). How many there are depends on how the
    # chainers' passes batched the burst (a pass signs one at most), so only "some" is certain.
    vouched = re.search(r"(\d+) checkpoints valid", verify.stdout)
    assert vouched is not None and int(vouched.group(1)) >= 1, verify.stdout
    assert list(Path(pair.env["STRONGROOM_AUDIT_CHECKPOINT_DIR"]).glob("checkpoint-*.json"))

    listed = subprocess.run(
        [
            str(BIN / "strongroom"),
            "--url",
            f"http://127.0.0.1:{a}",
            "audit",
            "list",
            "--action",
            "secret.read",
            "--limit",
            "5",
            "--json",
        ],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert [e["action"] for e in json.loads(listed.stdout)["events"]] == ["secret.read"] * 5

    done = server(pair.env, "audit", "verify")
    assert done.returncode == 0 and done.stdout.startswith("ok: "), done.stdout + done.stderr
