"""A deployed host's drift state: the one mapping from the deploy ledger (and, when inspected, what the host
runs) to the states `strongroom deploy status` prints and the console's drift page shows.

Pure: no I/O and no server dependency, so the CLI imports it too. States, in the order they are shown:
- `deploying`: a deploy still running targets the host and has not reported it yet;
- `failed`: the host's newest attempt (a deploy that tried it after its last success) failed or skipped it,
  so the host still runs what it ran before, or was abandoned without reporting it (its CLI was stopped), so
  it may run either version;
- `behind`: a newer version was deployed to another host of its role since its last success;
- `unreachable`: the host could not be inspected (the error says why);
- `missing`: no running container of the service's role;
- `drift`: the env fingerprint is not what a deploy would give now (the running container's when inspected,
  else the ledger's), or the host runs another version than the ledger's;
- `rotated`: secrets of its env file changed since the deploy (name vN→vM);
- `never deployed`: the ledger has no deploy to this host;
- `current`: none of the above (the only state that is not a problem).
"""

from __future__ import annotations

from dataclasses import dataclass

CURRENT = "current"
NEVER = "never deployed"
UNREACHABLE = "unreachable"
MISSING = "missing"
DRIFT = "drift"
ROTATED = "rotated"
FAILED = "failed"
BEHIND = "behind"
DEPLOYING = "deploying"


@dataclass(frozen=True, slots=True)
class Row:
    """A ledger row of the host: a deploy's id, version and, for an attempt, its outcome and error."""

    deploy_id: str | None
    version: str | None
    env_fingerprint: str | None = None
    outcome: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Rotation:
    """A secret of the host's env file that changed since its deploy (current None: deleted)."""

    name: str
    deployed_version: int | None
    current_version: int | None


@dataclass(frozen=True, slots=True)
class Ledger:
    """What the ledger and the broker say of one (host, role)."""

    last: Row | None
    expected_env_fingerprint: str | None
    rotated: tuple[Rotation, ...] = ()
    attempt: Row | None = None
    behind: Row | None = None


@dataclass(frozen=True, slots=True)
class Running:
    """The container of the role that runs on the host, by its labels."""

    version: str | None
    env_fingerprint: str | None


@dataclass(frozen=True, slots=True)
class Seen:
    """What inspecting the host found: the role's running container (if any), stopped ones, or an error."""

    running: Running | None = None
    stopped: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """The states of one (host, role), most important first, each with its sentence."""

    states: tuple[str, ...]
    details: tuple[str, ...]

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


def judge(ledger: Ledger, seen: Seen | None = None) -> Verdict:
    """The verdict for one (host, role); `seen` None means not inspected (the ledger's view only)."""
    last, attempt = ledger.last, ledger.attempt
    out: list[tuple[str, str]] = []
    unsettled = (
        attempt is not None
        and attempt.outcome != "deployed"
        and (last is None or attempt.deploy_id != last.deploy_id)
    )
    if attempt is not None and unsettled and attempt.outcome == "running":
        out.append(
            (
                DEPLOYING,
                f"deploying: deploy {(attempt.deploy_id or '')[:8]} of {short(attempt.version)} "
                "has not reported this host yet",
            )
        )
    elif attempt is not None and unsettled:
        reason = attempt.error.splitlines()[0][:160] if attempt.error else "no reason recorded"
        out.append(
            (
                FAILED,
                f"failed: deploy {(attempt.deploy_id or '')[:8]} of {short(attempt.version)} "
                f"({attempt.outcome}): {reason}",
            )
        )
    if last is None:
        out.append((NEVER, NEVER))
        return _verdict(out)
    if ledger.behind is not None:
        out.append(
            (
                BEHIND,
                f"behind: runs {short(last.version)}; {short(ledger.behind.version)} was deployed to its "
                f"role since (deploy {(ledger.behind.deploy_id or '')[:8]})",
            )
        )
    expected = ledger.expected_env_fingerprint
    if seen is None:
        if last.env_fingerprint != expected:
            out.append((DRIFT, "drift: the deployed env differs from what a deploy would give now"))
    elif seen.error is not None:
        reason = seen.error.splitlines()[0] if seen.error else "no detail"
        out.append(
            (UNREACHABLE, reason if reason.startswith(UNREACHABLE + ":") else f"{UNREACHABLE}: {reason}")
        )
    elif seen.running is None:
        stopped = f" (stopped: {', '.join(seen.stopped[:3])})" if seen.stopped else ""
        out.append((MISSING, "missing: no running container" + stopped))
    else:
        why = []
        if seen.running.env_fingerprint != expected:
            why.append("its env differs from what a deploy would give now")
        if seen.running.version != last.version:
            why.append(
                f"it runs {seen.running.version or 'an unlabelled version'}, the ledger {last.version}"
            )
        if why:
            out.append((DRIFT, "drift: " + " and ".join(why)))
    if ledger.rotated:
        moves = ", ".join(
            f"{r.name} v{r.deployed_version}→"
            + (f"v{r.current_version}" if r.current_version is not None else "deleted")
            for r in ledger.rotated
        )
        out.append((ROTATED, f"rotated: {moves}"))
    return _verdict(out or [(CURRENT, CURRENT)])


def _verdict(pairs: list[tuple[str, str]]) -> Verdict:
    return Verdict(tuple(s for s, _ in pairs), tuple(d for _, d in pairs))


def short(version: str | None) -> str:
    """A version as the status tables show it: its first 12 characters, `-` for none."""
    return version[:12] if version else "-"
