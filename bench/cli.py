"""CLI start-up and `run` cost against `python -c pass`, with the same interpreter, in paired runs.

Run by hand: ``.venv/bin/python bench/cli.py [--rounds 40]``.

It starts a real broker (`strongroom-server serve` on a free loopback port, embedded SQLite in a temporary
data directory), logs in as the bootstrap admin with the CLI (a cached session, as a developer has), and
stores 50 secrets in `bench/production`. Then, for each measured command, it alternates the command with
`python -c pass` (which one goes first alternates too) for `--rounds` pairs and prints the median wall time
of each, the median of the per-pair ratios, and the peak memory: the `ru_maxrss` that `wait4` reports for
the child, which on Linux includes the high-water mark of the Python process that `run` exec'd away. The
memory is measured through a tiny launcher (`python -S`, which forks and execs the command and waits for
it), because a child forked from this bench process would report the bench's own high-water mark.

Targets (issue 5): `--version` <= 2x, `--help` <= 5x, `run -e ENV -- true` fetching 50 secrets <= 6x
(stretch 4x), peak memory of `run` <= 30 MiB. Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent
STRONGROOM = str(BIN / "strongroom")
BASELINE = [sys.executable, "-c", "pass"]
PROJECT, ENVIRONMENT, SECRETS = "bench", "production", 50
MIB = 1024 * 1024


@dataclass
class Figures:
    """One command's paired measurements."""

    label: str
    seconds: list[float]
    baseline: list[float]
    maxrss_kib: list[int]
    baseline_rss_kib: list[int] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return statistics.median(c / b for c, b in zip(self.seconds, self.baseline, strict=True))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Forks, execs argv[1:] in the child, waits with wait4 and prints the child's ru_maxrss (KiB) on stderr.
