"""A throwaway podman store for tests: its own storage (vfs) and config in a temp dir, no daemon.

`podman create --env-file` parses the env file in podman itself (pkg/env), and `podman inspect`
shows the resulting environment without running anything, so no OCI runtime, network or cgroup is
involved. The image is Debian's static busybox imported from a tarball (no registry pulls). Needs
root and Debian's podman package.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BUSYBOX = "/bin/busybox"
IMAGE = "localhost/strongroom-test/busybox:1"


def missing() -> str | None:
    """Why the podman store cannot be used here (with the install hint), or None."""
    if os.geteuid() != 0:
        return "the throwaway podman store needs root"
    if not shutil.which("podman"):
        return "podman is not installed (apt-get install podman)"
    if not os.access(BUSYBOX, os.X_OK):
        return "/bin/busybox is needed for the test image (apt-get install busybox-static)"
    return None


@dataclass
class Store:
    """A private podman storage + config; `podman(...)` runs the CLI against it."""

    root: Path

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Environment pointing podman at this store only."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root),
            "XDG_RUNTIME_DIR": str(self.root / "xdg"),
            "CONTAINERS_STORAGE_CONF": str(self.root / "storage.conf"),
            "CONTAINERS_CONF": str(self.root / "containers.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(self.root / "registries.conf"),
        } | (extra or {})

    def podman(
        self, *args: str, input: bytes | None = None, extra_env: dict[str, str] | None = None
    ) -> bytes:
        """Run `podman ARGS` against this store and return stdout; raises with stderr on failure."""
        proc = subprocess.run(
            ["podman", *args],
            input=input,
            capture_output=True,
            env=self.env(extra_env),
            timeout=120,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"podman {args[0]} failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
        return proc.stdout

    def env_from_file(self, env_file: Path, extra_env: dict[str, str] | None = None) -> dict[str, str]:
        """The environment `podman create --env-file env_file` gives a container (nothing is run)."""
        cid = self.podman(
            "create", "--env-file", str(env_file), IMAGE, "/bin/busybox", "true", extra_env=extra_env
        )
        try:
            out = self.podman("inspect", "--format", "{{json .Config.Env}}", cid.decode().strip())
        finally:
            self.podman("rm", "-f", cid.decode().strip())
        env: dict[str, str] = {}
        for item in json.loads(out):
            key, _, value = item.partition("=")
            env[key] = value
        return env


@contextlib.contextmanager
def store() -> Iterator[Store]:
    """A fresh store with the busybox image imported; deleted afterwards (its containers first)."""
    reason = missing()
    if reason:
        raise RuntimeError(reason)
    root = Path(tempfile.mkdtemp(prefix="sr-podman-", dir="/tmp"))
    root.chmod(0o700)
    (root / "xdg").mkdir(mode=0o700)
    (root / "storage.conf").write_text(
        f'[storage]\ndriver = "vfs"\nrunroot = "{root}/run"\ngraphroot = "{root}/graph"\n'
    )
    (root / "containers.conf").write_text(
        '[containers]\nnetns = "host"\n[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
        f'tmp_dir = "{root}/tmp"\n[network]\nnetwork_config_dir = "{root}/networks"\n'
    )
    (root / "registries.conf").write_text("unqualified-search-registries = []\n")
    st = Store(root)
    try:
        tarball = root / "busybox.tar"
        with tarfile.open(tarball, "w") as tar:
            info = tar.gettarinfo(BUSYBOX, arcname="bin/busybox")
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = 0o755
            with open(BUSYBOX, "rb") as fh:
                tar.addfile(info, fh)
        st.podman("import", str(tarball), IMAGE)
        yield st
    finally:
        with contextlib.suppress(Exception):
            st.podman("rm", "-a", "-f")
        shutil.rmtree(root, ignore_errors=True)
