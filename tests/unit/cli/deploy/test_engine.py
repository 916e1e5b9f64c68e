"""The deploy engine: every argv and environment recorded, no value in any of them, the token always ended.

Stand-ins, and why (the real parts run in tests/e2e/deploy, helper C's lab of dockerd, registry and sshd):
- `DeployBroker`: a tiny HTTP stand-in for the six deploy routes, so each failure path (bundle refused,
  finish refused, revoke refused) can be forced; it proves nothing about the broker itself.
- `fake-docker`: a script standing in for the docker CLI; it checks what the real one would be handed
  (BuildKit secret files 0600 in a 0700 directory, the password on stdin) and can be told to fail.
- `FakeRemote`: stands in for cli.deploy.remote.RemoteHost (sshd + a remote engine), recording the steps.
The subprocess layer is real: the engine runs fake-docker and git through cli.deploy.process, whose
recorder sees every invocation.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from cli.client import BrokerClient
from cli.deploy import process
from cli.deploy.engine import (
    DeployEngine,
    DeployRequest,
    default_version,
    private_dir,
    write_secret_file,
)
from cli.deploy.process import Invocation
from cli.deploy.remote import DeployFailed, DeployResult, DeployStep, HostKeyRefused, HostUnreachable
from cli.errors import CliError

CANARY = "canary-7c1e-value"
PASSWORD = "registry-pass-9f2b"
BUILD_SECRET = "npm-token-3d5a\nsecond-line-88"
USER_TOKEN = "srt_" + "u" * 40
DEPLOY_TOKEN = "srt_" + "d" * 40
DIGEST = "sha256:" + "ab" * 32
SECRETS = (CANARY, PASSWORD, BUILD_SECRET, *BUILD_SECRET.split("\n"))
KNOWN_KEY = "ED25519 SHA256:" + "k" * 43
PRESENTED_KEY = "ED25519 SHA256:" + "p" * 43

FAKE_DOCKER = r"""
import json, os, stat, sys
log = os.environ["FAKE_DOCKER_LOG"]
args = sys.argv[1:]
entry = {"argv": args}
def finish(code, out="", err=""):
    with open(log, "a") as f:
        f.write(json.dumps(entry) + "\n")
    sys.stdout.write(out); sys.stderr.write(err); sys.exit(code)
if args[0] == "build":
    files = []
    for i, a in enumerate(args):
        if a == "--secret":
            spec = dict(p.split("=", 1) for p in args[i + 1].split(","))
            st = os.stat(spec["src"]); dst = os.stat(os.path.dirname(spec["src"]))
            files.append({"id": spec["id"], "src": spec["src"], "mode": stat.S_IMODE(st.st_mode),
                          "dir_mode": stat.S_IMODE(dst.st_mode), "size": st.st_size})
    entry["secret_files"] = files
    entry["buildkit"] = os.environ.get("DOCKER_BUILDKIT")
    if os.environ.get("FAKE_DOCKER_SLEEP"):
        import time; time.sleep(float(os.environ["FAKE_DOCKER_SLEEP"]))
    if os.environ.get("FAKE_DOCKER_FAIL") == "build":
        secret = open(files[0]["src"]).read() if files else ""
        finish(1, "", "step 3/4: RUN failed; echo " + secret + "\nERROR: process did not complete\n")
    finish(0, "built\n")
if args[0] == "login":
    entry["stdin"] = sys.stdin.read()
    entry["docker_config"] = os.environ.get("DOCKER_CONFIG")
    cfg = os.environ["DOCKER_CONFIG"]
    with open(os.path.join(cfg, "config.json"), "w") as f:
        json.dump({"auths": {args[-1]: {"auth": "stored"}}}, f)
    finish(0, "Login Succeeded\n")
if args[0] == "push":
    entry["docker_config"] = os.environ.get("DOCKER_CONFIG")
    finish(1 if os.environ.get("FAKE_DOCKER_FAIL") == "push" else 0, "pushed\n")
if args[:2] == ["image", "inspect"]:
    repo = args[-1].rsplit(":", 1)[0]
    finish(0, json.dumps([repo + "@" + os.environ["FAKE_DIGEST"]]) + "\n")