LAUNCHER = (
    "import os, sys\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.execv(sys.argv[1], sys.argv[1:])\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "sys.stderr.write(f'maxrss={usage.ru_maxrss}\\n')\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def measure(argv: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one run of argv; output discarded, exit status checked."""
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{argv[:3]}... exited {done.returncode}: {done.stderr.decode(errors='replace')}")
    return elapsed


def peak_rss_kib(argv: list[str], env: dict[str, str]) -> int:
    """Peak RSS (KiB) of one run of argv, through the launcher (see the module docstring)."""
    done = subprocess.run(
        [sys.executable, "-S", "-c", LAUNCHER, *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    lines = done.stderr.decode(errors="replace").splitlines()
    if done.returncode != 0 or not lines or not lines[-1].startswith("maxrss="):
        raise SystemExit(f"{argv[:3]}... exited {done.returncode}: {lines}")
    return int(lines[-1].removeprefix("maxrss="))


def paired(label: str, argv: list[str], env: dict[str, str], rounds: int) -> Figures:
    """Alternate argv with the baseline for `rounds` pairs (after one warm-up of each); then its memory."""
    measure(argv, env)
    measure(BASELINE, env)
    figures = Figures(label, [], [], [])
    for i in range(rounds):
        order = [(argv, True), (BASELINE, False)]
        if i % 2:
            order.reverse()
        for command, is_candidate in order:
            seconds = measure(command, env)
            (figures.seconds if is_candidate else figures.baseline).append(seconds)
    figures.maxrss_kib = [peak_rss_kib(argv, env) for _ in range(5)]
    figures.baseline_rss_kib = [peak_rss_kib(BASELINE, env) for _ in range(5)]
    return figures


class Broker:
    """A `strongroom-server serve` in a temporary directory."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = root / "data"
        self.env = {
            "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(root / "home"),
            "XDG_CONFIG_HOME": str(root / "home" / ".config"),
            "STRONGROOM_DATA_DIR": str(self.data),
            "LANG": "C.UTF-8",
            # A work tree measures its own code: PYTHONPATH wins over the venv's editable install.
            **({"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}),
        }
        self.log = (root / "broker.log").open("wb")
        self.proc = subprocess.Popen(
            [str(BIN / "strongroom-server"), "serve", "--port", str(self.port)],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit("the broker exited; see its log")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", "/up")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("the broker did not come up")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def api(self, method: str, path: str, token: str, body: object) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request(
            method,
            path,
            body=json.dumps(body),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        response.read()
        if response.status >= 300:
            raise SystemExit(f"{method} {path}: HTTP {response.status}")


def seed(broker: Broker) -> None:
    """Log in with the CLI (cached session) and store 50 secrets of about 40 bytes."""
    secret_file = broker.data / "bootstrap-admin.secret"
    subprocess.run(
        [STRONGROOM, "login", "--url", broker.url, "--client-id", "admin", "--secret-file", str(secret_file)],
        env=broker.env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    cache = Path(broker.env["XDG_CONFIG_HOME"]) / "strongroom" / "credentials.json"
    token = json.loads(cache.read_text())["token"]
    broker.api("POST", "/v1/projects", token, {"slug": PROJECT})
    broker.api("POST", f"/v1/projects/{PROJECT}/environments", token, {"slug": ENVIRONMENT})
    base = f"/v1/projects/{PROJECT}/environments/{ENVIRONMENT}/secrets"
    for i in range(SECRETS):
        broker.api("PUT", f"{base}/SECRET_{i:02d}", token, {"value": secrets.token_urlsafe(30)})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30, help="paired runs per command (default 30)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="strongroom-bench-cli-"))
    broker = Broker(root)
    try:
        seed(broker)
        env = broker.env
        results = [
            (paired("strongroom --version", [STRONGROOM, "--version"], env, args.rounds), 2.0, None),
            (paired("strongroom --help", [STRONGROOM, "--help"], env, args.rounds), 5.0, None),
            (
                paired(
                    f"strongroom run -e {ENVIRONMENT} -- true ({SECRETS} secrets)",
                    [STRONGROOM, "run", "-p", PROJECT, "-e", ENVIRONMENT, "--", "true"],
                    env,
                    args.rounds,
                ),
                6.0,
                4.0,
            ),
        ]
        # The same with a profile config file, which costs a TOML parse (the target applies as well).
        config = Path(env["XDG_CONFIG_HOME"]) / "strongroom" / "config.toml"
        config.write_text(f'[profiles.default]\nurl = "{broker.url}"\nproject = "{PROJECT}"\n')
        results.append(
            (
                paired(
                    "  the same with a config.toml (profile, -p from it)",
                    [STRONGROOM, "run", "-e", ENVIRONMENT, "--", "true"],
                    env,
                    args.rounds,
                ),
                6.0,
                4.0,
            )
        )
    finally:
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"python: {sys.executable} ({sys.version.split()[0]}); {args.rounds} paired rounds; load {os.getloadavg()[0]:.2f}"
    )
    print(f"{'command':<52} {'median':>9} {'baseline':>9} {'ratio':>6} {'target':>7} {'peak RSS':>9}")
    ok = True
    for figures, target, stretch in results:
        ratio = figures.ratio
        peak = max(figures.maxrss_kib) / 1024
        met = ratio <= target
        ok &= met
        verdict = "ok" if met else "MISSED"
        if stretch is not None and met:
            verdict += " (stretch met)" if ratio <= stretch else f" (stretch {stretch:g}x missed)"
        print(
            f"{figures.label:<52} {statistics.median(figures.seconds) * 1000:>7.1f}ms "
            f"{statistics.median(figures.baseline) * 1000:>7.1f}ms {ratio:>5.2f}x {target:>6.1f}x "
            f"{peak:>7.1f}MiB  {verdict}"
        )
    run_peak = max(*results[2][0].maxrss_kib, *results[3][0].maxrss_kib) * 1024
    memory_ok = run_peak <= 30 * MIB
    ok &= memory_ok
    print(f"peak memory of python -c pass: {max(results[2][0].baseline_rss_kib) / 1024:.1f} MiB")
    print(
        f"peak memory of run: {run_peak / MIB:.1f} MiB (target <= 30 MiB): {'ok' if memory_ok else 'MISSED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
