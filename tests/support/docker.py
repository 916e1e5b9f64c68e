"""A throwaway Docker engine for tests: its own dockerd on a unix socket in a temp dir, loopback only.

Started exactly as ../shared/lab/e2e-pipeline.sh does: `--bridge=none --iptables=false
--ip6tables=false --ip-masq=false`, its own data root, exec root, pidfile and an empty config file,
cgroupfs driver. Containers must use `--network host`. Stopped by the PID it was started with (TERM,
then KILL), after which the mounts it left under its directory (netns, overlay layers) are
unmounted and the directory removed. Nothing else is touched.

Images come from `docker import` of a tarball built here (Debian's static /bin/busybox): there are
no registry pulls. Needs root, /usr/sbin/dockerd (docker.io), a docker CLI and busybox-static.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

DOCKERD = "/usr/sbin/dockerd"
BUSYBOX = "/bin/busybox"
BUSYBOX_IMAGE = "strongroom-test/busybox:1"


def docker_clis() -> list[str]:
    """Every docker CLI on this machine, deduplicated (e.g. a 28.x in /usr/local/bin and Debian's 20.10)."""
    found: list[str] = []
    for candidate in (shutil.which("docker"), "/usr/local/bin/docker", "/usr/bin/docker"):
        if candidate and os.access(candidate, os.X_OK):
            real = os.path.realpath(candidate)
            if real not in {os.path.realpath(f) for f in found}:
                found.append(candidate)
    return found


def _is_static(path: str) -> bool:
    out = subprocess.run(["file", "-L", path], capture_output=True, text=True, check=False).stdout
    if "statically linked" in out or "static-pie linked" in out:
        return True
    ldd = subprocess.run(["ldd", path], capture_output=True, text=True, check=False)
    return "not a dynamic executable" in (ldd.stdout + ldd.stderr)


def missing() -> str | None:
    """Why a throwaway engine cannot start here (with the install hint), or None if it can."""
    if os.geteuid() != 0:
        return "the throwaway dockerd needs root"
    if not os.access(DOCKERD, os.X_OK):
        return "dockerd is not installed (apt-get install docker.io)"
    if not docker_clis():
        return "no docker CLI (apt-get install docker.io)"
    if not os.access(BUSYBOX, os.X_OK) or not _is_static(BUSYBOX):
        return "a static /bin/busybox is needed for the test image (apt-get install busybox-static)"
    return None


@dataclass
class Engine:
    """A running dockerd; `docker(...)` runs the CLI against it."""

    root: Path
    pid: int
    cli: str
    images: set[str] = field(default_factory=set)

    @property
    def socket(self) -> Path:
        """The engine's API socket."""
        return self.root / "engine.sock"

    def env(self) -> dict[str, str]:
        """Environment for a docker CLI aimed at this engine only (own DOCKER_CONFIG, no host config)."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root),
            "DOCKER_HOST": f"unix://{self.socket}",
            "DOCKER_CONFIG": str(self.root / "docker-config"),
        }

    def docker(
        self,
        *args: str,
        cli: str | None = None,
        input: bytes | None = None,
        timeout: float = 60,
        check: bool = True,
        env_extra: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run `docker ARGS` against this engine; raises with the CLI's stderr when check and it fails."""
        proc = subprocess.run(
            [cli or self.cli, *args],
            input=input,
            capture_output=True,
            env=self.env() | (env_extra or {}),
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"docker {' '.join(args[:2])} failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}"
            )
        return proc

    def busybox_image(self) -> str:
        """A one-file image (static busybox at /bin/busybox, applets via `busybox NAME`), imported once."""
        if BUSYBOX_IMAGE not in self.images:
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as tar:
                info = tar.gettarinfo(BUSYBOX, arcname="bin/busybox")
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mode = 0o755
                with open(BUSYBOX, "rb") as fh:
                    tar.addfile(info, fh)
            self.docker("import", "-", BUSYBOX_IMAGE, input=buffer.getvalue(), timeout=120)
            self.images.add(BUSYBOX_IMAGE)
        return BUSYBOX_IMAGE

    def run(self, args: Sequence[str], *, cli: str | None = None, timeout: float = 60) -> bytes:
        """`docker run --rm --network host ARGS`, returning the container's stdout."""
        return self.docker("run", "--rm", "--network", "host", *args, cli=cli, timeout=timeout).stdout


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root) + "/"
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            mount_point = line.split()[4].encode().decode("unicode_escape")
            if mount_point.startswith(prefix):
                found.append(mount_point)
    return sorted(found, key=len, reverse=True)


def _stop(pid: int, root: Path, proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)
    for mount_point in _mounts_under(root):  # exec/netns/default, overlay layers, shm
        subprocess.run(["umount", "-l", mount_point], capture_output=True, check=False)


@contextlib.contextmanager
def engine(*, start_timeout: float = 180) -> Iterator[Engine]:
    """Start a throwaway dockerd, yield it, then stop it by PID, unmount what it left and delete its dir."""
    reason = missing()
    if reason:
        raise RuntimeError(reason)
    root = Path(tempfile.mkdtemp(prefix="sr-dockerd-", dir="/tmp"))  # short: unix socket paths max 107 bytes
    root.chmod(0o700)
    (root / "daemon.json").write_text("{}")  # keep /etc/docker/daemon.json out of it
    (root / "docker-config").mkdir()
    log = open(root / "engine.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [
            DOCKERD,
            "--config-file",
            str(root / "daemon.json"),
            "--data-root",
            str(root / "data"),
            "--exec-root",
            str(root / "exec"),
            "--pidfile",
            str(root / "dockerd.pid"),
            "-H",
            f"unix://{root / 'engine.sock'}",
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
            "--exec-opt",
            "native.cgroupdriver=cgroupfs",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    eng = Engine(root=root, pid=proc.pid, cli=docker_clis()[0])
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"dockerd exited ({proc.returncode}): {(root / 'engine.log').read_text()[-3000:]}"
                )
            # A long timeout: on a loaded machine a dockerd still starting can take over 10 s to answer, and
            # a timed-out probe raises instead of polling again.
            if eng.socket.exists() and eng.docker("version", check=False, timeout=120).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"dockerd not ready after {start_timeout}s: {(root / 'engine.log').read_text()[-3000:]}"
                )
            time.sleep(0.2)
        yield eng
    finally:
        with contextlib.suppress(Exception):
            ids = eng.docker("ps", "-aq", check=False, timeout=20).stdout.split()
            if ids:
                eng.docker("rm", "-f", *(i.decode() for i in ids), check=False, timeout=60)
        _stop(proc.pid, root, proc)
        log.close()
        if not _mounts_under(root):
            _delete_in_background(root)


def _delete_in_background(root: Path) -> None:
    """Remove an engine's directory without waiting: a built image leaves tens of thousands of layer files."""
    # Renamed first so a later engine never meets a half-deleted tree; the detached `rm` outlives the test run.
    doomed = root.with_name(root.name + ".deleting")
    try:
        root.rename(doomed)
    except OSError:
        shutil.rmtree(root, ignore_errors=True)
        return
    subprocess.Popen(
        ["rm", "-rf", "--one-file-system", str(doomed)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
