"""One deploy target host: its key checked, one multiplexed ssh connection, one round trip per step.

`RemoteHost.connect()` resolves the host (`ssh -G`), checks its key (`cli.deploy.hostkeys`: known_hosts
looked up locally; an `ssh-keyscan` only for pinned or unknown keys), then opens the master connection
whose first session is the preflight. `deploy(step)` is one more round trip (the whole deploy script of
`cli.plans.remote`, secrets on its stdin), `close()` one more (`ssh -O exit`): three per host for a
deploy with known_hosts, four with pinned keys. `round_trips` counts every connection or
session that reaches the host, for bench/deploy.py.

Nothing here starts a process: every program runs through `cli.deploy.process.run` (or the `run` given),
so tests see every argv and environment, and the output comes back through the run's redactor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cli.deploy import process
from cli.deploy.hostkeys import Accepted, HostKeyRefused, HostUnreachable, Policy, changed_key
from cli.deploy.process import Completed, Redactor
from cli.errors import CliError
from cli.plans import remote as scripts
from cli.plans import ssh as ssh_plans

__all__ = [
    "ContainerInfo",
    "DeployFailed",
    "DeployResult",
    "DeployStep",
    "HostKeyRefused",
    "HostUnreachable",
    "RemoteError",
    "RemoteHost",
]

Runner = Callable[..., Completed]

DEFAULT_TIMEOUT = 900.0
# A failure reason is cut to this many characters, after masking (the host sends the whole last line).
REASON_LIMIT = 1000
_FINGERPRINT_IN_TEXT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
# OpenSSH's words when a known host presents another key (sshconnect.c, warn_changed_key).
_PRESENTED = re.compile(
    r"fingerprint for the (\S+) key sent by the remote host is\s+(SHA256:[A-Za-z0-9+/]{43})"
)


class RemoteError(CliError):
    """Something on the host went wrong outside a deploy step (no docker, no answer, a script crashed)."""

    def __init__(self, host: str, message: str) -> None:
        super().__init__(f"{host}: {message}")
        self.host = host


class DeployFailed(CliError):
    """The new container did not come up healthy (or a step before it failed); the old one keeps running."""

    def __init__(
        self, host: str, role: str, step: str, reason: str, result: DeployResult | None = None
    ) -> None:
        super().__init__(f"{host}: deploy of role {role} failed at {step}: {reason}")
        self.host = host
        self.role = role
        self.step = step
        self.reason = reason
        self.result = result


@dataclass(frozen=True)
class DeployStep:
    """One role on one host: what to run and the values it runs with (env file, registry password)."""

    role: str
    version: str
    image: str  # full reference, e.g. registry/app:version
    env_file: bytes
    env_fingerprint: str
    deploy_id: str
    registry_password: str | None = None

    def __repr__(self) -> str:
        # Never the env file or the password, whoever prints a step.
        return f"DeployStep(role={self.role!r}, version={self.version!r}, image={self.image!r})"


@dataclass(frozen=True)
class DeployResult:
    """What the deploy script reports: the new container, its image, what it replaced."""

    host: str
    role: str
    outcome: str  # "deployed" | "failed"
    step: str
    container: str | None
    name: str
    image: str
    image_id: str | None
    image_digest: str | None
    replaced: list[str] = field(default_factory=list)
    pruned: int = 0
    strategy: str = "start-first"
    reason: str | None = None
    # Seconds since the script started at the end of each phase: env, login, pull, run, healthy, done.
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ContainerInfo:
    """A container of the service on a host, from its labels and state."""

    host: str
    id: str
    name: str
    status: str
    health: str | None
    image: str
    image_id: str
    repo_digests: list[str]
    role: str | None
    version: str | None
    env_fingerprint: str | None
    deploy_id: str | None
    created: str | None
    started_at: str | None


@dataclass(frozen=True)
class Preflight:
    """What the host said when the connection opened."""

    docker: str
    user: str
    remote_dir: str


def image_ref(plan: Mapping[str, Any], version: str) -> str:
    """The image reference to deploy: the plan's image tagged with `version` (unless it has a tag already)."""
    image = str(plan.get("image") or "")
    last = image.rsplit("/", 1)[-1]
    if "@" in image or ":" in last:
        return scripts.check_image(image)
    return scripts.check_image(f"{image}:{scripts.check_version(version)}")


def parse_line(prefix: str, text: str) -> list[dict[str, Any]]:
    """The JSON objects of every `PREFIX {json}` line in `text` (lines that do not parse are skipped)."""
    found = []
    for line in text.splitlines():
        if line.startswith(prefix + " "):
            with contextlib.suppress(ValueError):
                value = json.loads(line[len(prefix) + 1 :])
                if isinstance(value, dict):
                    found.append(value)
    return found


