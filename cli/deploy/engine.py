"""A deploy from start to finish: broker plan → every host connected → bundle → build → push → hosts → ledger.

Order of events (docs/deploy.md):
1. `create_deploy` with the caller's token: the broker checks the caller may read every key of the plan,
   opens a ledger row and mints a deploy token bound to it (only those keys, a TTL, a use limit).
2. Every host's key is checked and its master connection opened (with the preflight), all in parallel,
   before anything is fetched, built or started. A refused host key aborts the whole deploy, with or
   without `fail_fast`: nothing is built, no host is touched. An unreachable host aborts it with
   `fail_fast`; without it, that host is failed and the others go on (the outcome may be "partial").
3. Everything after creating the deploy uses the deploy token: the bundle (env files, registry password,
   build secrets); one report per host; `finish`, in `finally`, whatever happened. If `finish` cannot be
   called the token revokes itself; if that fails too, its TTL is all that is left, and the user is told so.
4. The build gets secrets as BuildKit secret files (0600, in a 0700 directory removed afterwards); the
   push logs in with `--password-stdin` into a throwaway DOCKER_CONFIG, so the registry password is never
   stored on this machine. A rollback builds and pushes nothing.
5. The connected hosts deploy in parallel, each role in turn. With `fail_fast`, after the first failed
   host no host starts another role.

Every program runs through `cli.deploy.process`; every line they print passes through a redactor seeded
with every value of the bundle.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cli.deploy import plan as plans
from cli.deploy import process
from cli.deploy.redact import Redactor
from cli.errors import CliError
from cli.plans import docker, git

if TYPE_CHECKING:
    from cli.client import BrokerClient, CreatedDeploy, DeployBundle, DeployInfo, DeployPlan
    from cli.deploy.remote import DeployResult, DeployStep

DOCKER_ENVVAR = "STRONGROOM_DOCKER"
BUILD_NETWORK_ENVVAR = "STRONGROOM_BUILD_NETWORK"
MAX_PARALLEL_HOSTS = 32
BUILD_TIMEOUT = 3600.0
PUSH_TIMEOUT = 1800.0
LOCAL_TIMEOUT = 60.0
# Of the deploy token's life, what the build and push leave for the hosts, the reports and finish
# (capped at a third of --ttl, so a short TTL still leaves the build something).
HOST_MARGIN_SECONDS = 120.0
# The least a deploy token must leave the build and push (capped at a third of --ttl too): a token that
# cannot cover it and the hosts' margin is refused before anything is fetched, built or started.
BUILD_FLOOR_SECONDS = 60.0
TAIL_LINES = 15
# Docker config keys that hold or reach registry credentials: never copied into the throwaway config.
_CREDENTIAL_KEYS = frozenset({"auths", "credsStore", "credHelpers"})


class Remote(Protocol):
    """What the engine needs of a host (cli.deploy.remote.RemoteHost)."""

    round_trips: int

    def connect(self) -> Any:
        """Check the host key, open the connection, run the preflight."""

    def deploy(self, step: DeployStep) -> DeployResult:
        """Deploy one role; DeployFailed when it does not come up healthy."""

    def close(self) -> None:
        """End the connection."""


RemoteFactory = Callable[[str, "DeployPlan", Redactor], Remote]
Say = Callable[[str], None]


@dataclass(frozen=True)
class DeployRequest:
    """What the user asked for."""

    project: str
    environment: str
    manifest: str
    manifest_dir: str
    version: str
    kind: str = "deploy"  # or "rollback"
    hosts: list[str] | None = None
    fail_fast: bool = False
    ttl_seconds: int = 900
    no_cache: bool = False  # `docker build --no-cache`: after a build secret rotated (docs/deploy.md)


@dataclass
class HostOutcome:
    """What happened on one host for one role."""

    host: str
    role: str
    outcome: str  # deployed | failed | skipped
    container: str | None = None
    image_digest: str | None = None
    env_fingerprint: str | None = None
    error: str | None = None
    round_trips: int = 0
    name: str | None = None  # the container's name (`container` is its id, for the ledger)


@dataclass
class DeployReport:
    """The whole deploy: its id, outcome, image and each host's outcome."""

    deploy_id: str
    outcome: str  # succeeded | failed | partial
    image: str
    version: str
    hosts: list[HostOutcome] = field(default_factory=list)
    error: str | None = None
    finished: DeployInfo | None = None
    token_note: str | None = None


