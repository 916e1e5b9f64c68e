"""The deploy lab: a build engine, a registry and SSH "hosts" with their own engines, all real, on loopback.

One lab serves a whole test session (and bench/deploy.py):
- a build engine (tests/support/docker.py) driven by Debian's /usr/bin/docker 20.10 with DOCKER_BUILDKIT=1,
  the CLI that can build with `--secret` here (the newer CLI in /usr/local/bin refuses BuildKit without the
  buildx plugin, see ../shared/lab/README.md);
- a registry (tests/support/registry.py) named `127.0.0.1:PORT`, the name dockerd treats as insecure;
- N ssh hosts (tests/support/sshd.py), each an sshd whose sessions see its own dockerd, docker config and
  STRONGROOM_REMOTE_DIR, reached through aliases (`web1`, `web2`, …) of one ssh config file;
- `down1`, an alias on an address and port nothing listens on, and `stranger`, a live sshd whose host key
  is not in the known_hosts file (its sessions would use the first host's engine: a container started
  there would show).

Each host has its own loopback address (web1 127.0.0.2, web2 127.0.0.3, …) and they all share one port,
`Lab.ssh_port`: a manifest's `ssh.port` (22 unless set) is passed to ssh as `-p`, which overrides the
Port of an ssh config alias, so hosts told apart by port alone could not be deployed to together. The
addresses are loopback (127.0.0.0/8 never leaves the machine); the registry stays on 127.0.0.1.

Recording shims (catalogue G40): `Lab.env()` points STRONGROOM_DOCKER and STRONGROOM_SSH (and PATH, for
ssh-keyscan and ssh-keygen) at small sh scripts that write each call's argv and environment to a file and
exec the real program with the same argv and stdin (stdin is not recorded: it is where secrets belong);
each host's sessions get a PATH whose first docker is such a shim, so the docker commands the deploy
script runs on the hosts are recorded too (`Lab.calls()`). The build engine has no bridge, so builds
need STRONGROOM_BUILD_NETWORK=host.

Engines start in parallel; everything is stopped by PID in reverse order of start. The test app (`app_context`)
is an image FROM scratch with Debian's static busybox: no registry pull, a few megabytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import docker, registry, sshd
from tests.support.ports import free_port

BUILD_DOCKER = "/usr/bin/docker"  # Debian's 20.10: BuildKit `--secret` without the buildx plugin
REPOSITORY = "lab/shop"


def missing() -> str | None:
    """Why the lab cannot start here (with the install hint), or None if it can."""
    for reason in (docker.missing(), sshd.missing(), registry.missing()):
        if reason:
            return reason
    if not os.access(BUILD_DOCKER, os.X_OK):
        return f"{BUILD_DOCKER} (Debian's docker CLI, for BuildKit builds) is not installed (apt-get install docker.io)"
    return None


@dataclass
class LabHost:
    """One fake host: an ssh alias, its sshd and its own Docker engine."""

    alias: str
    ssh: sshd.SshHost
    engine: docker.Engine

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        """Run `docker ARGS` against this host's engine directly (for assertions, not through ssh)."""
        return self.engine.docker(*args, check=check)

    @property
    def remote_dir(self) -> Path:
        """The STRONGROOM_REMOTE_DIR its ssh sessions get."""
        return self.ssh.remote_dir