def _cut(text: str, limit: int = REASON_LIMIT) -> str:
    # Only ever on masked text: a value cut in two before masking would no longer be recognised.
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return _cut(lines[-1], 500) if lines else "no detail"


def _masked(value: Any, mask: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {key: _masked(item, mask) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked(item, mask) for item in value]
    return value


def _timings(text: str) -> dict[str, float]:
    found = {}
    for item in text.split():
        name, _, value = item.partition("=")
        with contextlib.suppress(ValueError):
            found[name] = float(value)
    return found


def _private_dir() -> Path:
    # Short: the ControlPath is DIR/<40 hex> plus a 17-character temporary suffix, and a unix socket path
    # has 104-108 bytes: /tmp rather than a long per-user TMPDIR (macOS). mkdtemp makes it 0700 and unique.
    base = None if len(tempfile.gettempdir()) <= 40 else "/tmp"  # noqa: S108
    path = Path(tempfile.mkdtemp(prefix="sr-ssh-", dir=base))
    path.chmod(0o700)
    return path


class RemoteHost:
    """One host of a deploy: `connect()`, then `deploy(step)`/`status()`/`app(...)`, then `close()`."""

    def __init__(
        self,
        host: str,
        plan: Mapping[str, Any],
        *,
        redactor: Redactor | None = None,
        environ: Mapping[str, str] | None = None,
        run: Runner | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        persist_seconds: int = ssh_plans.DEFAULT_PERSIST_SECONDS,
    ) -> None:
        self.host = ssh_plans.check_host(host)
        self.plan = plan
        self.redactor = redactor
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self._run: Runner = run or process.run
        self.timeout = timeout
        self.persist_seconds = persist_seconds
        ssh = plan.get("ssh") or {}
        self.user = ssh_plans.check_user(ssh.get("user"))
        self.port = ssh_plans.check_port(ssh.get("port"))
        pins = (ssh.get("host_keys") or {}).get(host) or []
        self.pinned: list[str] = [pins] if isinstance(pins, str) else list(pins)
        self.service = scripts.check_name(plan.get("service"), "service")
        self.round_trips = 0
        self.accepted: Accepted | None = None
        self.preflight: Preflight | None = None
        self._dir: Path | None = None
        self._target: ssh_plans.Target | None = None
        self._master = False

    # -- plumbing -------------------------------------------------------------------------------------

    def _call(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
        raw: bool = False,
    ) -> Completed:
        # raw: the output is parsed before it is masked (see _parsed); the caller masks what it keeps.
        redactor = None if raw else self.redactor
        return self._run(list(argv), stdin=stdin, redactor=redactor, timeout=timeout or self.timeout)

    def _mask(self, text: str) -> str:
        return self.redactor(text) if self.redactor is not None and text else text

    def _parsed(self, prefix: str, done: Completed) -> tuple[list[dict[str, Any]], Completed]:
        """The `PREFIX {json}` objects of raw output with every string masked, and the output masked.

        Parsing comes first: masking the JSON text would miss a value the JSON escaped (a quote, a
        backslash) and could break the line; a string once parsed is the text itself.
        """
        found = [_masked(item, self._mask) for item in parse_line(prefix, done.stdout)]
        return found, dataclasses.replace(
            done, stdout=self._mask(done.stdout), stderr=self._mask(done.stderr)
        )

    def _counted(self, argv: Sequence[str], **kwargs: Any) -> Completed:
        self.round_trips += 1
        return self._call(argv, **kwargs)

    def _local(self, argv: Sequence[str]) -> Completed:
        return self._call(argv, timeout=60)

    def _scan(self, argv: Sequence[str]) -> Completed:
        # The hostkeys policy runs ssh -G and ssh-keygen (local) and ssh-keyscan (one connection).
        if argv and os.path.basename(argv[0]).startswith("ssh-keyscan"):
            return self._counted(argv, timeout=60)
        return self._local(argv)

    def _ssh_failure(self, done: Completed, doing: str) -> CliError:
        """The error for an ssh that failed itself (exit 255): refused key, refused login, no route."""
        text = done.stderr
        if "Host key verification failed" in text or "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
            sent = _PRESENTED.search(text)
            accepted = self.accepted
            if sent and accepted is not None and accepted.how == "known_hosts":
                presented_key = f"{sent.group(1)} {sent.group(2)}"
                known = [key.describe() for key in accepted.keys]
                return changed_key(self.host, known, accepted.where, [presented_key])
            presented = _FINGERPRINT_IN_TEXT.findall(text)
            return HostKeyRefused(
                self.host,
                f"ssh refused the host key while {doing}: {_last_line(text)}"
                + (f" (presented {', '.join(presented)})" if presented else ""),
                known=list(self.pinned),
                presented=presented,
            )
        return HostUnreachable(self.host, f"ssh failed while {doing}: {_last_line(text)}")

    @property
    def target(self) -> ssh_plans.Target:
        """The ssh target (after connect)."""
        if self._target is None:
            raise RemoteError(self.host, "not connected")
        return self._target

    # -- steps ----------------------------------------------------------------------------------------

    def connect(self) -> Preflight:
        """Check the host key, open the master connection and run the preflight: docker answers, dir writable."""
        self._dir = _private_dir()
        policy = Policy(self._scan, environ=self.environ)
        self.accepted = policy.check(
            self.host, pinned=self.pinned, workdir=self._dir, user=self.user, port=self.port
        )
        self._target = ssh_plans.Target(
            host=self.host,
            control_dir=str(self._dir),
            user=self.user,
            port=self.port,
            config=policy.config,
            binary=policy.ssh,
            known_hosts=self.accepted.known_hosts,
            host_key_alias=self.accepted.host_key_alias,
        )
        argv = ssh_plans.master(self._target, scripts.preflight(), persist_seconds=self.persist_seconds)
        lines, done = self._parsed(scripts.PREFLIGHT, self._counted(argv, timeout=120, raw=True))
        if done.returncode == 255:
            raise self._ssh_failure(done, "connecting")
        self._master = True
        if not lines:
            raise RemoteError(self.host, f"the preflight printed no result: {_last_line(done.stderr)}")
        found = lines[-1]
        if found.get("problem"):
            raise RemoteError(self.host, f"cannot deploy here: {_cut(str(found['problem']))}")
        self.preflight = Preflight(
            str(found.get("docker")), str(found.get("user")), str(found.get("remote_dir"))
        )
        return self.preflight

    def _script_for(self, step: DeployStep) -> scripts.DeployScript:
        role = self._role(step.role)
        registry = self.plan.get("registry") or None
        return scripts.DeployScript(
            service=self.service,
            role=step.role,
            version=step.version,
            image=step.image,
            deploy_id=step.deploy_id,
            env_fingerprint=step.env_fingerprint or "",
            registry=(registry.get("server") or None) if registry else None,
            registry_username=registry.get("username") if registry else None,
            options=role.get("options") or {},
            cmd=role.get("cmd"),
            health=scripts.health_from_plan(self.plan.get("healthcheck")),
            retain_images=self._setting("retain_images", scripts.DEFAULT_RETAIN_IMAGES),
            stop_timeout=self._setting("stop_timeout", scripts.DEFAULT_STOP_TIMEOUT),
            readiness_delay=self._readiness_delay(),
            pull="always" if registry else "missing",
        )

    def _setting(self, name: str, default: int) -> int:
        # 0 is a setting (stop_timeout 0: kill at once), only a missing one takes the default.
        value = self.plan.get(name)
        return default if value is None else value

    def _readiness_delay(self) -> int:
        # `deploy.readiness_delay` of the manifest: next to retain_images in the plan (or under "deploy").
        value = self.plan.get("readiness_delay")
        if value is None:
            value = (self.plan.get("deploy") or {}).get("readiness_delay")
        return scripts.DEFAULT_READINESS_DELAY if value is None else value

    def _role(self, name: str) -> Mapping[str, Any]:
        for role in self.plan.get("roles") or []:
            if role.get("name") == name:
                return dict(role)
        raise RemoteError(self.host, f"role {name!r} is not in the plan")

    def deploy(self, step: DeployStep) -> DeployResult:
        """Run the deploy script for one role (one round trip); DeployFailed when the new container is not healthy."""
        target = self.target
        try:
            script = self._script_for(step)
            text = scripts.deploy(script)
            stdin = scripts.stdin_for(script, step.env_file, step.registry_password)
        except scripts.ScriptError as exc:
            raise CliError(f"{self.host}: {exc}") from None
        # Never cut the script off while it still waits for health: it would leave the new container behind.
        waiting = script.wait_seconds
        lines, done = self._parsed(
            scripts.RESULT,
            self._counted(
                ssh_plans.command(target, ssh_plans.quote_command(["sh", "-c", text])),
                stdin=stdin,
                timeout=max(self.timeout, waiting + 2 * script.stop_timeout + 600),
                raw=True,
            ),
        )
        if done.returncode == 255 and not lines:
            raise self._ssh_failure(done, f"deploying role {step.role}")
        if not lines:
            raise DeployFailed(
                self.host,
                step.role,
                "script",
                f"the deploy script stopped without a result: {_last_line(done.stderr)}",
            )
        result = self._result(step, lines[-1])
        if result.outcome != "deployed":
            raise DeployFailed(self.host, step.role, result.step, result.reason or "no reason given", result)
        return result

    def _result(self, step: DeployStep, found: Mapping[str, Any]) -> DeployResult:
        def text(key: str) -> str | None:
            value = found.get(key)
            return str(value) if value not in (None, "") else None

        pruned = found.get("pruned")
        return DeployResult(
            host=self.host,
            role=step.role,
            outcome=str(found.get("outcome")),
            step=str(found.get("step")),
            container=text("container"),
            name=str(found.get("name") or ""),
            image=str(found.get("image") or step.image),
            image_id=text("image_id"),
            image_digest=text("image_digest") or text("image_id"),
            replaced=str(found.get("replaced") or "").split(),
            pruned=pruned if isinstance(pruned, int) else 0,
            strategy=str(found.get("strategy") or ""),
            reason=_cut(reason) if (reason := text("reason")) else None,
            timings=_timings(str(found.get("timings") or "")),
        )

    def status(self, role: str | None = None) -> list[ContainerInfo]:
        """The containers of the service (and role) on this host: state, version, image, env fingerprint."""
        lines, done = self._parsed(
            scripts.CONTAINER,
            self._counted(
                ssh_plans.command(
                    self.target, ssh_plans.quote_command(["sh", "-c", scripts.status(self.service, role)])
                ),
                raw=True,
            ),
        )
        if done.returncode == 255:
            raise self._ssh_failure(done, "reading the status")
        if done.returncode != 0:
            raise RemoteError(self.host, f"status failed: {_last_line(done.stderr)}")
        found = []
        for line in lines:
            container = line.get("container") or {}
            labels = container.get("labels") or {}
            digests = line.get("repo_digests")
            found.append(
                ContainerInfo(
                    host=self.host,
                    id=str(container.get("id")),
                    name=str(container.get("name") or "").lstrip("/"),
                    status=str(container.get("status")),
                    health=container.get("health"),
                    image=str(container.get("image")),
                    image_id=str(container.get("image_id")),
                    repo_digests=[str(d) for d in digests] if isinstance(digests, list) else [],
                    role=labels.get(scripts.LABEL_ROLE),
                    version=labels.get(scripts.LABEL_VERSION),
                    env_fingerprint=labels.get(scripts.LABEL_FINGERPRINT),
                    deploy_id=labels.get(scripts.LABEL_DEPLOY),
                    created=container.get("created"),
                    started_at=container.get("started_at"),
                )
            )
        return found

    def app(
        self,
        action: str,
        role: str | None = None,
        *,
        argv: Sequence[str] = (),
        new: bool = False,
        tail: int | None = 100,
        since: str | None = None,
        interactive: bool = False,
        entrypoint: str | None = None,
    ) -> Completed:
        """`logs`, `exec` (in the running container, or `new` with the deployed env file), `stop`, `start`, `remove`."""
        try:
            if action == "logs":
                text = scripts.logs(self.service, role, tail=tail, since=since)
            elif action == "exec" and new:
                if role is None:
                    raise scripts.ScriptError("exec --new: a role is needed")
                text = scripts.exec_new(
                    self.service,
                    role,
                    argv,
                    options=self._role(role).get("options"),
                    interactive=interactive,
                    entrypoint=entrypoint,
                )
            elif action == "exec":
                text = scripts.exec_running(self.service, role, argv, interactive=interactive)
            elif action == "stop":
                text = scripts.stop(
                    self.service,
                    role,
                    stop_timeout=self._setting("stop_timeout", scripts.DEFAULT_STOP_TIMEOUT),
                )
            elif action == "start":
                text = scripts.start(self.service, role)
            elif action == "remove":
                text = scripts.remove(self.service, role)
            else:
                raise scripts.ScriptError(f"app action {action!r}: logs, exec, stop, start or remove")
        except scripts.ScriptError as exc:
            raise CliError(f"{self.host}: {exc}") from None
        done = self._counted(ssh_plans.command(self.target, ssh_plans.quote_command(["sh", "-c", text])))
        if done.returncode == 255 and action != "exec":
            raise self._ssh_failure(done, action)
        return done

    def close(self) -> None:
        """End the master connection and delete the private directory (socket, pinned known_hosts)."""
        try:
            if self._master and self._target is not None:
                self._master = False
                with contextlib.suppress(CliError):
                    self._counted(ssh_plans.exit_master(self._target), timeout=30)
        finally:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None

    def __enter__(self) -> RemoteHost:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
