"""`deploy status`: what runs on each host, against the ledger and what a deploy would give it now.

The broker's status route gives, per (host, role) of the manifest, the ledger's last deploy, the env
fingerprint a deploy would render now and the secrets rotated since. Each host that the ledger says was
deployed to is then inspected over ssh (one connection per host, the status script of cli.plans.remote:
the labels of the service's containers, never their environment), so the verdict is about what actually
runs. The states (deploying, failed, behind, unreachable, missing, drift, rotated, never deployed, current) and the
mapping to them live in broker/domain/drift.py, shared with the console's drift page. `--ledger-only` skips
ssh: drift is then judged from the ledger's fingerprint.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from broker.domain import drift
from cli.errors import CliError

if TYPE_CHECKING:
    from cli.client import HostStatus, LastDeploy
    from cli.deploy.remote import ContainerInfo

MAX_PARALLEL_HOSTS = 32
# The states, named once in broker/domain/drift.py (the console's drift page shows the same ones).
CURRENT = drift.CURRENT
NEVER = drift.NEVER
UNREACHABLE = drift.UNREACHABLE
MISSING = drift.MISSING
DRIFT = drift.DRIFT
ROTATED = drift.ROTATED
FAILED = drift.FAILED
BEHIND = drift.BEHIND
DEPLOYING = drift.DEPLOYING


class StatusRemote(Protocol):
    """What status needs of a host (cli.deploy.remote.RemoteHost)."""

    def connect(self) -> Any:
        """Check the host key, open the connection, run the preflight."""

    def status(self, role: str | None = None) -> list[ContainerInfo]:
        """The service's containers on the host."""

    def close(self) -> None:
        """End the connection."""


StatusRemoteFactory = Callable[[str, Mapping[str, Any]], StatusRemote]


@dataclass(frozen=True)
class HostState:
    """One (host, role): the broker's view, what runs there (when inspected) and the verdict."""

    status: HostStatus
    verdict: drift.Verdict
    running: ContainerInfo | None = None
    error: str | None = None
    inspected: bool = False

    @property
    def states(self) -> tuple[str, ...]:
        """Every state of the host, most important first."""
        return self.verdict.states

    @property
    def state(self) -> str:
        """The most important state (`current` when all is well)."""
        return self.verdict.state

    @property
    def problem(self) -> bool:
        """Whether the host needs a deploy or a look (anything but `current`)."""
        return self.verdict.problem

    def describe(self) -> str:
        """The states with their details, for a table cell."""
        return self.verdict.describe()


def _pick(containers: Sequence[ContainerInfo], role: str, version: str | None) -> ContainerInfo | None:
    """The running container of `role`: the ledger's version if it runs, else the newest running one."""
    candidates = [c for c in containers if c.role == role and c.status == "running"]
    for container in candidates:
        if container.version == version:
            return container
    return candidates[0] if candidates else None


def _row(row: LastDeploy | None) -> drift.Row | None:
    if row is None:
        return None
    return drift.Row(row.deploy_id, row.version, row.env_fingerprint, row.outcome, row.error)


def ledger_of(status: HostStatus) -> drift.Ledger:
    """The broker's answer for one (host, role), as the drift mapping reads it."""
    return drift.Ledger(
        last=_row(status.last),
        expected_env_fingerprint=status.expected_env_fingerprint,
        rotated=tuple(drift.Rotation(r.name, r.deployed_version, r.current_version) for r in status.rotated),
        attempt=_row(status.last_attempt),
        behind=_row(status.behind),
    )


def judge(
    status: HostStatus,
    containers: Sequence[ContainerInfo] | None = None,
    *,
    error: str | None = None,
    inspected: bool = True,
) -> HostState:
    """The verdict for one (host, role); `containers` is what the host runs (None when not inspected)."""
    last = status.last
    running: ContainerInfo | None = None
    seen: drift.Seen | None = None
    if inspected and last is not None:
        if error is not None:
            seen = drift.Seen(error=error)
        else:
            running = _pick(containers or (), status.role, last.version)
            seen = drift.Seen(
                running=drift.Running(running.version, running.env_fingerprint) if running else None,
                stopped=tuple(c.name for c in containers or () if c.role == status.role),
            )
    verdict = drift.judge(ledger_of(status), seen)
    if last is None:
        return HostState(status, verdict)  # never deployed: not inspected
    if not verdict.problem:
        return HostState(status, verdict, running=running, inspected=inspected)
    return HostState(status, verdict, running=running, error=error, inspected=inspected)


def inspect_hosts(
    plan: Mapping[str, Any], hosts: Sequence[str], factory: StatusRemoteFactory
) -> dict[str, list[ContainerInfo] | CliError]:
    """Each host's containers of the service (or the error that stopped its inspection), in parallel."""

    def one(host: str) -> list[ContainerInfo] | CliError:
        remote: StatusRemote | None = None
        try:
            remote = factory(host, plan)
            remote.connect()
            return remote.status()
        except CliError as exc:
            return exc
        except ValueError as exc:
            return CliError(f"{host}: {exc}")
        finally:
            if remote is not None:
                remote.close()

    if not hosts:
        return {}
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_HOSTS, len(hosts))) as pool:
        return dict(zip(hosts, pool.map(one, hosts), strict=True))


def host_states(
    statuses: Sequence[HostStatus],
    plan: Mapping[str, Any] | None,
    factory: StatusRemoteFactory | None = None,
) -> list[HostState]:
    """The verdict for every (host, role); `plan` None means ledger only (no ssh)."""
    if plan is None:
        return [judge(s, inspected=False) for s in statuses]
    deployed = list(dict.fromkeys(s.host for s in statuses if s.last is not None))
    found = inspect_hosts(plan, deployed, factory or _remote_host)
    states = []
    for status in statuses:
        seen = found.get(status.host)
        if isinstance(seen, CliError):
            # The message starts with the host already (RemoteHost's errors): keep only the reason.
            message = seen.message.removeprefix(f"{status.host}: ")
            states.append(judge(status, error=message or "no detail"))
        else:
            states.append(judge(status, seen))
    return states


def _remote_host(host: str, plan: Mapping[str, Any]) -> StatusRemote:
    from cli.deploy.redact import Redactor
    from cli.deploy.remote import RemoteHost

    return RemoteHost(host, plan, redactor=Redactor(), timeout=120)
