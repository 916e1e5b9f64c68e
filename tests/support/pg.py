"""A throwaway PostgreSQL cluster started from the installed binaries, on a free loopback port."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_port


def find_bindir() -> Path | None:
    """The newest installed PostgreSQL bin directory holding initdb and pg_ctl."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists() and Path(candidate, "pg_ctl").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


@dataclass
class Cluster:
    """A running cluster; `url(db)` gives an asyncpg URL."""

    bindir: Path
    port: int
    datadir: Path
    run_as: list[str]

    def url(self, db: str = "postgres") -> str:
        """SQLAlchemy async URL for database `db`."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{db}"

    def psql(self, sql: str, db: str = "postgres") -> str:
        """Run one SQL statement with psql and return its output."""
        out = subprocess.run(
            [
                *self.run_as,
                str(self.bindir / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                db,
                "-v",
                "ON_ERROR_STOP=1",
                "-Atq",
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout


@contextlib.contextmanager
def cluster(*, durable: bool = False) -> Iterator[Cluster]:
    """Start a cluster with trust auth on loopback only; stop it and delete it afterwards.

    Tests run without fsync (nothing to keep); `durable` keeps PostgreSQL's defaults (fsync,
    full_page_writes, synchronous_commit on), for benchmarks whose figures must be a production's."""
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL binaries (initdb, pg_ctl) are not installed")
    root = Path(tempfile.mkdtemp(prefix="strongroom-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        # initdb refuses to run as root: run the cluster as the postgres user.
        shutil.chown(root, "postgres", "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    datadir = root / "data"
    subprocess.run(
        [
            *run_as,
            str(bindir / "initdb"),
            "-D",
            str(datadir),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
    )
    # Chosen right before the server binds it, not before initdb: the seconds initdb takes on a loaded
    # machine were a window for another xdist worker's server to take the same port.
    port = free_port()
    subprocess.run(
        [
            *run_as,
            str(bindir / "pg_ctl"),
            "-D",
            str(datadir),
            "-w",
            "-t",
            "300",  # pg_ctl's own 60 s wait for the server can run out on a loaded machine
            "-l",
            str(root / "log"),
            "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200"
            # checkpoint_timeout=1d: checkpoints come when a test asks (CHECKPOINT), never on a timer that
            # could recycle the WAL segments a test has listed and is about to read (test_at_rest.py); a
            # durable cluster (benchmarks) keeps a production's timer.
            + (
                ""
                if durable
                else " -c fsync=off -c full_page_writes=off -c synchronous_commit=off -c checkpoint_timeout=1d"
            ),
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield Cluster(bindir=bindir, port=port, datadir=datadir, run_as=run_as)
    finally:
        subprocess.run(
            [*run_as, str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "-w", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)
