"""`strongroom deploy` to 1 host against 4 hosts, and the SSH round trips it makes per host.

Run by hand, as root: ``.venv/bin/python bench/deploy.py [--rounds 3]``.

It starts the deploy lab of the end-to-end tests (tests/support/deploy_lab.py) with four ssh hosts, each
an sshd on its own loopback address with its own dockerd, a registry with htpasswd auth and a build engine,
plus a real broker (`strongroom-server serve`, embedded SQLite). The lab app is the small FROM-scratch
busybox image of the tests, with a BuildKit build secret and a file health check probed every 0.2 s
(`--health-interval`; docker's whole-second default would put up to a second per host on the path). After a
warm-up deploy to all four hosts (their engines pull the base layers once), each round deploys a new
version to web1 alone and another to web1-web4 (which goes first alternates), timing the whole CLI run:
broker calls, build, push, and the hosts in parallel. Figures are medians over the rounds.

Round trips are counted from the lab's recording ssh shims (the hosts' docker is left unwrapped here):
per host, every process that reaches it (the `ssh-keyscan` of the host key check, each `ssh` session or
master, and `ssh -O exit`); `ssh -G` only reads the local config and is not counted.

All "hosts" run on this machine: their sshd and dockerd share its cores with the deploying CLI, so on a
small or busy machine the 4-host figure grows with CPU contention that separate hosts would not have; the
load average, the phases (build, push, hosts) and the local CPU time are printed to tell the two apart.

Beside each wall time, the per-host critical path: for every host, from the start of its deploy session
to the start of its `ssh -O exit` (the deploy script: env file, pull, run, health wait, retire the old
container). The 4-host wall time is build + push + the slowest host's path; when every host's path grows
with 4 hosts, the hosts are slowed by sharing the cores, not waiting on each other.

Targets (issues 6 and 17): 4 hosts take at most 1.3x the wall time of 1 host; 3 round trips per host
(the master with the host key check and preflight, the deploy session, `ssh -O exit`). Exit status 1 when a
target is missed.
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import yaml  # noqa: E402

from tests.e2e.conftest import BIN, start, stop  # noqa: E402
from tests.support import deploy_lab  # noqa: E402

PROJECT, ENVIRONMENT, SERVICE = "bench", "production", "bench"
RATIO_TARGET = 1.3
PINNED = False
DEFAULT_HEALTH_INTERVAL = 0.2
HEALTH_INTERVAL = DEFAULT_HEALTH_INTERVAL
TRIPS_TARGET = 3


def manifest(lab: deploy_lab.Lab, hosts: list[str], pinned: bool = False) -> str:
    """The lab app's strongroom.yml for `hosts` (with their host key fingerprints pinned, if asked)."""
    ssh: dict[str, object] = {"port": lab.ssh_port}
    if pinned:
        ssh["host_keys"] = {h: [lab.hosts[h].ssh.fingerprint] for h in hosts}
    return str(
        yaml.safe_dump(
            {
                "project": PROJECT,
                "service": SERVICE,
                "image": lab.image,
                "registry": {
                    "server": lab.registry.server,
                    "username": lab.registry.username,
                    "password": "REGISTRY_PASSWORD",
                },
                "builder": {"context": ".", "dockerfile": "Dockerfile", "secrets": ["BUILD_TOKEN"]},
                "roles": {"web": {"hosts": hosts, "options": {"network": "host"}}},
                "ssh": ssh,
                "healthcheck": {"cmd": deploy_lab.HEALTH_CMD, "interval": HEALTH_INTERVAL, "timeout": 30},
                "env": {"clear": {"APP_MODE": "e2e"}, "secret": ["APP_SECRET"]},
            },
            sort_keys=False,
        )
    )


def round_trips(
    lab: deploy_lab.Lab, calls: list[deploy_lab.Call], hosts: list[str]
) -> dict[str, Counter[str]]:
    """Per host, the processes that reached it, by kind."""
    by_address = {lab.hosts[h].ssh.address: h for h in hosts}
    found: dict[str, Counter[str]] = {h: Counter() for h in hosts}
    for call in calls:
        if call.where != "local":
            continue
        if call.program == "ssh-keyscan":
            for host in {by_address[a] for a in call.argv if a in by_address}:
                found[host]["keyscan"] += 1
        elif call.program == "ssh" and "-G" not in call.argv:
            for host in {a for a in call.argv if a in found}:
                if "-O" in call.argv:
                    found[host]["ssh -O " + call.argv[call.argv.index("-O") + 1]] += 1
                elif any(a.startswith("ControlMaster=yes") for a in call.argv):
                    found[host]["master"] += 1
                else:
                    found[host]["session"] += 1
    return found


