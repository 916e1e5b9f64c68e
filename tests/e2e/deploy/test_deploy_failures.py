"""Issue 6 end to end, when hosts cannot be trusted or reached: the real CLI, broker, sshd and engines.

- a host whose key is not in known_hosts (`stranger`, a live sshd) stops the whole deploy before anything
  runs, with or without --fail-fast: no session is opened there, the error shows its fingerprint, no
  image is built, no host changes, the deploy is `failed` and its token dead;
- a host nobody answers on (`down1`) gives a clear error naming it; with --fail-fast nothing is built and
  no host changes, without it the others are deployed and the deploy is `partial` in the ledger.
`stranger`'s sessions would use web1's engine, so a container started through it would show there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.deploy.conftest import (
    DeployBroker,
    Run,
    canary,
    manifest,
    project_dir,
    run,
    service_containers,
)
from tests.support import deploy_lab, sshd

pytestmark = pytest.mark.e2e

ENV = "edge"


@pytest.fixture(scope="module")
def edge(lab: deploy_lab.Lab, deploy_broker: DeployBroker) -> dict[str, str]:
    """Environment `edge` with the values the lab app needs."""
    values = {
        "APP_SECRET": canary("EDGE"),
        "BUILD_TOKEN": canary("EDGEBUILD"),
        "REGISTRY_PASSWORD": lab.registry.password,
    }
    deploy_broker.environment(ENV, values)
    return values


def deploy(
    lab: deploy_lab.Lab,
    broker: DeployBroker,
    root: Path,
    service: str,
    hosts: list[str],
    *flags: str,
    ssh_port: bool = True,
) -> Run:
    """Deploy version v1 of `service` to `hosts` of environment edge."""
    project_dir(root, lab, "v1", service=service, hosts=hosts, ssh_port=ssh_port)
    return run(lab, broker, "deploy", "-e", ENV, "--version", "v1", *flags, cwd=root)


def nothing_anywhere(lab: deploy_lab.Lab, service: str) -> None:
    """No container of `service` on any host's engine."""
    for alias in lab.hosts:
        assert service_containers(lab, alias, service) == [], alias


def ledger(broker: DeployBroker, service: str) -> dict[str, Any]:
    """The newest deploy of `service` in environment edge, with its hosts."""
    newest = next(d for d in broker.deploys(ENV) if d["service"] == service)
    return broker.deploy(newest["id"])


def stranger_log(lab: deploy_lab.Lab) -> str:
    """What the stranger's sshd has logged so far."""
    assert lab.unknown_host is not None
    return (lab.unknown_host.root / "sshd.log").read_text()


def no_login_since(lab: deploy_lab.Lab, log_before: str) -> None:
    """The stranger's sshd accepted no login since then (a key scan is not a login)."""
    assert "Accepted publickey" not in stranger_log(lab)[len(log_before) :]


def nothing_built_or_run(r: Run) -> None:
    """No `docker build`, push or login here; on the hosts nothing but the preflight's `docker version`."""
    local = [c for c in r.calls if c.where == "local" and c.program == "docker"]
    assert not [c for c in local if {"build", "push", "login"} & set(c.argv)], [c.argv[:3] for c in local]
    on_hosts = [(c.where, c.argv[:3]) for c in r.calls if c.where != "local" and c.argv[:1] != ("version",)]
    assert on_hosts == [], "a docker command ran on a host"


def no_live_deploy_token(broker: DeployBroker) -> None:
    """Every deploy token (the use-limited ones) is revoked once its deploy ended."""
    listed = broker.http.get("/v1/tokens", params={"include_inactive": "true", "limit": 1000})
    assert listed.status_code == 200, listed.text
    live = [t["accessor"] for t in listed.json()["tokens"] if t["num_uses"] is not None and not t["revoked"]]
    assert live == []


@pytest.fixture(scope="module")
def refused(
    lab: deploy_lab.Lab,
    deploy_broker: DeployBroker,
    edge: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Run, str]:
    """Deploy to web1 and the stranger without --fail-fast; with what its sshd had logged before."""
    log_before = stranger_log(lab)
    root = tmp_path_factory.mktemp("refused")
    return deploy(lab, deploy_broker, root, "refused", ["web1", lab.unknown]), log_before