def docker_binary(environ: Mapping[str, str]) -> str:
    """The local docker CLI: STRONGROOM_DOCKER, else `docker` on the PATH."""
    return environ.get(DOCKER_ENVVAR) or "docker"


def default_version(manifest_dir: str) -> str:
    """The commit checked out in the manifest's directory; CliError if it is not a clean git work tree."""
    done = process.run(git.head_commit("git", manifest_dir), timeout=LOCAL_TIMEOUT)
    commit = done.stdout.strip()
    if not done.ok or not commit:
        raise CliError(
            f"cannot name a version: {manifest_dir} is not in a git work tree with a commit (pass --version)",
            exit_code=2,
        )
    changes = process.run(git.tracked_changes("git", manifest_dir), timeout=LOCAL_TIMEOUT)
    if changes.ok and changes.stdout.strip():
        raise CliError(
            "the work tree has uncommitted changes, so an image built from it would not match "
            f"commit {commit[:12]}: commit them, or pass --version to name this build",
            exit_code=2,
        )
    return commit


def _tail(text: str) -> str:
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-TAIL_LINES:]) if lines else "no output"


@contextlib.contextmanager
def private_dir(prefix: str) -> Iterator[Path]:
    """A 0700 temporary directory, removed with everything in it afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        path.chmod(0o700)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_secret_file(directory: Path, name: str, value: str) -> str:
    """Write `value` to directory/name as a new 0600 file (O_EXCL, fsync); return its path."""
    path = directory / name
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(value.encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())
    return str(path)


def throwaway_docker_config(directory: Path, environ: Mapping[str, str]) -> str:
    """A DOCKER_CONFIG in `directory` with the user's settings (contexts, proxies) but no credentials."""
    source = Path(environ.get("DOCKER_CONFIG") or Path(environ.get("HOME") or "~").expanduser() / ".docker")
    settings: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        loaded = json.loads((source / "config.json").read_text("utf-8"))
        if isinstance(loaded, dict):
            settings = {k: v for k, v in loaded.items() if k not in _CREDENTIAL_KEYS}
    target = directory / "docker-config"
    target.mkdir(mode=0o700)
    descriptor = os.open(target / "config.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(settings, handle)
    for shared in ("contexts", "cli-plugins"):
        if (source / shared).is_dir():
            (target / shared).symlink_to((source / shared).resolve(), target_is_directory=True)
    return str(target)


class _HostSet:
    """The deploy's hosts: their connections and outcomes; each host goes into the ledger once, when done."""

    def __init__(
        self,
        engine: DeployEngine,
        deploy_client: BrokerClient,
        report: DeployReport,
        by_host: Mapping[str, list[str]],
    ) -> None:
        self.engine = engine
        self.deploy_client = deploy_client
        self.report = report
        self.by_host = by_host
        self.remotes: dict[str, Remote] = {}
        self.outcomes = {(o.host, o.role): o for o in report.hosts}
        self._reported: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def fail(self, host: str, error: str) -> None:
        """Every role of `host` failed with `error`; the host is settled."""
        for role in self.by_host[host]:
            self.engine._record(self.outcomes[(host, role)], "failed", error=error)
        self.settle(host)

    def settle(self, host: str) -> None:
        """Close the host's connection and report its finished roles (an interrupted deploy keeps them)."""
        remote = self.remotes.pop(host, None)
        if remote is not None:
            with contextlib.suppress(Exception):
                remote.close()
        for role in self.by_host[host]:
            outcome = self.outcomes[(host, role)]
            if remote is not None:
                outcome.round_trips = remote.round_trips
            if outcome.outcome != "skipped":
                self._report_once(outcome)

    def settle_all(self) -> None:
        """Close every connection left and report every host and role, skipped ones too."""
        for host in list(self.remotes):
            self.settle(host)
        for outcome in self.report.hosts:
            self._report_once(outcome)

    def _report_once(self, outcome: HostOutcome) -> None:
        with self._lock:
            if (outcome.host, outcome.role) in self._reported:
                return
            self._reported.add((outcome.host, outcome.role))
        self.engine._report(self.deploy_client, self.report.deploy_id, outcome)


class DeployEngine:
    """Runs one deploy or rollback; `run` returns a DeployReport (and never leaves the deploy token alive)."""

    def __init__(
        self,
        client: BrokerClient,
        *,
        say: Say,
        environ: Mapping[str, str] | None = None,
        remote_factory: RemoteFactory | None = None,
        verbose: bool = False,
    ) -> None:
        self.client = client
        self.say = say
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self.docker = docker_binary(self.environ)
        self.network = self.environ.get(BUILD_NETWORK_ENVVAR) or None
        self.redactor = Redactor()
        self._remote_factory = remote_factory or _remote_host
        self._report_lock = threading.Lock()
        self._echo: Say | None = (lambda line: say("  | " + line)) if verbose else None
        self._token_deadline: float | None = None  # time.monotonic() when the deploy token dies
        self._ttl = 0

    # -- the whole deploy --------------------------------------------------------------------------------

    def run(self, request: DeployRequest) -> DeployReport:
        """Create the deploy, do it, report every host and finish it, whatever happens in between."""
        created = self.client.create_deploy(
            project=request.project,
            environment=request.environment,
            manifest=request.manifest,
            version=request.version,
            ttl_seconds=request.ttl_seconds,
            hosts=request.hosts,
            kind=request.kind,
        )
        if created.token is None:
            raise CliError("the broker answered the deploy without a deploy token; nothing was started")
        deploy_id = created.deploy.id if created.deploy is not None else ""
        deploy_client = self.client.with_token(
            created.token,
            unauthorized_message=f"the broker refused the deploy token of deploy {deploy_id} "
            "(it expired, ran out of uses or was revoked)",
        )
        report = DeployReport(deploy_id=deploy_id, outcome="failed", image="", version=request.version)
        # From here on the deploy token exists: every path, whatever it raises, finishes the deploy or
        # revokes the token (SECURITY G45).
        try:
            self._ttl = request.ttl_seconds
            granted = _granted_seconds(created)
            self._token_deadline = _token_deadline(created.expires_at, request.ttl_seconds, granted)
            if created.deploy is None:
                raise CliError("the broker answered the deploy without a deploy record; nothing was started")
            report.image = plans.image_ref(created.plan)
            self.say(
                f"Deploy {deploy_id}: {created.plan.service} {created.plan.version} to "
                f"{request.project}/{request.environment}; deploy token good for {len(created.keys)} keys "
                f"until {created.expires_at}"
            )
            shortened = granted is not None and granted < request.ttl_seconds - 1
            if shortened:
                self.say(
                    f"note: the deploy token lives {max(granted or 0.0, 0.0):.0f} s, not --ttl "
                    f"{request.ttl_seconds}: it cannot outlive the credential that started it, which ends "
                    f"at {created.expires_at}"
                )
            self._check_token_life(request, shortened=shortened)
            self._execute(request, created, deploy_client, report)
        except CliError as exc:
            report.error = self.redactor(exc.message)
        except BaseException as exc:
            report.error = f"interrupted ({type(exc).__name__})"
            raise
        finally:
            report.outcome = _overall(report)
            try:
                self._finish(deploy_client, report)
            finally:
                deploy_client.close()
        return report

    def _check_token_life(self, request: DeployRequest, *, shortened: bool) -> None:
        """Refuse, before any host is touched, a token that cannot last the build and the hosts' margin."""
        if self._token_deadline is None:
            return
        margin = min(HOST_MARGIN_SECONDS, self._ttl / 3)
        build = min(BUILD_FLOOR_SECONDS, self._ttl / 3) if request.kind == "deploy" else 0.0
        life = self._token_deadline - time.monotonic()
        if life >= margin + build:
            return
        kept = f"the {build:g} s kept for the build and push and " if build else ""
        advice = (
            "log in again (or use a credential that lives longer) and deploy again"
            if shortened
            else "deploy again with a longer --ttl (at most 3600)"
        )
        raise CliError(
            f"the deploy token lives {max(life, 0.0):.0f} s, less than {kept}the {margin:g} s kept for the "
            f"hosts: nothing was fetched, built, pushed or started; {advice}"
        )

    def _execute(
        self,
        request: DeployRequest,
        created: CreatedDeploy,
        deploy_client: BrokerClient,
        report: DeployReport,
    ) -> None:
        plan = created.plan
        report.hosts = [HostOutcome(h.host, role.name, "skipped") for role in plan.roles for h in role.hosts]
        by_host: dict[str, list[str]] = {}
        for outcome in report.hosts:
            by_host.setdefault(outcome.host, []).append(outcome.role)
        hosts = _HostSet(self, deploy_client, report, by_host)
        try:
            # Every host key is checked and every connection opened before anything is fetched, built,
            # pushed or started: a refused key stops the whole deploy (journey 3, SECURITY G44).
            reachable = self._connect_all(plan, hosts, request.fail_fast)
            bundle = deploy_client.deploy_bundle(deploy_id=report.deploy_id)
            self._seed(bundle)
            steps = {(s.host, s.role): s for s in plans.host_steps(plan, bundle)}
            digest: str | None = None
            if request.kind == "deploy":
                self._build(plan, bundle, request.manifest_dir, no_cache=request.no_cache)
                digest = self._push(plan, bundle)
            self._deploy_hosts(plan, bundle, steps, hosts, reachable, digest, request.fail_fast)
        finally:
            hosts.settle_all()

    def _connect_all(self, plan: DeployPlan, hosts: _HostSet, fail_fast: bool) -> list[str]:
        """Check every host's key and open its connection, in parallel; the hosts that can be deployed to.

        A refused host key aborts the deploy whatever `fail_fast` says; an unreachable host aborts it
        only with `fail_fast`, else that host is failed and the others go on.
        """
        from cli.deploy.remote import HostKeyRefused

        def connect(host: str) -> CliError | None:
            try:
                remote = self._remote_factory(host, plan, self.redactor)
                hosts.remotes[host] = remote
                remote.connect()
            except CliError as exc:
                return exc
            except ValueError as exc:
                # A host name or setting ssh cannot take (the plans' PlanError names the field).
                return CliError(f"{host}: {exc}")
            return None

        workers = max(1, min(MAX_PARALLEL_HOSTS, len(hosts.by_host)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sr-connect") as pool:
            failures = {
                host: error
                for host, error in zip(hosts.by_host, pool.map(connect, hosts.by_host), strict=True)
                if error is not None
            }
        for host, error in failures.items():
            hosts.fail(host, self.redactor(error.message))
        refused = [host for host, error in failures.items() if isinstance(error, HostKeyRefused)]
        if refused:
            raise CliError(
                f"the host key of {', '.join(refused)} was refused, so nothing was built or pushed and "
                "no host was changed (a refused key stops the whole deploy, with or without --fail-fast)"
            )
        if failures and fail_fast:
            raise CliError(
                f"{', '.join(failures)} cannot be deployed to and --fail-fast is set: nothing was built "
                "or pushed and no host was changed"
            )
        reachable = [host for host in hosts.by_host if host not in failures]
        if not reachable:
            raise CliError("no host can be deployed to, so nothing was built or pushed")
        return reachable

    def _seed(self, bundle: DeployBundle) -> None:
        for item in bundle.hosts:
            self.redactor.add_env_file(item.env_file)
        if bundle.registry_password is not None:
            self.redactor.add(bundle.registry_password)
        self.redactor.add(*bundle.build_secrets.values())
        if self.redactor.skipped:
            count = self.redactor.skipped
            self.say(
                f"note: {count} fetched {'value is' if count == 1 else 'values are'} shorter than 4 "
                "characters and not masked in output (masking them would garble it)"
            )

    # -- local: build and push --------------------------------------------------------------------------

    def _build(
        self, plan: DeployPlan, bundle: DeployBundle, manifest_dir: str, *, no_cache: bool = False
    ) -> None:
        names = plan.builder.secrets if plan.builder else ()
        missing = [name for name in names if name not in bundle.build_secrets]
        if missing:
            raise CliError(f"the broker's bundle lacks the build secret {missing[0]}; nothing was built")
        with private_dir("sr-build-") as directory:
            files = {name: write_secret_file(directory, name, bundle.build_secrets[name]) for name in names}
            argv = plans.build_argv(
                plan,
                docker_binary=self.docker,
                manifest_dir=manifest_dir,
                secret_files=files,
                network=self.network,
            )
            if no_cache:
                # BuildKit's cache key ignores a secret's content: only a cold build uses a rotated one.
                argv.insert(argv.index("build") + 1, "--no-cache")
            self.say(
                f"Building {plans.image_ref(plan)} ({len(files)} build secrets as BuildKit secret files)"
            )
            done = self._bounded(
                "docker build",
                BUILD_TIMEOUT,
                lambda timeout: process.stream(
                    argv,
                    env=docker.BUILD_ENV,
                    redactor=self.redactor,
                    timeout=timeout,
                    on_stdout=self._echo,
                    on_stderr=self._echo,
                ),
            )
        if not done.ok:
            output = done.stderr + done.stdout
            hint = ""
            if "buildx" in output.lower():
                hint = (
                    f"\n(this docker CLI has no BuildKit without the buildx plugin; set {DOCKER_ENVVAR} to a "
                    "docker CLI that builds with DOCKER_BUILDKIT=1, e.g. /usr/bin/docker)"
                )
            raise CliError(f"docker build failed (exit {done.returncode}):\n{_tail(output)}{hint}")

    def _push(self, plan: DeployPlan, bundle: DeployBundle) -> str | None:
        ref = plans.image_ref(plan)
        with private_dir("sr-push-") as directory:
            env: dict[str, str] = {}
            registry = plan.registry
            if registry is not None:
                if bundle.registry_password is None:
                    raise CliError("the broker's bundle has no registry password; nothing was pushed")
                env["DOCKER_CONFIG"] = throwaway_docker_config(directory, self.environ)
                login = docker.login(self.docker, server=registry.server, username=registry.username)
                done = process.run(
                    login,
                    stdin=bundle.registry_password.encode("utf-8"),
                    env=env,
                    redactor=self.redactor,
                    timeout=LOCAL_TIMEOUT,
                )
                if not done.ok:
                    raise CliError(
                        f"docker login to {registry.server or 'the default registry'} failed: "
                        f"{_tail(done.stderr + done.stdout)}"
                    )
            self.say(f"Pushing {ref}")
            done = self._bounded(
                f"docker push {ref}",
                PUSH_TIMEOUT,
                lambda timeout: process.stream(
                    docker.push(self.docker, ref),
                    env=env,
                    redactor=self.redactor,
                    timeout=timeout,
                    on_stdout=self._echo,
                    on_stderr=self._echo,
                ),
            )
            if not done.ok:
                raise CliError(f"docker push {ref} failed:\n{_tail(done.stderr + done.stdout)}")
            inspect = process.run(
                docker.repo_digests(self.docker, ref), env=env, redactor=self.redactor, timeout=LOCAL_TIMEOUT
            )
        return docker.parse_repo_digest(inspect.stdout, plans.repository(plan)) if inspect.ok else None

    def _bounded(
        self, what: str, limit: float, call: Callable[[float], process.Completed]
    ) -> process.Completed:
        """Run `call(timeout)` within `limit` and within the deploy token's life less the hosts' margin."""
        if self._token_deadline is None:
            return call(limit)
        margin = min(HOST_MARGIN_SECONDS, self._ttl / 3)
        left = self._token_deadline - margin - time.monotonic()
        if left <= 0:
            raise CliError(
                f"{what} not started: the deploy token (--ttl {self._ttl}) has too little life left for it "
                f"and the hosts ({margin:g} s kept for them); deploy again with a longer --ttl (at most 3600)"
            )
        if left >= limit:
            return call(limit)
        started = time.monotonic()
        try:
            return call(left)
        except CliError:
            if time.monotonic() - started < left - 0.5:
                raise
            raise CliError(
                f"{what} stopped after {left:.0f} s: the deploy token (--ttl {self._ttl}) would have expired "
                f"before the hosts were deployed ({margin:g} s kept for them); deploy again with a longer "
                "--ttl (at most 3600)"
            ) from None

    # -- hosts ---------------------------------------------------------------------------------------------

    def _deploy_hosts(
        self,
        plan: DeployPlan,
        bundle: DeployBundle,
        steps: Mapping[tuple[str, str], plans.HostStep],
        hosts: _HostSet,
        reachable: Sequence[str],
        digest: str | None,
        fail_fast: bool,
    ) -> None:
        stop = threading.Event()

        def deploy(host: str) -> None:
            remote = hosts.remotes[host]
            try:
                for role in hosts.by_host[host]:
                    if stop.is_set():
                        return
                    step = steps.get((host, role))
                    if step is None:
                        raise CliError(f"the broker's bundle has no env file for {host} ({role})")
                    outcome = hosts.outcomes[(host, role)]
                    try:
                        result = remote.deploy(self._remote_step(plan, bundle, step, hosts.report.deploy_id))
                    except CliError as exc:
                        error = self.redactor(exc.message)
                        self._record(outcome, "failed", error=error, fingerprint=step.env_fingerprint)
                        if fail_fast:
                            stop.set()
                        return
                    self._record(
                        outcome,
                        "deployed",
                        container=result.container,
                        name=result.name or None,
                        digest=digest or result.image_digest,
                        fingerprint=step.env_fingerprint,
                    )
            finally:
                hosts.settle(host)

        workers = max(1, min(MAX_PARALLEL_HOSTS, len(reachable)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sr-host") as pool:
            for future in [pool.submit(deploy, host) for host in reachable]:
                future.result()

    def _remote_step(
        self, plan: DeployPlan, bundle: DeployBundle, step: plans.HostStep, deploy_id: str
    ) -> DeployStep:
        from cli.deploy.remote import DeployStep

        return DeployStep(
            role=step.role,
            version=plan.version,
            image=plans.image_ref(plan),
            env_file=step.env_file,
            env_fingerprint=step.env_fingerprint,
            deploy_id=deploy_id,
            registry_password=bundle.registry_password if plan.registry is not None else None,
        )

    def _record(
        self,
        outcome: HostOutcome,
        result: str,
        *,
        error: str | None = None,
        container: str | None = None,
        name: str | None = None,
        digest: str | None = None,
        fingerprint: str | None = None,
    ) -> None:
        outcome.outcome = result
        outcome.error = error
        outcome.container = container
        outcome.name = name
        outcome.image_digest = digest
        outcome.env_fingerprint = fingerprint
        if result == "deployed":
            self.say(f"  {outcome.host} ({outcome.role}): deployed {name or container or ''}".rstrip())
        else:
            self.say(f"  {outcome.host} ({outcome.role}): {result}: {error}")

    def _report(self, deploy_client: BrokerClient, deploy_id: str, outcome: HostOutcome) -> None:
        with self._report_lock:
            try:
                deploy_client.report_deploy_host(
                    deploy_id=deploy_id,
                    host=outcome.host,
                    role=outcome.role,
                    outcome=outcome.outcome,
                    container=outcome.container,
                    image_digest=outcome.image_digest,
                    env_fingerprint=outcome.env_fingerprint if outcome.outcome == "deployed" else None,
                    error=outcome.error,
                    redactor=self.redactor,
                )
            except CliError as exc:
                self.say(
                    f"warning: could not record {outcome.host} ({outcome.role}) in the ledger: {exc.message}"
                )

    # -- the end -------------------------------------------------------------------------------------------

    def _finish(self, deploy_client: BrokerClient, report: DeployReport) -> None:
        """Finish the deploy, else revoke its token, else say the TTL is all that is left; never raises."""
        failure = "no deploy record"
        if report.deploy_id:
            try:
                report.finished = deploy_client.finish_deploy(
                    deploy_id=report.deploy_id, outcome=report.outcome
                )
                return
            except Exception as exc:  # any failure, not only the broker's: the token must not outlive this
                failure = self.redactor(_message(exc))
        try:
            deploy_client.revoke_self()
            report.token_note = f"could not finish the deploy at the broker ({failure}); revoked its token"
        except Exception as exc:
            report.token_note = (
                f"could not finish the deploy ({failure}) nor revoke its token ({self.redactor(_message(exc))}); "
                "the token stays valid until its TTL ends"
            )
        with contextlib.suppress(Exception):
            self.say(f"warning: {report.token_note}")


def _message(exc: Exception) -> str:
    return exc.message if isinstance(exc, CliError) else f"{type(exc).__name__}: {exc}"


def _when(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _granted_seconds(created: CreatedDeploy) -> float | None:
    """The deploy token's life as the broker granted it (its expiry less the deploy's start, both the broker's
    clock, so a skewed local clock cannot hide a shortening); None if the answer lacks either."""
    expiry = _when(created.expires_at)
    started = _when(created.deploy.started_at) if created.deploy is not None else None
    if expiry is None or started is None:
        return None
    return (expiry - started).total_seconds()


def _token_deadline(expires_at: str | None, ttl_seconds: int, granted: float | None = None) -> float | None:
    """When (time.monotonic()) the deploy token dies: its expiry, never later than --ttl (or its grant) from now."""
    life = float(ttl_seconds) if granted is None else min(float(ttl_seconds), granted)
    expiry = _when(expires_at)
    if expiry is not None:
        life = min(life, (expiry - datetime.now(UTC)).total_seconds())
    return time.monotonic() + life if ttl_seconds > 0 else None


def _overall(report: DeployReport) -> str:
    deployed = sum(1 for o in report.hosts if o.outcome == "deployed")
    if report.error is None and report.hosts and deployed == len(report.hosts):
        return "succeeded"
    return "partial" if deployed else "failed"


def _remote_host(host: str, plan: DeployPlan, redactor: Redactor) -> Remote:
    from cli.deploy.remote import RemoteHost

    return RemoteHost(host, plan.raw, redactor=redactor)