def phases(calls: list[deploy_lab.Call]) -> dict[str, float]:
    """Seconds from the build's start to the push's, from the push's to the first deploy session, and from
    there to the last `ssh -O exit` (the hosts, in parallel), from the start times the shims recorded.

    The master connections (host key checks and preflight) open before the build, so they are not in
    the hosts phase: it is the deploy sessions alone."""
    local = [c for c in calls if c.where == "local"]
    build = next(c.at_ns for c in local if c.program == "docker" and "build" in c.argv)
    push = next(c.at_ns for c in local if c.program == "docker" and "push" in c.argv)
    last = max(c.at_ns for c in local if c.program == "ssh" and "-O" in c.argv)
    # The deploy script sessions (neither master nor -G nor -O): how far apart the hosts' ones started.
    sessions = [
        c.at_ns
        for c in local
        if c.program == "ssh"
        and not {"-G", "-O"} & set(c.argv)
        and not any(a.startswith("ControlMaster=yes") for a in c.argv)
    ]
    return {
        "build": (push - build) / 1e9,
        "push": (min(sessions) - push) / 1e9,
        "hosts": (last - min(sessions)) / 1e9,
        "skew": (max(sessions) - min(sessions)) / 1e9,
    }


def host_paths(calls: list[deploy_lab.Call], hosts: list[str]) -> dict[str, float]:
    """Per host, seconds from the start of its deploy session to the start of its `ssh -O exit`."""
    local = [c for c in calls if c.where == "local" and c.program == "ssh" and "-G" not in c.argv]
    out: dict[str, float] = {}
    for host in hosts:
        mine = [c for c in local if host in c.argv]
        session = [
            c.at_ns
            for c in mine
            if "-O" not in c.argv and not any(a.startswith("ControlMaster=yes") for a in c.argv)
        ]
        exits = [c.at_ns for c in mine if "-O" in c.argv]
        if session and exits:
            out[host] = (max(exits) - min(session)) / 1e9
    return out


# (wall seconds, machine-wide busy CPU seconds) of each deploy, in the order they ran.
MACHINE_BUSY: list[tuple[float, float]] = []