finish(2, "", "fake docker: unknown command\n")
"""


def plan_json(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "service": "app",
        "image": "app",
        "version": "v2",
        "registry": {"server": "127.0.0.1:5000", "username": "ci"},
        "builder": {"context": ".", "dockerfile": None, "target": None, "args": {"MODE": "prod"},
                    "secrets": ["NPM_TOKEN"]},
        "roles": [
            {"name": "web", "cmd": None, "options": {"network": "host"},
             "hosts": [{"host": "web1", "tags": []}, {"host": "web2", "tags": []}]},
            {"name": "jobs", "cmd": "bin/jobs", "options": {}, "hosts": [{"host": "web1", "tags": []}]},
        ],
        "ssh": {"user": "deploy", "port": None, "host_keys": {}},
        "healthcheck": {"path": "/up", "port": 8080, "cmd": None, "interval": 1, "timeout": 5},
        "retain_images": 5,
        "stop_timeout": 10,
        "readiness_delay": 7,
    }  # fmt: skip
    data.update(overrides)
    return data


@dataclass
class DeployBroker:
    """Stand-in for the deploy routes (see the module docstring); records every request."""

    plan: dict[str, Any] = field(default_factory=plan_json)
    requests: list[tuple[str, str, str | None, Any]] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)  # route name -> status to answer
    ledger: list[tuple[str, str]] = field(default_factory=list)  # (version, status), newest first
    url: str = ""
    expires_at: str = "2030-01-01T00:15:00Z"
    started_at: str = "2030-01-01T00:00:00Z"

    def hosts(self) -> list[tuple[str, str]]:
        return [(r["name"], h["host"]) for r in self.plan["roles"] for h in r["hosts"]]

    def answer(self, method: str, path: str, auth: str | None, body: Any) -> tuple[int, Any]:
        self.requests.append((method, path, auth, body))
        deploy = {
            "id": "d-1", "project": "shop", "environment": "production", "service": "app",
            "version": "v2", "kind": "deploy", "status": "running", "started_at": self.started_at,
            "finished_at": None, "by": "ci",
        }  # fmt: skip
        route = path.rsplit("/", 1)[-1]
        if route in self.fail:
            return self.fail[route], {"detail": f"stand-in refuses {route}"}
        if method == "GET" and "/deploys" in path:
            return 200, {
                "deploys": [
                    {**deploy, "id": f"d-{i}", "version": v, "status": st}
                    for i, (v, st) in enumerate(self.ledger)
                ]
            }
        if route == "compile":
            return 200, {
                "files": [
                    {"path": "config/deploy.yml", "content": "service: app\n", "encoding": "utf-8",
                     "holds_values": False, "mode": 0o644},
                    {"path": ".kamal/secrets.production", "content": "X=$(strongroom kamal fetch)\n",
                     "encoding": "utf-8", "holds_values": False, "mode": 0o644},
                ],
                "warnings": [], "keys": [],
            }  # fmt: skip
        if route == "status":
            return 200, {"hosts": [
                {"host": "web1", "role": "web", "expected_env_fingerprint": "hmac-sha256:" + "1" * 64, "rotated": [],
                 "last": {"deploy": "d-1", "version": "v2", "image_digest": DIGEST, "at": "2030-01-01T00:00:00Z",
                          "env_fingerprint": "hmac-sha256:" + "1" * 64, "by": "ci", "outcome": "deployed"}},
                {"host": "web2", "role": "web", "expected_env_fingerprint": "hmac-sha256:" + "2" * 64,
                 "rotated": [{"name": "SECRET", "deployed_version": 2, "current_version": 3}],
                 "last": {"deploy": "d-1", "version": "v2", "image_digest": DIGEST, "at": "2030-01-01T00:00:00Z",
                          "env_fingerprint": "hmac-sha256:" + "3" * 64, "by": "ci", "outcome": "deployed"}},
            ]}  # fmt: skip
        if route == "check":
            return 200, {
                "ok": True,
                "problems": [],
                "keys": [{"name": "SECRET", "environment": "production", "version": 3}],
            }
        if route == "values" and auth == f"Bearer {USER_TOKEN}":
            return 200, {
                "project": "shop", "environment": "production",
                "values": {n: {"value": CANARY, "version": 3, "environment": "production", "sensitive": True}
                           for n in body["names"]},
            }  # fmt: skip
        if path.endswith("/environments/production/deploys") and auth == f"Bearer {USER_TOKEN}":
            return 201, {
                "deploy": deploy, "token": DEPLOY_TOKEN, "accessor": "acc-1",
                "expires_at": self.expires_at, "uses": 10,
                "keys": [{"environment": "production", "name": "SECRET"}], "plan": self.plan,
            }  # fmt: skip
        if auth != f"Bearer {DEPLOY_TOKEN}":
            return 403, {"detail": "wrong token"}
        if route == "bundle":
            return 200, {
                "hosts": [
                    {"host": h, "role": r, "env_file": f"SECRET={CANARY}\nROLE={r}\n",
                     "env_fingerprint": f"hmac-sha256:{r}{h}"}
                    for r, h in self.hosts()
                ],
                "registry_password": PASSWORD,
                "build_secrets": {"NPM_TOKEN": BUILD_SECRET},
                "keys": [{"environment": "production", "name": "SECRET", "version": 3, "fingerprint": "hmac-sha256:k"}],
            }  # fmt: skip
        if route == "hosts":
            return 201, {"ok": True}
        if route == "finish":
            return 200, {**deploy, "status": body["outcome"], "finished_at": "2030-01-01T00:01:00Z"}
        if route == "revoke-self":
            return 204, None
        return 404, {"detail": "no such route"}

    def calls(self, route: str) -> list[tuple[str, str, str | None, Any]]:
        return [r for r in self.requests if r[1].rsplit("/", 1)[-1] == route]


@pytest.fixture
def broker() -> Iterator[DeployBroker]:
    state = DeployBroker()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.do_POST("GET")

        def do_POST(self, method: str = "POST") -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            status, answer = state.answer(method, self.path, self.headers.get("Authorization"), body)
            data = b"" if answer is None else json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


class FakeRemote:
    """Stands in for RemoteHost (see the module docstring): `behaviour` is ok, unreachable or unhealthy."""

    def __init__(self, host: str, behaviour: str, steps: list[tuple[str, DeployStep]]) -> None:
        self.host = host
        self.behaviour = behaviour
        self.steps = steps
        self.round_trips = 0
        self.closed = False

    def connect(self) -> None:
        self.round_trips += 1
        if self.behaviour == "unreachable":
            raise HostUnreachable(self.host, "ssh: connect to host port 22: Connection refused")
        if self.behaviour == "refused":
            raise HostKeyRefused(
                self.host,
                f"host key CHANGED: known {KNOWN_KEY}, presented {PRESENTED_KEY}",
                known=[KNOWN_KEY],
                presented=[PRESENTED_KEY],
            )

    def deploy(self, step: DeployStep) -> DeployResult:
        self.round_trips += 1
        self.steps.append((self.host, step))
        if self.behaviour == "unhealthy":
            raise DeployFailed(self.host, step.role, "health", f"unhealthy; last log line: {CANARY}")
        if self.behaviour == "crash":
            raise RuntimeError("boom")
        return DeployResult(
            host=self.host, role=step.role, outcome="deployed", step="done",
            container=f"app-{step.role}-v2", name=f"app-{step.role}-v2", image=step.image,
            image_id="sha256:id", image_digest=None,
        )  # fmt: skip

    def close(self) -> None:
        self.closed = True
        self.round_trips += 1


@dataclass
class Rig:
    broker: DeployBroker
    docker_log: Path
    invocations: list[Invocation]
    steps: list[tuple[str, DeployStep]]
    remotes: dict[str, FakeRemote]
    environ: dict[str, str]
    said: list[str]
    workdir: Path

    def engine(self, behaviours: dict[str, str] | None = None) -> DeployEngine:
        behaviours = behaviours or {}

        def factory(host: str, _plan: object, _redactor: object) -> FakeRemote:
            if behaviours.get(host) == "invalid":
                raise ValueError(f"ssh host {host!r}: not a host name, address or ssh_config alias")
            remote = FakeRemote(host, behaviours.get(host, "ok"), self.steps)
            self.remotes[host] = remote
            return remote

        client = BrokerClient(self.broker.url, token=USER_TOKEN)
        return DeployEngine(client, say=self.said.append, environ=self.environ, remote_factory=factory)

    def request(self, **overrides: Any) -> DeployRequest:
        values: dict[str, Any] = {
            "project": "shop",
            "environment": "production",
            "manifest": "service: app\n",
            "manifest_dir": str(self.workdir),
            "version": "v2",
        }
        values.update(overrides)
        return DeployRequest(**values)

    def docker_calls(self) -> list[dict[str, Any]]:
        if not self.docker_log.exists():
            return []
        return [json.loads(line) for line in self.docker_log.read_text().splitlines()]

    def assert_no_secret_in_argv_or_env(self) -> None:
        assert self.invocations, "nothing was recorded"
        for call in self.invocations:
            for secret in SECRETS:
                assert not any(secret in part for part in call.argv), call.argv
                assert not any(secret in f"{k}={v}" for k, v in call.env.items()), call.argv
            assert USER_TOKEN not in " ".join(f"{k}={v}" for k, v in call.env.items())
            assert DEPLOY_TOKEN not in " ".join([*call.argv, *call.env.values()])


@pytest.fixture
def rig(broker: DeployBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    fake = tmp_path / "fake-docker"
    fake.write_text(f"#!{sys.executable}\n{FAKE_DOCKER}")
    fake.chmod(0o755)
    user_config = tmp_path / "user-docker"
    user_config.mkdir()
    (user_config / "config.json").write_text(
        json.dumps({"auths": {"other": {"auth": "x"}}, "detachKeys": "ctrl-q"})
    )
    log = tmp_path / "docker.log"
    environ = {"STRONGROOM_DOCKER": str(fake), "DOCKER_CONFIG": str(user_config), "HOME": str(tmp_path)}
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    monkeypatch.setenv("FAKE_DIGEST", DIGEST)
    monkeypatch.setenv("DOCKER_CONFIG", str(user_config))
    monkeypatch.setenv("STRONGROOM_TOKEN", USER_TOKEN)  # what CI sets: never handed to a child
    invocations: list[Invocation] = []
    process.set_recorder(invocations.append)
    try:
        yield Rig(broker, log, invocations, [], {}, environ, [], tmp_path)
    finally:
        process.set_recorder(None)


def test_deploy_builds_pushes_deploys_reports_and_finishes(rig: Rig) -> None:
    report = rig.engine().run(rig.request())

    assert report.outcome == "succeeded", report.error
    assert [(o.host, o.role, o.outcome) for o in report.hosts] == [
        ("web1", "web", "deployed"), ("web2", "web", "deployed"), ("web1", "jobs", "deployed"),
    ]  # fmt: skip
    build, login, push, inspect = rig.docker_calls()
    # Build: BuildKit, the secret as a 0600 file in a 0700 directory, only the clear arg as a build arg.
    assert build["buildkit"] == "1"
    assert build["argv"][:5] == [
        "build",
        "--tag",
        "127.0.0.1:5000/app:v2",
        "--label",
        "strongroom.service=app",
    ]
    assert build["argv"][5:7] == ["--build-arg", "MODE=prod"]
    [secret_file] = build["secret_files"]
    assert secret_file["id"] == "NPM_TOKEN" and secret_file["size"] == len(BUILD_SECRET)
    assert (secret_file["mode"], secret_file["dir_mode"]) == (0o600, 0o700)
    assert not os.path.exists(secret_file["src"]) and not os.path.exists(os.path.dirname(secret_file["src"]))
    # Login: password on stdin only, into a throwaway config; the user's config keeps its own credentials.
    assert login["argv"] == ["login", "--username", "ci", "--password-stdin", "127.0.0.1:5000"]
    assert login["stdin"] == PASSWORD
    assert login["docker_config"] != os.environ["DOCKER_CONFIG"]
    assert not os.path.exists(login["docker_config"])
    assert push["docker_config"] == login["docker_config"]
    assert json.loads((Path(os.environ["DOCKER_CONFIG"]) / "config.json").read_text())["auths"] == {
        "other": {"auth": "x"}
    }
    assert push["argv"] == ["push", "127.0.0.1:5000/app:v2"] and inspect["argv"][:2] == ["image", "inspect"]
    # Hosts: one connection each, every role's env file handed to the remote side, never on a command line.
    assert sorted((h, s.role) for h, s in rig.steps) == [("web1", "jobs"), ("web1", "web"), ("web2", "web")]
    assert all(s.env_file == f"SECRET={CANARY}\nROLE={s.role}\n".encode() for _, s in rig.steps)
    assert all(s.registry_password == PASSWORD and s.image == "127.0.0.1:5000/app:v2" for _, s in rig.steps)
    assert all(r.closed for r in rig.remotes.values())
    # Ledger: one report per host and role with the digest of the push, then finish; all with the deploy token.
    reports = rig.broker.calls("hosts")
    assert len(reports) == 3 and all(r[2] == f"Bearer {DEPLOY_TOKEN}" for r in reports)
    assert {r[3]["image_digest"] for r in reports} == {DIGEST}
    assert {r[3]["env_fingerprint"] for r in reports} == {
        "hmac-sha256:webweb1",
        "hmac-sha256:webweb2",
        "hmac-sha256:jobsweb1",
    }
    [finish] = rig.broker.calls("finish")
    assert finish[2] == f"Bearer {DEPLOY_TOKEN}" and finish[3] == {"outcome": "succeeded"}
    assert report.finished is not None and report.finished.status == "succeeded"
    assert not rig.broker.calls("revoke-self")
    rig.assert_no_secret_in_argv_or_env()
    # The password went on stdin of login and nowhere else.
    assert [c.argv[1] for c in rig.invocations if c.stdin is not None] == ["login"]
    assert all(secret not in line for line in rig.said for secret in SECRETS)


def test_build_failure_finishes_failed_and_redacts_docker_output(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_DOCKER_FAIL", "build")
    report = rig.engine().run(rig.request())

    assert report.outcome == "failed"
    assert report.error is not None and "docker build failed" in report.error
    assert "[REDACTED]" in report.error and all(secret not in report.error for secret in SECRETS)
    assert [c["argv"][0] for c in rig.docker_calls()] == ["build"]  # no login, no push
    assert rig.steps == []
    assert {r[3]["outcome"] for r in rig.broker.calls("hosts")} == {"skipped"}  # connected, never changed
    assert all(r.closed for r in rig.remotes.values())
    assert [c[3] for c in rig.broker.calls("finish")] == [{"outcome": "failed"}]
    rig.assert_no_secret_in_argv_or_env()


def test_push_failure_finishes_failed(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_DOCKER_FAIL", "push")
    report = rig.engine().run(rig.request())
    assert report.outcome == "failed" and "docker push" in (report.error or "")
    assert rig.steps == []
    assert [c[3] for c in rig.broker.calls("finish")] == [{"outcome": "failed"}]


def test_bundle_refused_still_finishes(rig: Rig) -> None:
    rig.broker.fail["bundle"] = 403
    report = rig.engine().run(rig.request())
    assert report.outcome == "failed" and "stand-in refuses bundle" in (report.error or "")
    assert rig.docker_calls() == []
    assert [c[3] for c in rig.broker.calls("finish")] == [{"outcome": "failed"}]


def test_unreachable_host_without_fail_fast_is_partial(rig: Rig) -> None:
    report = rig.engine({"web2": "unreachable"}).run(rig.request())
    assert report.outcome == "partial"
    outcomes = {(o.host, o.role): o for o in report.hosts}
    assert outcomes[("web2", "web")].outcome == "failed"
    assert "Connection refused" in (outcomes[("web2", "web")].error or "")
    assert outcomes[("web1", "web")].outcome == outcomes[("web1", "jobs")].outcome == "deployed"
    ledger = {(r[3]["host"], r[3]["role"]): r[3] for r in rig.broker.calls("hosts")}
    assert (
        ledger[("web2", "web")]["outcome"] == "failed" and ledger[("web2", "web")]["env_fingerprint"] is None
    )
    assert [c[3] for c in rig.broker.calls("finish")] == [{"outcome": "partial"}]


def test_host_ssh_cannot_take_is_a_failed_host_not_a_crash(rig: Rig) -> None:
    report = rig.engine({"web2": "invalid"}).run(rig.request())
    assert report.outcome == "partial"
    failed = next(o for o in report.hosts if o.host == "web2")
    assert failed.outcome == "failed" and "not a host name" in (failed.error or "")
    assert [c[3] for c in rig.broker.calls("finish")] == [{"outcome": "partial"}]


def test_unreachable_host_with_fail_fast_stops_before_the_build(rig: Rig) -> None:
    report = rig.engine({"web2": "unreachable"}).run(rig.request(fail_fast=True))
    assert report.outcome == "failed"
    assert report.error is not None and "web2 cannot be deployed to and --fail-fast is set" in report.error
    assert rig.docker_calls() == [] and rig.broker.calls("bundle") == []  # nothing fetched or built
    assert rig.steps == []  # web1 connected fine but was never changed
    assert {o.outcome for o in report.hosts if o.host == "web1"} == {"skipped"}
    assert all(r.closed for r in rig.remotes.values())
    ledger = {(r[3]["host"], r[3]["role"]): r[3]["outcome"] for r in rig.broker.calls("hosts")}
    assert ledger == {("web1", "web"): "skipped", ("web2", "web"): "failed", ("web1", "jobs"): "skipped"}
    assert [c[3] for c in rig.broker.calls("finish")] == [{"outcome": "failed"}]


@pytest.mark.parametrize("fail_fast", [False, True])
def test_a_refused_host_key_stops_the_whole_deploy_before_anything_runs(rig: Rig, fail_fast: bool) -> None:
    report = rig.engine({"web2": "refused"}).run(rig.request(fail_fast=fail_fast))
    assert report.outcome == "failed"
    assert report.error is not None and "host key of web2 was refused" in report.error
    assert "no host was changed" in report.error
    refused = next(o for o in report.hosts if o.host == "web2")
    assert refused.error is not None and KNOWN_KEY in refused.error and PRESENTED_KEY in refused.error
    # Nothing fetched, built, pushed or started; every connection closed; the deploy finished (token revoked).
    assert rig.broker.calls("bundle") == [] and rig.docker_calls() == [] and rig.steps == []
    assert set(rig.remotes) == {"web1", "web2"} and all(r.closed for r in rig.remotes.values())
    assert [c[3] for c in rig.broker.calls("finish")] == [{"outcome": "failed"}]


def test_every_host_connects_before_the_bundle_and_the_build(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, tuple[int, int]] = {}
    connect = FakeRemote.connect

    def noted(remote: FakeRemote) -> None:
        seen[remote.host] = (len(rig.broker.calls("bundle")), len(rig.docker_calls()))
        connect(remote)

    monkeypatch.setattr(FakeRemote, "connect", noted)
    report = rig.engine().run(rig.request())
    assert report.outcome == "succeeded", report.error
    assert seen == {"web1": (0, 0), "web2": (0, 0)}
    assert len(rig.broker.calls("bundle")) == 1 and rig.docker_calls()[0]["argv"][0] == "build"


def test_no_reachable_host_builds_nothing(rig: Rig) -> None:
    report = rig.engine({"web1": "unreachable", "web2": "unreachable"}).run(rig.request())
    assert report.outcome == "failed" and "no host can be deployed to" in (report.error or "")
    assert rig.docker_calls() == [] and rig.broker.calls("bundle") == []


def test_unhealthy_host_reports_a_redacted_reason(rig: Rig) -> None:
    report = rig.engine({"web2": "unhealthy"}).run(rig.request())
    assert report.outcome == "partial"
    failed = next(o for o in report.hosts if o.host == "web2")
    assert failed.error is not None and "unhealthy" in failed.error
    assert CANARY not in failed.error and "[REDACTED]" in failed.error
    assert all(CANARY not in json.dumps(r[3]) for r in rig.broker.requests)


def test_rollback_builds_and_pushes_nothing(rig: Rig) -> None:
    report = rig.engine().run(rig.request(kind="rollback", version="v1"))
    assert report.outcome == "succeeded"
    assert rig.docker_calls() == []
    create = rig.broker.requests[0]
    assert create[3]["kind"] == "rollback" and create[3]["version"] == "v1"


def test_finish_refused_revokes_the_deploy_token(rig: Rig) -> None:
    rig.broker.fail["finish"] = 500
    report = rig.engine().run(rig.request())
    assert [r[2] for r in rig.broker.calls("revoke-self")] == [f"Bearer {DEPLOY_TOKEN}"]
    assert report.token_note is not None and "revoked its token" in report.token_note


def test_finish_and_revoke_refused_says_the_ttl_is_left(rig: Rig) -> None:
    rig.broker.fail["finish"] = 500
    rig.broker.fail["revoke-self"] = 500
    report = rig.engine().run(rig.request())
    assert report.token_note is not None and "until its TTL ends" in report.token_note
    assert any("until its TTL ends" in line for line in rig.said)


def test_unexpected_crash_still_finishes_and_revokes_nothing_else(rig: Rig) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        rig.engine({"web1": "crash"}).run(rig.request())
    [finish] = rig.broker.calls("finish")
    assert finish[3]["outcome"] in ("failed", "partial")
    assert len(rig.broker.calls("hosts")) == 3  # every host's outcome recorded, even on a crash


def test_create_refused_leaves_nothing_to_clean(rig: Rig) -> None:
    rig.broker.fail["deploys"] = 403
    with pytest.raises(CliError, match="stand-in refuses deploys"):
        rig.engine().run(rig.request())
    assert rig.broker.calls("finish") == [] and rig.docker_calls() == []


def _git(directory: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(directory), *args], check=True, capture_output=True)


def test_default_version_is_the_clean_commit(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    (tmp_path / "strongroom.yml").write_text("service: app\n")
    _git(tmp_path, "add", "strongroom.yml")
    _git(tmp_path, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "-m", "one")
    head = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    )
    assert default_version(str(tmp_path)) == head.stdout.strip()
    (tmp_path / "strongroom.yml").write_text("service: changed\n")
    with pytest.raises(CliError, match="uncommitted changes"):
        default_version(str(tmp_path))


def test_default_version_outside_git_asks_for_one(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="pass --version"):
        default_version(str(tmp_path))


def test_process_withholds_the_broker_token_and_redacts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRONGROOM_TOKEN", USER_TOKEN)
    seen: list[Invocation] = []
    process.set_recorder(seen.append)
    try:
        done = process.run(
            [
                sys.executable,
                "-c",
                "import os,sys; print(sys.stdin.read(), os.environ.get('STRONGROOM_TOKEN'))",
            ],
            stdin=CANARY.encode(),
            redactor=lambda text: text.replace(CANARY, "[REDACTED]"),
        )
        lines: list[str] = []
        streamed = process.stream(
            [sys.executable, "-c", f"print('a'); print({CANARY!r}); import sys; sys.exit(3)"],
            redactor=lambda text: text.replace(CANARY, "[REDACTED]"),
            on_stdout=lines.append,
        )
    finally:
        process.set_recorder(None)
    assert done.ok and done.stdout == "[REDACTED] None\n"
    assert streamed.returncode == 3 and lines == ["a", "[REDACTED]"]
    assert "STRONGROOM_TOKEN" not in seen[0].env and seen[0].stdin == CANARY.encode()
    with pytest.raises(CliError, match="no answer within"):
        process.run([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.3)
    with pytest.raises(CliError, match="command not found"):
        process.run(["/nonexistent/docker"])


def test_build_secret_files_are_0600_in_a_0700_directory(tmp_path: Path) -> None:
    with private_dir("sr-test-") as directory:
        path = Path(write_secret_file(directory, "NPM_TOKEN", CANARY))
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_text() == CANARY
        with pytest.raises(FileExistsError):
            write_secret_file(directory, "NPM_TOKEN", "again")
    assert not directory.exists()


# --- the commands, through click, against the stand-in


# The manifest the stand-in's plan (plan_json) comes from, for the commands that read it themselves.
STANDIN_MANIFEST = """\
project: shop
service: app
image: app
registry: {server: "127.0.0.1:5000", username: ci, password: REGISTRY_PASSWORD}
builder: {context: ".", args: {MODE: prod}, secrets: [NPM_TOKEN]}
healthcheck: {path: /up, port: 8080}
ssh: {user: deploy}
roles:
  web: {hosts: [web1, web2], options: {network: host}}
  jobs: {hosts: [web1], cmd: bin/jobs}