@pytest.fixture(scope="module")
def reach_ff(
    lab: deploy_lab.Lab,
    deploy_broker: DeployBroker,
    edge: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Run:
    """Deploy to web1 and the unreachable down1 with --fail-fast."""
    root = tmp_path_factory.mktemp("reach-ff")
    return deploy(lab, deploy_broker, root, "reach-ff", ["web1", lab.unreachable], "--fail-fast")


def test_unknown_host_key_stops_the_whole_deploy_before_anything_runs(
    lab: deploy_lab.Lab, deploy_broker: DeployBroker, refused: tuple[Run, str]
) -> None:
    r, log_before = refused
    assert r.out.returncode != 0
    said = r.out.stdout + r.out.stderr
    assert f"host key of {lab.unknown} was refused" in said and "no host was changed" in said, said
    assert lab.unknown_host is not None and lab.unknown_host.fingerprint in said, said
    no_login_since(lab, log_before)
    nothing_anywhere(lab, "refused")  # web1 was reachable, and untouched all the same
    nothing_built_or_run(r)
    assert ledger(deploy_broker, "refused")["status"] == "failed"
    no_live_deploy_token(deploy_broker)


def test_unknown_host_key_with_fail_fast_changes_no_host(
    lab: deploy_lab.Lab, deploy_broker: DeployBroker, edge: dict[str, str], tmp_path: Path
) -> None:
    log_before = stranger_log(lab)
    r = deploy(lab, deploy_broker, tmp_path, "refused-ff", ["web1", lab.unknown], "--fail-fast")
    assert r.out.returncode != 0
    assert lab.unknown in r.out.stderr and "no host was changed" in r.out.stderr, r.out.stderr
    no_login_since(lab, log_before)
    nothing_anywhere(lab, "refused-ff")
    nothing_built_or_run(r)
    assert ledger(deploy_broker, "refused-ff")["status"] == "failed"
    no_live_deploy_token(deploy_broker)


def test_unreachable_host_with_fail_fast_deploys_no_other_host(
    lab: deploy_lab.Lab, deploy_broker: DeployBroker, reach_ff: Run
) -> None:
    assert reach_ff.out.returncode != 0
    assert f"{lab.unreachable}: unreachable" in reach_ff.out.stderr, reach_ff.out.stderr
    assert "--fail-fast is set: nothing was built" in reach_ff.out.stderr, reach_ff.out.stderr
    nothing_anywhere(lab, "reach-ff")
    nothing_built_or_run(reach_ff)
    assert ledger(deploy_broker, "reach-ff")["status"] == "failed"


def test_the_ledger_names_the_refused_and_the_unreachable_host(
    lab: deploy_lab.Lab, deploy_broker: DeployBroker, refused: tuple[Run, str], reach_ff: Run
) -> None:
    row = ledger(deploy_broker, "refused")
    assert {h["host"]: h["outcome"] for h in row["hosts"]} == {lab.unknown: "failed", "web1": "skipped"}
    outcomes = {h["host"]: h["outcome"] for h in ledger(deploy_broker, "reach-ff")["hosts"]}
    assert outcomes[lab.unreachable] == "failed" and outcomes.get("web1") != "deployed"


@pytest.fixture(scope="module")
def partial(
    lab: deploy_lab.Lab,
    deploy_broker: DeployBroker,
    edge: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Run:
    """Deploy to web1, web2 and the unreachable down1 without --fail-fast."""
    root = tmp_path_factory.mktemp("reach-all")
    return deploy(lab, deploy_broker, root, "reach-all", ["web1", "web2", lab.unreachable])


def test_unreachable_host_without_fail_fast_deploys_the_others(
    lab: deploy_lab.Lab, deploy_broker: DeployBroker, partial: Run
) -> None:
    assert partial.out.returncode != 0  # not everything went
    assert f"{lab.unreachable}: unreachable" in partial.out.stderr, partial.out.stderr
    for alias in ("web1", "web2"):
        [container] = service_containers(lab, alias, "reach-all")
        assert container["State"]["Health"]["Status"] == "healthy"
        assert container["Name"] == "/reach-all-web-v1"
    assert ledger(deploy_broker, "reach-all")["status"] == "partial"


def test_the_ledger_of_a_partial_deploy_has_every_host(
    lab: deploy_lab.Lab, deploy_broker: DeployBroker, partial: Run
) -> None:
    row = ledger(deploy_broker, "reach-all")
    outcomes = {h["host"]: h["outcome"] for h in row["hosts"]}
    assert outcomes == {"web1": "deployed", "web2": "deployed", lab.unreachable: "failed"}
    errors = {h["host"]: h["error"] for h in row["hosts"]}
    assert "unreachable" in errors[lab.unreachable]


def test_deploy_status_reports_an_unreachable_host_and_still_the_others(
    lab: deploy_lab.Lab, deploy_broker: DeployBroker, partial: Run, tmp_path: Path
) -> None:
    (tmp_path / "strongroom.yml").write_text(
        manifest(lab, service="reach-all", hosts=["web1", "web2", lab.unreachable])
    )
    # web2 moves to an address nothing listens on (an ssh config of our own: the lab's stays as it is).
    config = tmp_path / "ssh_config"
    config.write_text(
        lab.hosts["web1"].ssh.config_block("web1", lab.known_hosts)
        + sshd.config_block("web2", "127.0.0.254", lab.ssh_port, lab.client_key, lab.known_hosts)
    )
    r = run(
        lab,
        deploy_broker,
        "deploy",
        "status",
        "-e",
        ENV,
        cwd=tmp_path,
        env={"STRONGROOM_SSH_CONFIG": str(config)},
    )
    assert r.out.returncode == 1, r.out.stdout + r.out.stderr
    rows = {line.split()[0]: line for line in r.out.stdout.splitlines()[1:]}
    assert rows["web1"].rstrip().endswith("current"), r.out.stdout
    assert "unreachable: " in rows["web2"] and "127.0.0.254" in rows["web2"], r.out.stdout
    assert "never deployed" in rows[lab.unreachable], r.out.stdout


def test_a_host_that_comes_back_after_a_partial_deploy_is_brought_current(
    lab: deploy_lab.Lab, deploy_broker: DeployBroker, edge: dict[str, str], partial: Run, tmp_path: Path
) -> None:
    """Issue 17 with the real parts: reach-all's v1 runs on web1 and web2 (the partial deploy above); v2 goes
    out while web2 is down. The ledger gives web2 no keys (`deploy list` and `deploy show` say so, values
    never shown), status says it failed and is behind (exit 1, with and without ssh), and `deploy --hosts
    web2` of v2 brings it current (exit 0)."""
    hosts = ["web1", "web2"]
    down = tmp_path / "ssh_config"  # web2 at an address nothing listens on; web1 as the lab has it
    down.write_text(
        lab.hosts["web1"].ssh.config_block("web1", lab.known_hosts)
        + sshd.config_block("web2", "127.0.0.254", lab.ssh_port, lab.client_key, lab.known_hosts)
    )
    project_dir(tmp_path, lab, "v2", service="reach-all", hosts=hosts)
    went = run(lab, deploy_broker, "deploy", "-e", ENV, "--version", "v2", cwd=tmp_path, env={
        "STRONGROOM_SSH_CONFIG": str(down)
    })  # fmt: skip
    assert went.out.returncode == 1, went.out.stdout + went.out.stderr
    row = ledger(deploy_broker, "reach-all")
    assert row["status"] == "partial"
    assert {h["host"]: h["outcome"] for h in row["hosts"]} == {"web1": "deployed", "web2": "failed"}
    assert {k["host"] for k in row["host_keys"]} == {"web1"}  # web2 received nothing

    listed = run(lab, deploy_broker, "deploy", "list", "-e", ENV, "--json", cwd=tmp_path)
    assert listed.out.returncode == 0, listed.out.stderr
    newest = json.loads(listed.out.stdout)["deploys"][0]
    assert (newest["id"], newest["version"], newest["status"], newest["via"]) == (
        row["id"],
        "v2",
        "partial",
        "ssh",
    )
    shown = run(lab, deploy_broker, "deploy", "show", row["id"], "--json", cwd=tmp_path)
    assert shown.out.returncode == 0, shown.out.stderr
    detail = json.loads(shown.out.stdout)
    assert detail["hosts"] == row["hosts"] and detail["host_keys"] == row["host_keys"]
    assert {k["name"] for k in detail["keys"]} == {"APP_SECRET", "BUILD_TOKEN", "REGISTRY_PASSWORD"}
    table = run(lab, deploy_broker, "deploy", "show", row["id"], cwd=tmp_path)
    assert table.out.returncode == 0, table.out.stderr
    web1_key = next(k for k in row["host_keys"] if k["name"] == "APP_SECRET")
    assert web1_key["fingerprint"] in table.out.stdout and "partial" in table.out.stdout
    assert any(line.startswith("web2") and "failed" in line for line in table.out.stdout.splitlines())
    for value in edge.values():
        assert value not in listed.out.stdout + shown.out.stdout + table.out.stdout

    for flags in (["--ledger-only"], []):
        status = run(lab, deploy_broker, "deploy", "status", "-e", ENV, "--json", *flags, cwd=tmp_path)
        assert status.out.returncode == 1, status.out.stdout + status.out.stderr
        by_host = {h["host"]: h for h in json.loads(status.out.stdout)["hosts"]}
        assert by_host["web1"]["state"] == "current", by_host["web1"]
        web2 = by_host["web2"]
        assert web2["states"][:2] == ["failed", "behind"], web2
        assert (web2["last"]["version"], web2["last_attempt"]["version"]) == ("v1", "v2")
        assert web2["last_attempt"]["outcome"] == "failed" and web2["behind"]["version"] == "v2"
    table = run(lab, deploy_broker, "deploy", "status", "-e", ENV, "--ledger-only", cwd=tmp_path)
    web2_row = next(line for line in table.out.stdout.splitlines() if line.startswith("web2"))
    assert "failed" in web2_row and "behind" in web2_row and "v2" in web2_row, table.out.stdout

    back = run(lab, deploy_broker, "deploy", "-e", ENV, "--version", "v2", "--hosts", "web2", cwd=tmp_path)
    assert back.out.returncode == 0, back.out.stdout + back.out.stderr
    [container] = [c for c in service_containers(lab, "web2", "reach-all") if c["State"]["Running"]]
    assert container["Config"]["Labels"]["strongroom.version"] == "v2"
    status = run(lab, deploy_broker, "deploy", "status", "-e", ENV, "--json", cwd=tmp_path)
    assert status.out.returncode == 0, status.out.stdout + status.out.stderr
    web2 = {h["host"]: h for h in json.loads(status.out.stdout)["hosts"]}["web2"]
    assert web2["state"] == "current" and web2["running"]["version"] == "v2"
    assert web2["last_attempt"]["deploy_id"] == web2["last"]["deploy_id"] and web2["behind"] is None


def test_hosts_may_be_ssh_config_aliases_with_their_own_port(
    lab: deploy_lab.Lab, deploy_broker: DeployBroker, edge: dict[str, str], tmp_path: Path
) -> None:
    # No ssh section: ssh gets no -l/-p, so the alias's own Port (the lab's, not 22) and User apply.
    r = deploy(lab, deploy_broker, tmp_path, "alias", ["web1"], ssh_port=False)
    assert "ssh" not in (tmp_path / "strongroom.yml").read_text()
    assert r.out.returncode == 0, r.out.stderr
    [container] = service_containers(lab, "web1", "alias")
    assert container["State"]["Health"]["Status"] == "healthy"
    ssh_calls = [c for c in r.calls if c.where == "local" and c.program == "ssh"]
    assert ssh_calls and not [c for c in ssh_calls if {"-p", "-l"} & set(c.argv)]
    logs = run(lab, deploy_broker, "app", "logs", "-e", ENV, cwd=tmp_path)
    assert logs.out.returncode == 0, logs.out.stderr