@dataclass
class Lab:
    """A running lab; `env()` is what the strongroom CLI needs to deploy through it."""

    root: Path
    build: docker.Engine
    registry: registry.Registry
    hosts: dict[str, LabHost]
    ssh_config: Path
    known_hosts: Path
    client_key: Path
    ssh_port: int = 22
    shims: Path | None = None
    unreachable: str = "down1"
    unknown: str = "stranger"
    unknown_host: sshd.SshHost | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def image(self) -> str:
        """The app's image name (without tag) in the lab registry."""
        return f"{self.registry.server}/{REPOSITORY}"

    def env(self) -> dict[str, str]:
        """Environment for the strongroom CLI: ssh config, docker and ssh (recording shims), the build engine."""
        assert self.shims is not None
        return {
            "PATH": f"{self.shims}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "STRONGROOM_SSH_CONFIG": str(self.ssh_config),
            "STRONGROOM_SSH": str(self.shims / "ssh"),
            "STRONGROOM_DOCKER": str(self.shims / "docker"),
            "DOCKER_HOST": f"unix://{self.build.socket}",
            "DOCKER_CONFIG": str(self.build.root / "docker-config"),
            "DOCKER_BUILDKIT": "1",
            # The build engine has no bridge (--bridge=none): a build's RUN steps need the host network.
            "STRONGROOM_BUILD_NETWORK": "host",
        }

    def ssh(self, alias: str, *remote: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """`ssh -F <lab config> -o StrictHostKeyChecking=yes -o BatchMode=yes alias REMOTE...`."""
        return subprocess.run(
            [*sshd.STRICT, "-F", str(self.ssh_config), alias, *remote],
            input=input,
            capture_output=True,
            timeout=60,
            check=False,
        )

    def build_docker(
        self, *args: str, input: bytes | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[bytes]:
        """`docker ARGS` on the build engine with the BuildKit-capable CLI."""
        return self.build.docker(
            *args,
            cli=BUILD_DOCKER,
            input=input,
            check=check,
            timeout=timeout,
            env_extra={"DOCKER_BUILDKIT": "1"},
        )

    def calls(self) -> list[Call]:
        """Every docker and ssh call recorded so far: local ones, then each host's remote docker calls."""
        found = read_calls(self.root / "calls", "local")
        for alias in self.hosts:
            found += read_calls(self.root / "hosts" / alias / "calls", alias)
        return found

    def forget_calls(self) -> None:
        """Drop the recorded calls (between tests)."""
        for log_dir in [self.root / "calls", *(self.root / "hosts" / a / "calls" for a in self.hosts)]:
            for entry in log_dir.iterdir():
                entry.unlink()

    def containers(self, alias: str, service: str | None = None) -> list[dict[str, str]]:
        """Containers (running or not) on a host's engine: name, state, labels; optionally one service's."""
        args = ["ps", "-a", "--no-trunc", "--format", "{{json .}}"]
        if service:
            args += ["--filter", f"label=strongroom.service={service}"]
        out = self.hosts[alias].docker(*args).stdout.decode()
        return [json.loads(line) for line in out.splitlines() if line.strip()]


# --- recording shims -------------------------------------------------------------------------------

SHIM = """#!/bin/sh
# Recording shim (tests only): logs argv and environment (NUL-separated), then runs the real {name}.
f="{log_dir}/$(date +%s%N).$$.{name}"
{{ printf '%s\\0' "$#" "$@"; env -0; }} > "$f.part" && mv "$f.part" "$f"
exec {real} "$@"
"""


@dataclass(frozen=True)
class Call:
    """One recorded invocation: which program, where (`local` or a host alias), its argv and environment."""

    program: str
    where: str
    argv: tuple[str, ...]
    env: dict[str, str]
    at_ns: int = 0  # when it started (CLOCK_REALTIME, ns)


def write_shim(bin_dir: Path, name: str, real: str, log_dir: Path) -> Path:
    """A `name` in bin_dir that records each call into log_dir and execs `real` with the same argv and stdin."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / name
    path.write_text(SHIM.format(name=name, log_dir=log_dir, real=real))
    path.chmod(0o755)
    return path


def read_calls(log_dir: Path, where: str) -> list[Call]:
    """The calls recorded in log_dir, oldest first."""
    calls = []
    for entry in sorted(log_dir.iterdir()) if log_dir.exists() else []:
        if entry.name.endswith(".part"):
            continue
        fields = entry.read_bytes().split(b"\0")
        argc = int(fields[0])
        argv = tuple(f.decode(errors="replace") for f in fields[1 : 1 + argc])
        env = dict(f.decode(errors="replace").partition("=")[::2] for f in fields[1 + argc :] if b"=" in f)
        calls.append(Call(entry.name.rsplit(".", 1)[1], where, argv, env, int(entry.name.split(".", 1)[0])))
    return calls


# --- the test app --------------------------------------------------------------------------------------

APP_SH = textwrap.dedent(
    """\
    #!/bin/sh
    # The lab app: checks its variables, writes /tmp/health, runs until TERM.
    set -eu
    version=$(cat /app/VERSION)
    [ -n "${APP_SECRET:-}" ] || { echo "APP_SECRET is missing" >&2; exit 64; }
    [ "${APP_MODE:-}" = e2e ] || { echo "APP_MODE is not e2e" >&2; exit 64; }
    # A command (`docker run IMAGE CMD...`, `strongroom app exec --new`) runs instead of the app.
    [ "$#" -eq 0 ] || exec "$@"
    trap 'exit 0' TERM INT
    if [ "$version" != broken ]; then
      secret_sha=$(printf %s "$APP_SECRET" | sha256sum | cut -d' ' -f1)
      printf 'ok version=%s app_secret_sha256=%s build_token_sha256=%s\\n' \\
        "$version" "$secret_sha" "$(cat /app/build_token.sha256)" > /tmp/health.new
      mv /tmp/health.new /tmp/health
      echo "app $version up"
    else
      echo "app $version will never become healthy"
    fi
    # sh as PID 1 would ignore TERM without the trap; sleeping in the background keeps the trap responsive.
    while :; do sleep 3600 & wait $!; done
    """
)

DOCKERFILE = textwrap.dedent(
    """\
    FROM scratch
    COPY busybox /bin/busybox
    RUN ["/bin/busybox", "--install", "-s", "/bin"]
    RUN mkdir -p /tmp /app && chmod 1777 /tmp
    # BuildKit's cache key of a step ignores the secret's content: a fresh nonce per context makes every
    # build run the secret step with the secret it was given (else a cached layer from another run is used).
    COPY build-nonce /app/build-nonce
    # The build secret is used (its digest is kept, proving the mount worked) but must end up in no layer.
    RUN --mount=type=secret,id=BUILD_TOKEN test -s /run/secrets/BUILD_TOKEN \\
        && sha256sum /run/secrets/BUILD_TOKEN | cut -d' ' -f1 > /app/build_token.sha256
    COPY app.sh VERSION /app/
    HEALTHCHECK --interval=1s --timeout=2s --retries=2 CMD ["/bin/test", "-s", "/tmp/health"]
    ENTRYPOINT ["/bin/sh", "/app/app.sh"]
    """
)

HEALTH_CMD = "test -s /tmp/health"
"""The app's health check: a file test, not an HTTP GET on a fixed port.

The containers run `--network host`, and during a deploy the new container of a role starts while the old
one still runs on the same host: a fixed port would be taken by the old one, the new one could not bind,
and it would never become healthy. A file inside each container's own filesystem has no such conflict.
"""


def app_context(path: Path, version: str) -> Path:
    """Write the app's build context for `version` ("broken": a container that never becomes healthy)."""
    path.mkdir(parents=True, exist_ok=True)
    if not (path / "busybox").exists():
        shutil.copy2(docker.BUSYBOX, path / "busybox")
    (path / "app.sh").write_text(APP_SH)
    (path / "Dockerfile").write_text(DOCKERFILE)
    (path / "VERSION").write_text(version + "\n")
    (path / "build-nonce").write_text(os.urandom(16).hex() + "\n")
    return path


def health_line(version: str, app_secret: str, build_token: str) -> str:
    """What a healthy app of `version` writes to /tmp/health."""
    digest = hashlib.sha256
    return (
        f"ok version={version} app_secret_sha256={digest(app_secret.encode()).hexdigest()} "
        f"build_token_sha256={digest(build_token.encode()).hexdigest()}\n"
    )


# --- catalogue G41: no build secret in an image ----------------------------------------------------------


def image_leaks(
    docker_run: Callable[..., subprocess.CompletedProcess[bytes]], image: str, needle: str
) -> list[str]:
    """Where `needle` shows in an image: `docker history --no-trunc`, `docker inspect`, any file of `docker save`.

    docker_run runs the docker CLI against the engine holding the image. Every layer tarball inside the
    saved archive is opened and every file in it read; the archive's own JSON (config, manifest) too.
    """
    found = []
    wanted = needle.encode()
    history = docker_run("history", "--no-trunc", "--format", "{{.CreatedBy}} {{.Comment}}", image).stdout
    if wanted in history:
        found.append("docker history --no-trunc")
    if wanted in docker_run("inspect", image).stdout:
        found.append("docker inspect")
    archive = docker_run("save", image).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as outer:
        for member in outer.getmembers():
            if not member.isfile():
                continue
            data = outer.extractfile(member).read()  # type: ignore[union-attr]
            if member.name.endswith(".tar") or member.name.startswith("blobs/"):
                with contextlib.suppress(tarfile.TarError):
                    with tarfile.open(fileobj=io.BytesIO(data)) as layer:
                        for inner in layer.getmembers():
                            if wanted in inner.name.encode() or wanted in (inner.linkname or "").encode():
                                found.append(f"docker save: {member.name}: name {inner.name}")
                            if inner.isfile():
                                content = layer.extractfile(inner).read()  # type: ignore[union-attr]
                                if wanted in content:
                                    found.append(f"docker save: {member.name}: {inner.name}")
                    continue
            if wanted in data:
                found.append(f"docker save: {member.name}")
    return found


def layer_file(
    docker_run: Callable[..., subprocess.CompletedProcess[bytes]], image: str, path: str
) -> bytes | None:
    """The content of `path` in the topmost layer of `docker save image` holding it (None when absent)."""
    archive = docker_run("save", image).stdout
    content = None
    with tarfile.open(fileobj=io.BytesIO(archive)) as outer:
        manifest = json.loads(outer.extractfile("manifest.json").read())  # type: ignore[union-attr]
        for layer_name in manifest[0]["Layers"]:
            data = outer.extractfile(layer_name).read()  # type: ignore[union-attr]
            with tarfile.open(fileobj=io.BytesIO(data)) as layer, contextlib.suppress(KeyError):
                content = layer.extractfile(path.lstrip("/")).read()  # type: ignore[union-attr]
    return content


# --- start and stop ----------------------------------------------------------------------------------


def _port_free_on(addresses: list[str]) -> int:
    """A TCP port free on every one of the loopback addresses."""
    for _ in range(50):
        port = free_port()
        try:
            for address in addresses:
                with socket.socket() as s:
                    s.bind((address, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no port free on all of {', '.join(addresses)}")


def _engines(count: int, stack: contextlib.ExitStack) -> list[docker.Engine]:
    """Start `count` throwaway dockerd in parallel; stack stops them (in parallel too) when it closes."""
    managers = [docker.engine() for _ in range(count)]
    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(m.__enter__) for m in managers]
    engines: list[docker.Engine] = []
    started: list[contextlib.AbstractContextManager[docker.Engine]] = []
    errors: list[BaseException] = []
    for manager, future in zip(managers, futures, strict=True):
        try:
            engines.append(future.result())
        except BaseException as exc:  # the first is raised below, once the rest are kept
            errors.append(exc)
        else:
            started.append(manager)
    stack.callback(_stop_engines, started, [e.root for e in engines])
    if errors:
        raise errors[0]
    return engines


def _stop_engines(
    managers: list[contextlib.AbstractContextManager[docker.Engine]], roots: list[Path]
) -> None:
    """Stop the engines in parallel (each by its PID), then sweep what a slow stop may have left mounted."""
    with ThreadPoolExecutor(max_workers=max(1, len(managers))) as pool:
        for future in [pool.submit(m.__exit__, None, None, None) for m in managers]:
            with contextlib.suppress(Exception):
                future.result()
    for root in roots:
        for mount_point in docker._mounts_under(root):  # e.g. exec/netns/default after a KILL
            subprocess.run(["umount", "-l", mount_point], capture_output=True, check=False)
        if root.exists() and not docker._mounts_under(root):
            shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def lab(*, hosts: int = 2, extras: bool = True, record_hosts: bool = True) -> Iterator[Lab]:
    """Start a lab with `hosts` ssh hosts (web1..webN) and, with extras, the `down1` and `stranger` aliases.

    record_hosts=False leaves the hosts' docker unwrapped (the local calls are still recorded).
    """
    reason = missing()
    if reason:
        raise RuntimeError(reason)
    with contextlib.ExitStack() as stack:
        root = Path(tempfile.mkdtemp(prefix="sr-lab-", dir="/tmp"))
        stack.callback(shutil.rmtree, root, True)
        root.chmod(0o700)
        client_key = sshd.keygen(root / "client_ed25519", "strongroom-test-deployer")
        build, *engines = _engines(hosts + 1, stack)
        build.cli = BUILD_DOCKER
        reg = stack.enter_context(registry.registry(password=f"REGCANARY-{os.urandom(8).hex()}"))
        ssh_config = root / "ssh_config"
        known_hosts = root / "known_hosts"
        shims = root / "bin"
        write_shim(shims, "docker", BUILD_DOCKER, root / "calls")
        write_shim(shims, "ssh", sshd.SSH, root / "calls")
        # STRONGROOM_SSH given by path: its ssh-keyscan and ssh-keygen are looked for beside it.
        write_shim(shims, "ssh-keyscan", "/usr/bin/ssh-keyscan", root / "calls")
        write_shim(shims, "ssh-keygen", sshd.SSH_KEYGEN, root / "calls")
        addresses = [f"127.0.0.{n}" for n in range(2, hosts + 4)]
        port = _port_free_on(addresses)
        lab_hosts: dict[str, LabHost] = {}
        for number, engine in enumerate(engines, start=1):
            alias = f"web{number}"
            # The host's sessions find a recording docker first on PATH (its real one: the first on ours).
            host_bin = root / "hosts" / alias / "bin"
            write_shim(host_bin, "docker", engine.cli, root / "hosts" / alias / "calls")
            (root / "hosts" / alias / "calls").mkdir(parents=True, exist_ok=True)
            host = stack.enter_context(
                sshd.ssh_host(
                    docker_host=f"unix://{engine.socket}",
                    client_key=client_key,
                    alias=alias,
                    path=f"{host_bin}:/usr/local/bin:/usr/bin:/bin" if record_hosts else None,
                    address=addresses[number - 1],
                    port=port,
                )
            )
            lab_hosts[alias] = LabHost(alias, host, engine)
        blocks = [h.ssh.config_block(alias, known_hosts) for alias, h in lab_hosts.items()]
        lines = [h.ssh.known_hosts_line() for h in lab_hosts.values()]
        unknown_host = None
        if extras:
            # An address nobody listens on: connections are refused.
            blocks.append(sshd.config_block("down1", addresses[hosts + 1], port, client_key, known_hosts))
            unknown_host = stack.enter_context(
                sshd.ssh_host(
                    docker_host=f"unix://{engines[0].socket}",
                    client_key=client_key,
                    alias="stranger",
                    address=addresses[hosts],
                    port=port,
                )
            )
            blocks.append(unknown_host.config_block("stranger", known_hosts))
        ssh_config.write_text("\n".join(blocks))
        known_hosts.write_text("".join(lines))
        yield Lab(
            root=root,
            build=build,
            registry=reg,
            hosts=lab_hosts,
            ssh_config=ssh_config,
            known_hosts=known_hosts,
            client_key=client_key,
            ssh_port=port,
            shims=shims,
            unknown_host=unknown_host,
        )