env:
  secret: [SECRET]
"""


def test_local_plan_is_the_stand_in_plan() -> None:
    from cli.deploy.localplan import plan_json as local_plan_json

    assert local_plan_json(STANDIN_MANIFEST, "production", "v2") == plan_json()
    only_web2 = local_plan_json(STANDIN_MANIFEST, "production", "v2", ["web2"])
    assert [(r["name"], [h["host"] for h in r["hosts"]]) for r in only_web2["roles"]] == [("web", ["web2"])]
    with pytest.raises(CliError, match="web9 is not a host of any role"):
        local_plan_json(STANDIN_MANIFEST, "production", "v2", ["web9"])
    # ssh.user/ssh.port stay null unless the manifest sets them (an ssh config alias keeps its own).
    bare = STANDIN_MANIFEST.replace("ssh: {user: deploy}\n", "")
    assert local_plan_json(bare, "production", "v2")["ssh"] == {"user": None, "port": None, "host_keys": {}}
    both = STANDIN_MANIFEST.replace("ssh: {user: deploy}", "ssh: {user: root, port: 22}")
    assert local_plan_json(both, "production", "v2")["ssh"]["port"] == 22
    with pytest.raises(CliError, match=r"strongroom\.yml is invalid"):
        local_plan_json("service: app\nbogus: 1\n", "production", "v2")


def _cli(rig: Rig, *args: str, env: dict[str, str] | None = None) -> Any:
    from click.testing import CliRunner

    from cli.root import strongroom

    manifest = rig.workdir / "strongroom.yml"
    if not manifest.exists():
        manifest.write_text(STANDIN_MANIFEST)
    environ = {"STRONGROOM_URL": rig.broker.url, "STRONGROOM_TOKEN": USER_TOKEN, **(env or {})}
    cut = args.index("--") if "--" in args else len(args)  # -f before a command's own arguments
    argv = [*args[:cut], "-f", str(manifest), *args[cut:]]
    return CliRunner().invoke(strongroom, argv, env=environ, catch_exceptions=False)


def test_dry_run_prints_the_plan_and_touches_nothing(rig: Rig) -> None:
    result = _cli(rig, "deploy", "-e", "production", "--dry-run", "--version", "v2")
    assert result.exit_code == 0, result.output
    assert "Deploy app v2 to shop/production (127.0.0.1:5000/app:v2)" in result.output
    assert "--secret 'id=NPM_TOKEN,src=<0600 temp file>'" in result.output
    assert "rotated since: SECRET v2→v3" in result.output
    assert "Secrets read (1): production/SECRET" in result.output
    assert "Dry run: nothing was fetched" in result.output
    assert [r[1].rsplit("/", 1)[-1] for r in rig.broker.requests] == ["check", "status"]
    assert rig.invocations == []


def test_deploy_status_ledger_only_shows_current_and_rotated_and_exits_1_on_drift(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cli.deploy.remote

    monkeypatch.setattr(cli.deploy.remote, "RemoteHost", None)  # --ledger-only: no ssh at all
    result = _cli(rig, "deploy", "status", "-e", "production", "--ledger-only")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert "RUNNING" not in lines[0]
    assert any(line.startswith("web1") and line.rstrip().endswith("current") for line in lines)
    assert any(line.startswith("web2") and "rotated: SECRET v2→v3" in line for line in lines)
    as_json = _cli(rig, "deploy", "status", "-e", "production", "--json", "--ledger-only")
    data = json.loads(as_json.output)
    assert [h["drift"] for h in data["hosts"]] == [False, True]
    assert [h["running"] for h in data["hosts"]] == [None, None]
    assert rig.invocations == []


class FakeStatusHost:
    """Stands in for RemoteHost in `deploy status` (no sshd here): web1 runs v2, web2 cannot be reached."""

    def __init__(self, host: str, plan: dict[str, Any], **_: Any) -> None:
        self.host = host

    def connect(self) -> None:
        if self.host == "web2":
            raise HostUnreachable(self.host, "ssh: connect to host port 22: Connection refused")

    def status(self, role: str | None = None) -> list[Any]:
        from cli.deploy.remote import ContainerInfo

        return [
            ContainerInfo(
                host=self.host, id="c1", name="app-web-v2", status="running", health="healthy",
                image="127.0.0.1:5000/app:v2", image_id="sha256:i", repo_digests=[], role="web",
                version="v2", env_fingerprint="hmac-sha256:" + "1" * 64, deploy_id="d-1",
                created=None, started_at=None,
            )
        ]  # fmt: skip

    def close(self) -> None:
        pass


def test_deploy_status_compares_what_runs_and_reports_an_unreachable_host(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cli.deploy.remote

    monkeypatch.setattr(cli.deploy.remote, "RemoteHost", FakeStatusHost)
    result = _cli(rig, "deploy", "status", "-e", "production")
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "HOST",
        "ROLE",
        "LEDGER",
        "RUNNING",
        "DEPLOYED",
        "BY",
        "LAST",
        "ATTEMPT",
        "STATE",
    ]
    assert any(line.startswith("web1") and line.rstrip().endswith("current") for line in lines)
    [web2] = [line for line in lines if line.startswith("web2")]
    assert "unreachable: ssh: connect to host port 22" in web2 and "rotated: SECRET v2→v3" in web2
    data = json.loads(_cli(rig, "deploy", "status", "-e", "production", "--json").output)
    web1, web2_json = data["hosts"]
    assert (web1["state"], web1["running"]["version"], web1["running"]["container"]) == (
        "current",
        "v2",
        "app-web-v2",
    )
    assert web1["running"]["env_fingerprint"] == web1["expected_env_fingerprint"]
    assert (web2_json["states"], web2_json["running"]) == (["unreachable", "rotated"], None)


def test_rollback_picks_the_version_before_the_current_one(rig: Rig) -> None:
    from cli.commands.deploy import previous_version

    client = BrokerClient(rig.broker.url, token=USER_TOKEN)
    rig.broker.ledger = [("v3", "failed"), ("v2", "succeeded"), ("v2", "partial"), ("v1", "succeeded")]
    assert previous_version(client, "shop", "production") == "v1"
    rig.broker.ledger = [("v2", "succeeded")]
    with pytest.raises(CliError, match="no version before v2"):
        previous_version(client, "shop", "production")
    rig.broker.ledger = []
    with pytest.raises(CliError, match="no earlier deploy"):
        previous_version(client, "shop", "production")


def test_deploy_command_exits_1_unless_every_host_succeeded(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cli.deploy.engine as engine_module

    monkeypatch.setenv("STRONGROOM_DOCKER", rig.environ["STRONGROOM_DOCKER"])
    steps: list[tuple[str, DeployStep]] = []
    behaviours = {"web2": "unhealthy"}
    monkeypatch.setattr(
        engine_module,
        "_remote_host",
        lambda host, _p, _r: FakeRemote(host, behaviours.get(host, "ok"), steps),
    )
    result = _cli(rig, "deploy", "-e", "production", "--version", "v2")
    assert result.exit_code == 1
    assert "Deploy d-1 of 127.0.0.1:5000/app:v2: partial." in result.output
    assert "app-web-v2" in result.output and "deploy of role web failed at health" in result.output
    assert CANARY not in result.output
    behaviours.clear()
    assert _cli(rig, "deploy", "-e", "production", "--version", "v2").exit_code == 0


def test_via_kamal_skips_when_kamal_is_missing(rig: Rig) -> None:
    result = _cli(rig, "deploy", "-e", "production", "--version", "v2", "--via", "kamal",
                  env={"STRONGROOM_KAMAL": "/nonexistent/kamal"})  # fmt: skip
    assert result.exit_code == 127
    assert "kamal is not installed" in result.output and "nothing was deployed" in result.output
    assert rig.broker.requests == [] and not (rig.workdir / "config").exists()


@pytest.mark.parametrize(("kamal_status", "outcome"), [(0, "succeeded"), (1, "failed")])
def test_via_kamal_runs_kamal_with_the_deploy_token(rig: Rig, kamal_status: int, outcome: str) -> None:
    kamal = rig.workdir / "kamal"
    # Kamal echoes commands that hold secrets (e.g. docker run -e SECRET=...): the CLI must mask them.
    kamal.write_text(
        f"#!/bin/sh\necho kamal ran -e SECRET={CANARY}\necho {PASSWORD} >&2\nexit {kamal_status}\n"
    )
    kamal.chmod(0o755)
    result = _cli(rig, "deploy", "-e", "production", "--version", "v2", "--via", "kamal",
                  env={"STRONGROOM_KAMAL": str(kamal)})  # fmt: skip
    assert result.exit_code == kamal_status, result.output
    assert "kamal ran -e SECRET=[REDACTED]" in result.output
    assert CANARY not in result.output and PASSWORD not in result.output
    [call] = rig.invocations
    assert call.argv == (str(kamal), "deploy", "-d", "production", "--version", "v2")
    assert call.env["STRONGROOM_TOKEN"] == DEPLOY_TOKEN and call.cwd == str(rig.workdir)
    assert (rig.workdir / "config" / "deploy.yml").read_text() == "service: app\n"
    # The bundle was fetched with the deploy token (the ledger records the served keys) before kamal ran.
    [bundle] = rig.broker.calls("bundle")
    assert bundle[2] == f"Bearer {DEPLOY_TOKEN}"
    assert rig.broker.requests.index(bundle) < rig.broker.requests.index(rig.broker.calls("finish")[0])
    # Every host of the plan is in the ledger, by kamal's exit status, before the deploy is finished.
    reports = [c[3] for c in rig.broker.calls("hosts")]
    assert sorted((r["host"], r["role"]) for r in reports) == sorted((h, r) for r, h in rig.broker.hosts())
    expected = "deployed" if kamal_status == 0 else "failed"
    assert {r["outcome"] for r in reports} == {expected}
    assert all(r["container"] is None and r["image_digest"] is None for r in reports)
    if kamal_status:
        assert all("kamal deploy exited 1" in r["error"] and CANARY not in r["error"] for r in reports)
    else:
        assert {r["env_fingerprint"] for r in reports if r["host"] == "web2"} == {"hmac-sha256:webweb2"}
    assert rig.broker.requests[-1][1].endswith("/finish")
    assert [c[3] for c in rig.broker.calls("finish")] == [{"outcome": outcome}]


# --- the engine against the real broker (its deploy routes, ledger and token rules); docker and hosts as above

REAL_MANIFEST = """\
project: shop
service: shop
image: shop
registry:
  server: 127.0.0.1:5000
  username: ci
  password: REGISTRY_PASSWORD
