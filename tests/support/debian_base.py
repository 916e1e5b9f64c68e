"""What the image test builds the broker image from, when no image can be pulled: a Debian base and wheels.

Two artefacts, each made once and cached under ~/.cache (STRONGROOM_IMAGE_CACHE overrides), keyed by
what goes into it, and each built under its own flock so that a build started in the background (`.ci/run`
runs `python tests/support/debian_base.py` before the suite) and the test's fixture never build the same
thing twice: the fixture takes the lock, which waits for a background build to finish, then finds it done.

- `rootfs()`: a tarball of a Debian bookworm root filesystem made by `debootstrap --variant=minbase` with
  Debian's python3 and python3-venv (Python 3.11, as the default base `python:3.11-slim`), ready for
  `docker import`. Needs root, debootstrap and the Debian mirror.
- `wheelhouse()`: wheels of the broker's dependencies and build requirements (pyproject.toml) made with
  this Python's pip (and pip's cache), so `docker build` installs with `--no-index` and fetches nothing.

Standard library only: `.ci/run` runs this file with any Python 3.11.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3", "python3-venv", "python3-pip")
FORMAT = 2  # bump when the way an artefact is made changes, so old caches are not reused


def cache_dir() -> Path:
    """Where the artefacts are kept between runs."""
    configured = os.environ.get("STRONGROOM_IMAGE_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "strongroom-image"


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps([FORMAT, *parts]).encode()).hexdigest()[:16]


def missing() -> str | None:
    """Why the Debian base cannot be built here (with the install hint), or None if it can."""
    if os.geteuid() != 0:
        return "debootstrap needs root"
    if shutil.which("debootstrap") is None:
        return "debootstrap is not installed (apt-get install debootstrap)"
    return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # blocks while another process builds the same artefact
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def rootfs() -> Path:
    """The cached Debian root filesystem tarball, built first if missing (waits for a build in progress)."""
    key = _key(SUITE, MIRROR, sorted(PACKAGES), platform.machine())
    target = cache_dir() / f"debian-{SUITE}-{key}.tar"
    with _locked(target.with_suffix(".lock")):
        if target.exists():
            return target
        _remove_leftovers(target.parent, "sr-debootstrap-")
        reason = missing()
        if reason:
            raise RuntimeError(reason)
        work = Path(tempfile.mkdtemp(prefix="sr-debootstrap-", dir=target.parent))
        try:
            tree = work / "rootfs"
            done = subprocess.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(PACKAGES)}",
                    SUITE,
                    str(tree),
                    MIRROR,
                ],
                capture_output=True,
                check=False,
                timeout=900,
            )
            if done.returncode != 0:
                raise RuntimeError(f"debootstrap failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
            _unmount_under(work)  # a failed debootstrap can leave /proc mounted in the tree
            # Downloaded packages, package lists and documentation are most of the tree and no use in an image.
            for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for entry in (tree / leftover).glob("*.deb" if "archives" in leftover else "*_*"):
                    entry.unlink()
            for docs in ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale"):
                shutil.rmtree(tree / docs, ignore_errors=True)
            partial = work / "rootfs.tar"
            subprocess.run(["tar", "-C", str(tree), "-cf", str(partial), "."], check=True, timeout=300)
            os.replace(partial, target)
        finally:
            _unmount_under(work)
            shutil.rmtree(work, ignore_errors=True)
    return target


def _remove_leftovers(folder: Path, prefix: str) -> None:
    """Delete what a build killed half-way left (called under the lock, so no build is running)."""
    for stale in folder.glob(f"{prefix}*"):
        _unmount_under(stale)
        shutil.rmtree(stale, ignore_errors=True)


def _unmount_under(root: Path) -> None:
    """Unmount anything mounted below `root`, deepest first, so deleting it cannot reach the host's files."""
    prefix = str(root) + "/"
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        points = [line.split()[4] for line in fh if line.split()[4].startswith(prefix)]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _requirements() -> list[str]:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        project = tomllib.load(fh)
    # wheel too: an older setuptools asks for it to build a wheel, and the build has no index to ask.
    return [*project["build-system"]["requires"], "wheel", *project["project"]["dependencies"]]


def wheelhouse() -> Path:
    """The cached wheels of every dependency and build requirement, built first if missing."""
    requirements = _requirements()
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}-{platform.machine()}"
    target = cache_dir() / f"wheels-{tag}-{_key(requirements, tag)}"
    with _locked(target.with_suffix(".lock")):
        if target.is_dir():
            return target
        _remove_leftovers(target.parent, "sr-wheels-")
        work = Path(tempfile.mkdtemp(prefix="sr-wheels-", dir=target.parent))
        try:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "wheel",
                    "--disable-pip-version-check",
                    "--quiet",
                    "--wheel-dir",
                    str(work / "wheels"),
                    *requirements,
                ],
                capture_output=True,
                check=False,
                timeout=900,
            )
            if done.returncode != 0:
                raise RuntimeError(f"pip wheel failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
            os.replace(work / "wheels", target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


if __name__ == "__main__":
    # `.ci/run` starts `rootfs` and `wheels` in the background so they overlap the rest of the suite.
    for what in sys.argv[1:] or ["rootfs", "wheels"]:
        print({"rootfs": rootfs, "wheels": wheelhouse}[what](), flush=True)
