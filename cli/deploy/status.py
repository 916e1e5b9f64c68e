"""`deploy status`: what runs on each host, against the ledger and what a deploy would give it now.

The broker's status route gives, per (host, role) of the manifest, the ledger's last deploy, the env
fingerprint a deploy would render now and the secrets rotated since. Each host that the ledger says was
deployed to is then inspected over ssh (one connection per host, the status script of cli.plans.remote:
the labels of the service's containers, never their environment), so the verdict is about what actually
runs. States, in the order they are shown:
- `failed`: the host's newest attempt (a deploy that tried it after its last success) failed or skipped it;
  the host still runs what it ran before (the ledger gives it no keys from that attempt);
- `behind`: a newer version was deployed to another host of its role since its last success;
- `unreachable`: the host could not be inspected (the error says why); the other hosts are still reported;
- `missing`: no running container of the service's role;
- `drift`: the running container's env fingerprint is not what a deploy would give now, or it runs
  another version than the ledger's;
- `rotated`: secrets of its env file changed since the deploy (name vN→vM);
- `never deployed`: the ledger has no deploy to this host (it is not inspected);
- `current`: none of the above.
Only `current` is not a problem. `--ledger-only` skips ssh: drift is then judged from the ledger's
fingerprint.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from cli.errors import CliError

if TYPE_CHECKING:
    from cli.client import HostStatus
    from cli.deploy.remote import ContainerInfo

MAX_PARALLEL_HOSTS = 32
CURRENT = "current"
NEVER = "never deployed"
UNREACHABLE = "unreachable"
MISSING = "missing"
DRIFT = "drift"
ROTATED = "rotated"
FAILED = "failed"
BEHIND = "behind"


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
    states: tuple[str, ...]
    details: tuple[str, ...]
    running: ContainerInfo | None = None
    error: str | None = None
    inspected: bool = False

    @property
    def state(self) -> str:
        """The most important state (`current` when all is well)."""
        return self.states[0]

    @property
    def problem(self) -> bool:
        """Whether the host needs a deploy or a look (anything but `current`)."""
        return self.states != (CURRENT,)

    def describe(self) -> str:
        """The states with their details, for a table cell."""
        return "; ".join(self.details)


def _pick(containers: Sequence[ContainerInfo], role: str, version: str | None) -> ContainerInfo | None:
    """The running container of `role`: the ledger's version if it runs, else the newest running one."""
    candidates = [c for c in containers if c.role == role and c.status == "running"]
    for container in candidates:
        if container.version == version:
            return container
    return candidates[0] if candidates else None


def judge(
    status: HostStatus,
    containers: Sequence[ContainerInfo] | None = None,
    *,
    error: str | None = None,
    inspected: bool = True,
) -> HostState:
    """The verdict for one (host, role); `containers` is what the host runs (None when not inspected)."""
    last = status.last
    states: list[str] = []
    details: list[str] = []
    attempt = status.last_attempt
    if (
        attempt is not None
        and attempt.outcome != "deployed"
        and (last is None or attempt.deploy_id != last.deploy_id)
    ):
        states.append(FAILED)
        reason = (attempt.error or "").splitlines()[0][:160] if attempt.error else "no reason recorded"
        details.append(
            f"failed: deploy {(attempt.deploy_id or '')[:8]} of {_short(attempt.version)} "
            f"({attempt.outcome}): {reason}"
        )
    if last is None:
        return HostState(status, (*states, NEVER), (*details, NEVER))
    if status.behind is not None:
        states.append(BEHIND)
        details.append(
            f"behind: runs {_short(last.version)}; {_short(status.behind.version)} was deployed to its role "
            f"since (deploy {(status.behind.deploy_id or '')[:8]})"
        )
    running: ContainerInfo | None = None
    expected = status.expected_env_fingerprint
    if not inspected:
        if last.env_fingerprint != expected:
            states.append(DRIFT)
            details.append("drift: the deployed env differs from what a deploy would give now")
    elif error is not None:
        states.append(UNREACHABLE)
        reason = error.splitlines()[0] if error else "no detail"
        details.append(reason if reason.startswith(UNREACHABLE + ":") else f"{UNREACHABLE}: {reason}")
    else:
        running = _pick(containers or (), status.role, last.version)
        if running is None:
            stopped = [c.name for c in containers or () if c.role == status.role]
            states.append(MISSING)
            details.append(
                "missing: no running container" + (f" (stopped: {', '.join(stopped[:3])})" if stopped else "")
            )
        else:
            why = []
            if running.env_fingerprint != expected:
                why.append("its env differs from what a deploy would give now")
            if running.version != last.version:
                why.append(f"it runs {running.version or 'an unlabelled version'}, the ledger {last.version}")
            if why:
                states.append(DRIFT)
                details.append("drift: " + " and ".join(why))
    if status.rotated:
        states.append(ROTATED)
        details.append(
            "rotated: "
            + ", ".join(
                f"{r.name} v{r.deployed_version}→"
                + (f"v{r.current_version}" if r.current_version is not None else "deleted")
                for r in status.rotated
            )
        )
    if not states:
        return HostState(status, (CURRENT,), (CURRENT,), running=running, inspected=inspected)
    return HostState(status, tuple(states), tuple(details), running=running, error=error, inspected=inspected)


def _short(version: str | None) -> str:
    return version[:12] if version else "-"


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