builder:
  secrets: [BUILD_TOKEN]
healthcheck:
  path: /up
  port: 8080
roles:
  web:
    hosts: [web1, web2]
    options:
      network: host
env:
  clear:
    MODE: production
  secret: [APP_SECRET]
"""


@pytest.mark.e2e
def test_engine_against_the_real_broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.e2e.conftest import start, stop

    broker = start(tmp_path / "data", tmp_path / "home" / ".config", tmp_path / "broker.log")
    try:
        secret_file = broker.data_dir / "bootstrap-admin.secret"
        assert (
            broker.cli(
                "login", "--url", broker.url, "--client-id", "admin", "--secret-file", str(secret_file)
            ).returncode
            == 0
        )
        assert broker.cli("projects", "create", "shop").returncode == 0
        assert broker.cli("envs", "create", "-p", "shop", "production").returncode == 0
        values = {"REGISTRY_PASSWORD": PASSWORD, "BUILD_TOKEN": BUILD_SECRET.replace("\n", " "),
                  "APP_SECRET": CANARY, "UNRELATED": "unrelated-" + CANARY}  # fmt: skip
        for name, value in values.items():
            done = broker.cli("secrets", "set", "-p", "shop", "-e", "production", name, input=value.encode())
            assert done.returncode == 0, done.stderr
        minted = broker.cli("tokens", "create", "--scope", "shop:production:read", "--ttl", "15m")
        assert minted.returncode == 0, minted.stderr
        user_token = minted.stdout.strip()

        fake = tmp_path / "fake-docker"
        fake.write_text(f"#!{sys.executable}\n{FAKE_DOCKER}")
        fake.chmod(0o755)
        monkeypatch.setenv("FAKE_DOCKER_LOG", str(tmp_path / "docker.log"))
        monkeypatch.setenv("FAKE_DIGEST", DIGEST)
        invocations: list[Invocation] = []
        steps: list[tuple[str, DeployStep]] = []
        behaviours = {"web2": "unhealthy"}
        process.set_recorder(invocations.append)
        try:
            user_client = BrokerClient(broker.url, token=user_token)
            minted_tokens: list[str] = []
            with_token = user_client.with_token

            def capture(token: str, **kwargs: Any) -> BrokerClient:
                minted_tokens.append(token)
                return with_token(token, **kwargs)

            monkeypatch.setattr(user_client, "with_token", capture)
            created: list[Any] = []
            create_deploy = user_client.create_deploy

            def capture_created(**kwargs: Any) -> Any:
                created.append(create_deploy(**kwargs))
                return created[-1]

            monkeypatch.setattr(user_client, "create_deploy", capture_created)
            engine = DeployEngine(
                user_client,
                say=lambda _line: None,
                environ={"STRONGROOM_DOCKER": str(fake), "HOME": str(tmp_path)},
                remote_factory=lambda host, _p, _r: FakeRemote(host, behaviours.get(host, "ok"), steps),
            )
            report = engine.run(
                DeployRequest(
                    project="shop",
                    environment="production",
                    manifest=REAL_MANIFEST,
                    manifest_dir=str(tmp_path),
                    version="v1",
                )
            )
        finally:
            process.set_recorder(None)

        assert report.outcome == "partial", report.error
        assert all(b"APP_SECRET=" + CANARY.encode() in s.env_file for _, s in steps)
        for call in invocations:
            assert not any(v in " ".join([*call.argv, *call.env.values()]) for v in values.values())
        # The ledger has both hosts; the deploy is closed with the outcome and its token is dead.
        client = BrokerClient(broker.url, token=user_token)
        detail = client.get_deploy(deploy_id=report.deploy_id)
        assert detail.status == "partial"
        assert {(h.host, h.outcome) for h in detail.hosts} == {("web1", "deployed"), ("web2", "failed")}
        assert {h.image_digest for h in detail.hosts if h.outcome == "deployed"} == {DIGEST}
        assert {k.name for k in detail.keys} >= {"APP_SECRET", "REGISTRY_PASSWORD", "BUILD_TOKEN"}
        assert "UNRELATED" not in {k.name for k in detail.keys}
        statuses = {
            s.host: s
            for s in client.deploy_status(project="shop", environment="production", manifest=REAL_MANIFEST)
        }
        assert statuses["web1"].last is not None and statuses["web1"].last.version == "v1"
        assert not statuses["web1"].drift and statuses["web2"].drift
        assert report.finished is not None and report.token_note is None
        # The plan `app` and dry runs work out from the manifest is the broker's own.
        from cli.deploy.localplan import plan_json as local_plan_json

        assert local_plan_json(REAL_MANIFEST, "production", "v1") == created[0].plan.raw
        # The deploy token died with the deploy.
        from cli.client import BrokerError

        [deploy_token] = minted_tokens
        with pytest.raises(BrokerError) as refused:
            BrokerClient(broker.url, token=deploy_token).deploy_bundle(deploy_id=report.deploy_id)
        assert refused.value.status == 401
    finally:
        stop(broker)


def test_client_replaces_a_keep_alive_connection_the_server_dropped_while_idle() -> None:
    """After a long build the broker (uvicorn: 5 s) has closed the kept-alive connection; reports must still go."""
    connections: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            connections.append(id(self.connection))
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            data = b'{"ok": true}'
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.close_connection = True  # as an idle timeout would: closed without telling the client

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        client = BrokerClient(f"http://127.0.0.1:{server.server_address[1]}", token=DEPLOY_TOKEN)
        client.report_deploy_host(deploy_id="d-1", host="web1", role="web", outcome="deployed")
        client._last_used -= 60  # idle for a minute (a build), without waiting for one
        client.report_deploy_host(deploy_id="d-1", host="web2", role="web", outcome="deployed")
        assert len(connections) == 2
    finally:
        server.shutdown()
        server.server_close()


class FakeAppHost:
    """Stands in for RemoteHost in `app` commands (no sshd here): records the action, answers per host."""

    actions: ClassVar[list[tuple[str, str, str | None, tuple[str, ...], bool]]] = []

    def __init__(self, host: str, plan: dict[str, Any], *, redactor: object = None) -> None:
        self.host = host
        self.plan = plan

    def connect(self) -> None:
        if self.host == "web2" and os.environ.get("FAKE_APP_UNREACHABLE"):
            raise HostUnreachable(self.host, "ssh: connect to host port 22: Connection refused")

    def app(
        self, action: str, role: str | None = None, *, argv: Any = (), new: bool = False, **_: Any
    ) -> Any:
        FakeAppHost.actions.append((self.host, action, role, tuple(argv), new))
        # What an app may print: its own secret (RemoteHost masks too; the command must not rely on it).
        leak = f"SECRET={CANARY}\n" if action in ("logs", "exec") else ""
        return process.Completed(0, f"{action} on {self.host} ({self.plan['service']})\n{leak}", "")

    def close(self) -> None:
        pass


def test_app_commands_reach_the_manifest_hosts_and_mask_the_apps_secrets(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cli.deploy.remote

    monkeypatch.setattr(cli.deploy.remote, "RemoteHost", FakeAppHost)
    FakeAppHost.actions.clear()
    result = _cli(rig, "app", "logs", "-e", "production")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "web1: logs on web1 (app)", "web1: SECRET=[REDACTED]", "web2: logs on web2 (app)", "web2: SECRET=[REDACTED]",
    ]  # fmt: skip
    # One read of the env files' values with the user's own token (audited by the broker), no deploy.
    [values] = rig.broker.calls("values")
    assert values[2] == f"Bearer {USER_TOKEN}" and values[3] == {"names": ["SECRET"]}
    assert rig.broker.calls("deploys") == []
    result = _cli(
        rig, "app", "exec", "-e", "production", "--role", "jobs", "--new", "--", "bin/console", "-x"
    )
    assert result.exit_code == 0, result.output
    assert CANARY not in result.output and "SECRET=[REDACTED]" in result.output
    assert FakeAppHost.actions[-1] == ("web1", "exec", "jobs", ("bin/console", "-x"), True)
    # --reveal: unmasked, and nothing is read.
    before = len(rig.broker.requests)
    result = _cli(rig, "app", "exec", "-e", "production", "--hosts", "web1", "--reveal", "--", "env")
    assert result.exit_code == 0 and f"SECRET={CANARY}" in result.output
    assert len(rig.broker.requests) == before
    # A user who may not read the keys is refused before any host is reached.
    rig.broker.fail["values"] = 403
    FakeAppHost.actions.clear()
    result = _cli(rig, "app", "logs", "-e", "production")
    assert result.exit_code != 0 and FakeAppHost.actions == []
    assert "reading them failed: stand-in refuses values" in result.output and "--reveal" in result.output
    before = len(rig.broker.requests)
    assert _cli(rig, "app", "stop", "-e", "production", "--hosts", "web2").output == "stop on web2 (app)\n"
    monkeypatch.setenv("FAKE_APP_UNREACHABLE", "1")
    result = _cli(rig, "app", "remove", "-e", "production")
    assert result.exit_code == 1 and "web2: error: web2: unreachable: ssh: connect to host" in result.output
    assert len(rig.broker.requests) == before  # stop/start/remove print no app output: no read


def test_kamal_argv_names_the_destination_version_and_hosts() -> None:
    from cli.deploy.kamal import kamal_argv

    assert kamal_argv("kamal", environment="production", version="v2") == [
        "kamal", "deploy", "-d", "production", "--version", "v2",
    ]  # fmt: skip
    assert kamal_argv("kamal", environment="staging", version="v2", hosts=["web1", "web2"])[-2:] == [
        "--hosts",
        "web1,web2",
    ]


def test_no_cache_builds_cold(rig: Rig) -> None:
    report = rig.engine().run(rig.request(no_cache=True))
    assert report.outcome == "succeeded", report.error
    build = rig.docker_calls()[0]["argv"]
    assert build[:2] == ["build", "--no-cache"] and "--secret" in build
    rig.engine().run(rig.request())
    assert "--no-cache" not in rig.docker_calls()[4]["argv"]  # the next deploy's build: cached again


def test_host_report_redacts_the_whole_error_before_cutting_it(broker: DeployBroker) -> None:
    from cli.deploy.redact import Redactor

    client = BrokerClient(broker.url, token=DEPLOY_TOKEN)
    error = "x" * 1995 + CANARY + " and more"
    client.report_deploy_host(
        deploy_id="d-1", host="web1", role="web", outcome="failed", error=error, redactor=Redactor([CANARY])
    )
    sent = broker.calls("hosts")[-1][3]["error"]
    assert len(sent) == 2000 and sent.startswith("x" * 1995)
    assert CANARY[:5] not in sent and "[REDA" in sent


def test_a_crash_right_after_the_token_is_minted_still_finishes_the_deploy(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(_plan: object) -> str:
        raise RuntimeError("boom right after create")

    monkeypatch.setattr("cli.deploy.engine.plans.image_ref", crash)
    with pytest.raises(RuntimeError, match="boom right after create"):
        rig.engine().run(rig.request())
    [finish] = rig.broker.calls("finish")
    assert finish[2] == f"Bearer {DEPLOY_TOKEN}" and finish[3]["outcome"] == "failed"


def test_finish_raising_anything_revokes_the_deploy_token(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise ValueError("unexpected answer")

    monkeypatch.setattr(BrokerClient, "finish_deploy", broken)
    report = rig.engine().run(rig.request())
    assert [r[2] for r in rig.broker.calls("revoke-self")] == [f"Bearer {DEPLOY_TOKEN}"]
    assert report.token_note is not None and "ValueError" in report.token_note


def test_an_unusable_create_answer_revokes_the_minted_token(rig: Rig) -> None:
    rig.broker.plan = {"service": "app"}  # no roles, no image: the client cannot read the plan
    with pytest.raises(CliError):
        rig.engine().run(rig.request())
    assert [r[2] for r in rig.broker.calls("revoke-self")] == [f"Bearer {DEPLOY_TOKEN}"]


def _expires_in(seconds: float) -> str:
    from datetime import UTC, datetime, timedelta

    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def _grant(rig: Rig, seconds: float) -> None:
    """The stand-in broker answers a deploy started now whose token ends `seconds` from now."""
    rig.broker.started_at = _expires_in(0)
    rig.broker.expires_at = _expires_in(seconds)


def test_a_build_that_would_outlive_the_deploy_token_is_stopped_naming_ttl(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cli.deploy.engine.HOST_MARGIN_SECONDS", 0.0)
    monkeypatch.setattr("cli.deploy.engine.BUILD_FLOOR_SECONDS", 0.0)
    monkeypatch.setenv("FAKE_DOCKER_SLEEP", "30")
    # The broker's clock is far ahead of ours (I50: clocks may be off), so the token's life is exactly its
    # 3 s grant whatever the time this test took before the engine read the answer; the budget the build
    # gets is that grant less the (load-dependent) moments spent before the build starts.
    ahead = 1000.0
    rig.broker.started_at = _expires_in(ahead)
    rig.broker.expires_at = _expires_in(ahead + 3)
    report = rig.engine().run(rig.request(ttl_seconds=60))
    assert report.outcome == "failed" and report.error is not None
    assert re.search(r"docker build stopped after [0-3] s", report.error), report.error
    assert "--ttl" in report.error
    assert rig.steps == []  # no host was changed
    [finish] = rig.broker.calls("finish")
    assert finish[3]["outcome"] == "failed"


def test_a_token_too_short_for_the_hosts_builds_nothing(rig: Rig) -> None:
    _grant(rig, 10)  # less than the margins kept for the build and the hosts (60 / 3 s each)
    report = rig.engine().run(rig.request(ttl_seconds=60))
    assert report.error is not None and "nothing was fetched, built, pushed or started" in report.error
    assert "20 s kept for the build and push and the 20 s kept for the hosts" in report.error
    assert rig.docker_calls() == [] and rig.steps == [] and rig.broker.calls("bundle") == []


def test_a_shortened_deploy_token_is_said_at_the_start(rig: Rig) -> None:
    """Issue 17: the token cut to the caller's session end is named before anything is built."""
    _grant(rig, 300)
    report = rig.engine().run(rig.request(ttl_seconds=900))
    assert report.outcome == "succeeded", report.error
    [note] = [line for line in rig.said if line.startswith("note: the deploy token")]
    assert "lives 300 s, not --ttl 900" in note and rig.broker.expires_at in note
    assert rig.said.index(note) == 1  # right after the deploy's first line, before the build


