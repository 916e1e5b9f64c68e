"""`deploy status` verdicts: what runs on a host against the ledger and what a deploy would give now.

The states and their sentences are pinned once, in tests/unit/test_drift.py (broker/domain/drift.py, shared
with the console); these tests pin what the CLI adds: the broker's answer and the hosts' containers handed to
that mapping (which container counts as running, which are stopped), and the ssh inspection around it.

`FakeHost` stands in for cli.deploy.remote.RemoteHost (no sshd in unit tests; the real one is inspected in
tests/e2e/deploy/test_deploy_flow.py): it answers `status()` with ContainerInfo rows or raises the
errors RemoteHost raises.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from cli.client import HostStatus, LastDeploy, Rotated
from cli.deploy.remote import ContainerInfo, HostKeyRefused, HostUnreachable
from cli.deploy.status import host_states, judge
from cli.errors import CliError

FP_NOW = "hmac-sha256:" + "1" * 64
FP_OLD = "hmac-sha256:" + "2" * 64


def status(
    host: str = "web1",
    *,
    deployed: str | None = FP_NOW,
    version: str = "v2",
    rotated: tuple[Rotated, ...] = (),
    never: bool = False,
) -> HostStatus:
    last = None if never else LastDeploy("d-1", version, "sha256:x", deployed, "2030-01-01", "ci", "deployed")
    return HostStatus(host, "web", last, FP_NOW, rotated)


def container(
    *, role: str = "web", version: str = "v2", fingerprint: str | None = FP_NOW, state: str = "running"
) -> ContainerInfo:
    return ContainerInfo(
        host="web1", id="c" * 64, name=f"app-{role}-{version}", status=state, health="healthy",
        image=f"reg/app:{version}", image_id="sha256:i", repo_digests=["reg/app@sha256:d"], role=role,
        version=version, env_fingerprint=fingerprint, deploy_id="d-1", created=None, started_at=None,
    )  # fmt: skip


def test_current_when_the_running_container_matches_the_ledger_and_the_broker() -> None:
    verdict = judge(status(), [container()])
    assert (verdict.states, verdict.problem, verdict.describe()) == (("current",), False, "current")
    assert verdict.running is not None and verdict.running.version == "v2"


def test_drift_when_the_running_env_is_not_what_a_deploy_gives_now() -> None:
    verdict = judge(status(), [container(fingerprint=FP_OLD)])
    assert verdict.states == ("drift",) and verdict.problem
    assert "env differs" in verdict.describe()


def test_drift_when_the_running_version_is_not_the_ledgers() -> None:
    verdict = judge(status(), [container(version="v1")])
    assert verdict.states == ("drift",)
    assert "it runs v1, the ledger v2" in verdict.describe()


def test_the_ledgers_version_is_preferred_when_two_containers_run() -> None:
    verdict = judge(status(), [container(version="v3"), container(version="v2")])
    assert verdict.states == ("current",) and verdict.running is not None and verdict.running.version == "v2"


def test_missing_when_no_container_of_the_role_runs() -> None:
    stopped = container(state="exited")
    verdict = judge(status(), [stopped, container(role="jobs")])
    assert verdict.states == ("missing",) and verdict.running is None
    assert "stopped: app-web-v2" in verdict.describe()
    assert judge(status(), []).states == ("missing",)


def test_unreachable_keeps_the_brokers_rotated_keys() -> None:
    verdict = judge(status(rotated=(Rotated("A", 1, 2),)), error="unreachable: no route")
    assert verdict.states == ("unreachable", "rotated") and verdict.error == "unreachable: no route"


def test_never_deployed_is_a_problem_and_needs_no_inspection() -> None:
    verdict = judge(status(never=True), None)
    assert verdict.states == ("never deployed",) and verdict.problem


def test_ledger_only_judges_the_ledgers_fingerprint() -> None:
    assert judge(status(), inspected=False).states == ("current",)
    assert judge(status(deployed=FP_OLD), inspected=False).states == ("drift",)
    assert not judge(status(), inspected=False).inspected


class FakeHost:
    """Stands in for RemoteHost (see the module docstring)."""

    opened: list[str] = []  # noqa: RUF012
    closed: list[str] = []  # noqa: RUF012

    def __init__(self, host: str, plan: Mapping[str, Any]) -> None:
        self.host = host

    def connect(self) -> None:
        FakeHost.opened.append(self.host)
        if self.host == "web2":
            raise HostUnreachable("web2", "127.0.0.3 port 22: no SSH server answered")
        if self.host == "web3":
            raise HostKeyRefused(
                "web3", "host key CHANGED: known A, presented B", known=["A"], presented=["B"]
            )

    def status(self, role: str | None = None) -> list[ContainerInfo]:
        return [container()]

    def close(self) -> None:
        FakeHost.closed.append(self.host)


def test_host_states_inspects_each_deployed_host_once_and_reports_every_one() -> None:
    FakeHost.opened, FakeHost.closed = [], []
    statuses = [status("web1"), status("web2"), status("web3"), status("web9", never=True)]
    states = {s.status.host: s for s in host_states(statuses, {"service": "app"}, FakeHost)}
    assert states["web1"].states == ("current",)
    assert states["web2"].states == ("unreachable",)
    assert states["web2"].error == "unreachable: 127.0.0.3 port 22: no SSH server answered"
    assert states["web2"].describe() == "unreachable: 127.0.0.3 port 22: no SSH server answered"
    assert states["web3"].states == ("unreachable",) and "known A, presented B" in (
        states["web3"].error or ""
    )
    assert states["web9"].states == ("never deployed",)
    assert sorted(FakeHost.opened) == sorted(FakeHost.closed) == ["web1", "web2", "web3"]


def test_host_states_ledger_only_opens_no_connection() -> None:
    def refuse(host: str, plan: Mapping[str, Any]) -> FakeHost:
        raise AssertionError("no ssh with --ledger-only")

    [state] = host_states([status()], None, refuse)
    assert state.states == ("current",) and not state.inspected


def test_a_host_ssh_cannot_take_is_unreachable_not_a_crash() -> None:
    def invalid(host: str, plan: Mapping[str, Any]) -> FakeHost:
        raise ValueError(f"ssh host {host!r}: not a host name")

    [state] = host_states([status("-x")], {"service": "app"}, invalid)
    assert state.states == ("unreachable",) and "not a host name" in (state.error or "")


@pytest.mark.parametrize("error", [CliError("web1: status failed: boom")])
def test_the_host_prefix_is_not_repeated(error: CliError) -> None:
    class Broken(FakeHost):
        def status(self, role: str | None = None) -> list[ContainerInfo]:
            raise error

    [state] = host_states([status()], {"service": "app"}, Broken)
    assert state.error == "status failed: boom"


def _attempt(
    outcome: str, *, deploy_id: str = "d-2", version: str = "v3", error: str | None = None
) -> LastDeploy:
    return LastDeploy(deploy_id, version, None, None, "2030-01-02", "ci", outcome, error)


def test_behind_when_a_newer_version_went_to_the_role_since() -> None:
    base = status(version="v2")
    behind = HostStatus(
        base.host, base.role, base.last, FP_NOW, (),
        last_attempt=_attempt("failed"), behind=_attempt("deployed", deploy_id="d-3abcdefgh", version="v3"),
    )  # fmt: skip
    verdict = judge(behind, [container(version="v2")])
    assert verdict.states == ("failed", "behind") and verdict.problem
    assert "behind: runs v2; v3 was deployed to its role since (deploy d-3abcde)" in verdict.describe()