def busy_seconds() -> float:
    """CPU seconds every core of this machine has spent not idle since boot (from /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(f) for f in fields]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def deploy(
    lab: deploy_lab.Lab, env: dict[str, str], workdir: Path, version: str, hosts: list[str]
) -> tuple[float, list[deploy_lab.Call], float]:
    """One `strongroom deploy` of `version` to `hosts`: wall seconds, recorded calls, CPU seconds of the CLI
    and the processes it started here (ssh clients, docker CLI; not the hosts' sshd and dockerd)."""
    deploy_lab.app_context(workdir, version)
    (workdir / "strongroom.yml").write_text(manifest(lab, hosts, PINNED))
    lab.forget_calls()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy_before = busy_seconds()
    started = time.perf_counter()
    done = subprocess.run(
        [str(BIN / "strongroom"), "deploy", "-e", ENVIRONMENT, "--version", version],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    MACHINE_BUSY.append((elapsed, busy_seconds() - busy_before))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"deploy {version} to {','.join(hosts)} failed:\n{done.stdout}\n{done.stderr}")
    return elapsed, lab.calls(), cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of (1 host, 4 hosts) deploys (default 3)"
    )
    parser.add_argument(
        "--pinned",
        action="store_true",
        help="pin the hosts' key fingerprints in the manifest (not known_hosts)",
    )
    parser.add_argument(
        "--health-interval",
        type=float,
        default=DEFAULT_HEALTH_INTERVAL,
        help=f"seconds between health probes (default {DEFAULT_HEALTH_INTERVAL})",
    )
    args = parser.parse_args()
    global PINNED, HEALTH_INTERVAL  # noqa: PLW0603 - one setting for the whole run
    PINNED = args.pinned
    HEALTH_INTERVAL = args.health_interval
    reason = deploy_lab.missing()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="strongroom-bench-deploy-"))
    started = time.perf_counter()
    try:
        with deploy_lab.lab(hosts=4, extras=False, record_hosts=False) as lab:
            lab_seconds = time.perf_counter() - started
            broker = start(root / "data", root / "home" / ".config", root / "broker.log")
            try:
                client_secret = (broker.data_dir / "bootstrap-admin.secret").read_text().strip()
                token = httpx.post(
                    f"{broker.url}/v1/auth/token",
                    json={"client_id": "admin", "client_secret": client_secret, "ttl": 3600},
                ).json()["token"]
                with httpx.Client(base_url=broker.url, headers={"Authorization": f"Bearer {token}"}) as http:
                    http.post("/v1/projects", json={"slug": PROJECT}).raise_for_status()
                    base = f"/v1/projects/{PROJECT}/environments"
                    http.post(base, json={"slug": ENVIRONMENT, "parent": None}).raise_for_status()
                    for key, value in {
                        "APP_SECRET": secrets.token_urlsafe(24),
                        "BUILD_TOKEN": secrets.token_urlsafe(24),
                        "REGISTRY_PASSWORD": lab.registry.password,
                    }.items():
                        http.put(
                            f"{base}/{ENVIRONMENT}/secrets/{key}", json={"value": value}
                        ).raise_for_status()
                env = {
                    **broker.env,
                    **lab.env(),
                    "PATH": f"{lab.shims}:{broker.env['PATH']}",
                    "STRONGROOM_URL": broker.url,
                    "STRONGROOM_TOKEN": token,
                    "HOME": str(root),
                }
                workdir = root / "app"
                all_hosts = list(lab.hosts)
                warm, _, _ = deploy(lab, env, workdir, "warmup", all_hosts)
                one: list[float] = []
                four: list[float] = []
                split: dict[str, list[dict[str, float]]] = {"one": [], "four": []}
                paths: dict[str, list[dict[str, float]]] = {"one": [], "four": []}
                cpu: dict[str, list[float]] = {"one": [], "four": []}
                machine: dict[str, list[float]] = {"one": [], "four": []}
                trips: dict[str, Counter[str]] = {}
                for r in range(args.rounds):
                    order = [("one", ["web1"]), ("four", all_hosts)]
                    for label, hosts in order if r % 2 == 0 else order[::-1]:
                        seconds, calls, cpu_seconds = deploy(lab, env, workdir, f"r{r}-{label}", hosts)
                        cpu[label].append(cpu_seconds)
                        machine[label].append(MACHINE_BUSY[-1][1])
                        (one if label == "one" else four).append(seconds)
                        split[label].append(phases(calls))
                        paths[label].append(host_paths(calls, hosts))
                        if label == "four":
                            trips = round_trips(lab, calls, hosts)
            finally:
                stop(broker)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    ratio = statistics.median(four) / statistics.median(one)
    most = max(sum(c.values()) for c in trips.values())
    print(
        f"host keys: {'pinned in the manifest' if PINNED else 'known_hosts'}; health probe every {HEALTH_INTERVAL:g} s"
    )
    print(
        f"load {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores; lab up in {lab_seconds:.1f} s; warm-up {warm:.1f} s"
    )
    print(f"deploy to 1 host : median {statistics.median(one):.2f} s  ({', '.join(f'{s:.2f}' for s in one)})")
    print(
        f"deploy to 4 hosts: median {statistics.median(four):.2f} s  ({', '.join(f'{s:.2f}' for s in four)})"
    )
    for label, count in (("one", 1), ("four", 4)):
        medians = {k: statistics.median(p[k] for p in split[label]) for k in ("build", "push", "hosts")}
        print(f"  {count} host(s), medians: " + ", ".join(f"{k} {v:.2f} s" for k, v in medians.items()))
    for label, walls, count in (("one", one, "1 host"), ("four", four, "4 hosts")):
        slowest = statistics.median(max(p.values()) for p in paths[label])
        every = sorted(statistics.median(p[h] for p in paths[label]) for h in paths[label][0])
        print(
            f"  critical path per host, {count}: slowest {slowest:.2f} s "
            f"(each host, medians: {', '.join(f'{v:.2f}' for v in every)}) beside wall "
            f"{statistics.median(walls):.2f} s"
        )
    hosts_ratio = statistics.median(p["hosts"] for p in split["four"]) / statistics.median(
        p["hosts"] for p in split["one"]
    )
    print(f"  the hosts phase alone: 4/1 = {hosts_ratio:.2f}x")
    skew = statistics.median(p["skew"] for p in split["four"])
    print(f"  the 4 hosts' deploy sessions started within {skew * 1000:.0f} ms of each other (median)")
    print(
        f"  CPU of the CLI and its local children: 1 host {statistics.median(cpu['one']):.2f} s, "
        f"4 hosts {statistics.median(cpu['four']):.2f} s (the hosts' sshd and dockerd share the same cores)"
    )
    cores = os.cpu_count() or 1
    for label, walls in (("one", one), ("four", four)):
        busy = statistics.median(machine[label])
        print(
            f"  whole machine, {label} host(s): {busy:.2f} CPU s busy in {statistics.median(walls):.2f} s "
            f"({busy / (statistics.median(walls) * cores):.0%} of {cores} cores; CPU-bound floor "
            f"{busy / cores:.2f} s)"
        )
    ratio_ok = ratio <= RATIO_TARGET
    print(f"ratio 4/1: {ratio:.2f}x (target <= {RATIO_TARGET}x): {'ok' if ratio_ok else 'MISSED'}")
    for host, kinds in sorted(trips.items()):
        detail = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
        print(f"round trips {host}: {sum(kinds.values())} ({detail})")
    trips_ok = most <= TRIPS_TARGET
    print(
        f"round trips per host: at most {most} (target <= {TRIPS_TARGET}): {'ok' if trips_ok else 'MISSED'}"
    )
    return 0 if ratio_ok and trips_ok else 1


if __name__ == "__main__":
    sys.exit(main())