def test_a_token_shortened_below_the_build_and_host_margins_is_refused_before_anything(rig: Rig) -> None:
    _grant(rig, 150)
    report = rig.engine().run(rig.request(ttl_seconds=900))
    assert report.outcome == "failed" and report.error is not None
    assert report.error.startswith("the deploy token lives 1")  # 150 s less the time the test took
    assert "60 s kept for the build and push and the 120 s kept for the hosts" in report.error
    assert "log in again" in report.error
    assert any("lives 150 s, not --ttl 900" in line for line in rig.said)
    assert rig.broker.calls("bundle") == [] and rig.docker_calls() == [] and rig.remotes == {}
    [finish] = rig.broker.calls("finish")
    assert finish[3]["outcome"] == "failed"


def test_a_rollback_needs_only_the_hosts_margin(rig: Rig) -> None:
    _grant(rig, 150)
    report = rig.engine().run(rig.request(ttl_seconds=900, kind="rollback"))
    assert report.outcome == "succeeded", report.error
    assert rig.docker_calls() == []  # a rollback builds nothing


KAMAL_MANIFEST = """\
project: shop
service: shop
image: registry.example.com/acme/shop
registry:
  server: registry.example.com
  username: deployer
  password: REGISTRY_PASSWORD
builder:
  arch: amd64
proxy:
  host: shop.example.com
  ssl:
    certificate_pem: TLS_CERT
    private_key_pem: TLS_KEY
roles:
  web:
    hosts: [web1, web2]
env:
  clear:
    MODE: production
  secret: [APP_SECRET]
accessories:
  db:
    image: postgres:16
    host: db1
    env:
      secret: [POSTGRES_PASSWORD]
"""

# Stands in for Kamal 2.12, which cannot be installed here: like `kamal deploy`, it loads
# .kamal/secrets.<destination>, whose fetch line it runs as dotenv would (the probe resolves to 3.1, so
# the output is kept as printed), then exits with the fetch's status. It prints the names it got, never a value.
FAKE_KAMAL = r"""
import json, shlex, subprocess, sys
destination = sys.argv[sys.argv.index("-d") + 1]
prefix = "STRONGROOM_SECRETS=$("
with open(f".kamal/secrets.{destination}") as f:
    line = next(l for l in f.read().splitlines() if l.startswith(prefix))
argv = shlex.split(line[len(prefix):-1].replace("${STRONGROOM_DOTENV}", "3.1"))
done = subprocess.run(argv, capture_output=True, text=True)
if done.returncode:
    print("fetch refused:", done.stderr.strip(), file=sys.stderr)
    sys.exit(done.returncode)
got = json.loads(shlex.split(done.stdout)[0])
print("fetched " + ",".join(sorted(got)))
"""


@pytest.mark.e2e
def test_deploy_via_kamal_fetches_the_pems_and_accessory_secrets_with_the_deploy_token(
    tmp_path: Path,
) -> None:
    """`deploy --via kamal` against a real broker, with a fake kamal (Kamal cannot be installed here) that
    runs the compiled `.kamal/secrets.production` fetch line with the deploy token, as Kamal would."""
    from tests.e2e.conftest import BIN, start, stop

    broker = start(tmp_path / "data", tmp_path / "home" / ".config", tmp_path / "broker.log")
    try:
        secret_file = broker.data_dir / "bootstrap-admin.secret"
        login = broker.cli(
            "login", "--url", broker.url, "--client-id", "admin", "--secret-file", str(secret_file)
        )
        assert login.returncode == 0, login.stderr
        assert broker.cli("projects", "create", "shop").returncode == 0
        assert broker.cli("envs", "create", "-p", "shop", "production").returncode == 0
        values = {
            "REGISTRY_PASSWORD": PASSWORD,
            "APP_SECRET": CANARY,
            "TLS_CERT": f"-----BEGIN CERTIFICATE-----\ncert-{CANARY}\n-----END CERTIFICATE-----",
            "TLS_KEY": f"-----BEGIN PRIVATE KEY-----\nkey-{CANARY}\n-----END PRIVATE KEY-----",
            "POSTGRES_PASSWORD": "pg-" + CANARY,
            "UNRELATED": "unrelated-" + CANARY,
        }
        for name, value in values.items():
            done = broker.cli("secrets", "set", "-p", "shop", "-e", "production", name, input=value.encode())
            assert done.returncode == 0, done.stderr
        app = tmp_path / "app"
        app.mkdir()
        (app / "strongroom.yml").write_text(KAMAL_MANIFEST)
        kamal = tmp_path / "kamal"
        kamal.write_text(f"#!{sys.executable}\n{FAKE_KAMAL}")
        kamal.chmod(0o755)
        path = f"{BIN}{os.pathsep}{broker.env.get('PATH', os.defpath)}"  # `strongroom` for the fetch line
        ran = broker.cli(
            "deploy", "-e", "production", "-f", str(app / "strongroom.yml"), "--version", "v1", "--via", "kamal",
            env={"STRONGROOM_KAMAL": str(kamal), "PATH": path},
        )  # fmt: skip
        assert ran.returncode == 0, ran.stdout + ran.stderr
        fetched = sorted(set(values) - {"UNRELATED"})
        assert f"fetched {','.join(fetched)}" in ran.stdout + ran.stderr
        assert CANARY not in ran.stdout + ran.stderr
    finally:
        stop(broker)
