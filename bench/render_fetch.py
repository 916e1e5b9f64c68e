"""The broker-fetch half of bench/render.py: compiling 1,000 secrets per target against an audited read of the same rows.

Run by hand: ``.venv/bin/python bench/render_fetch.py`` (SQLite in a temporary directory). Gates (issues 4
and 13), both against the audited read of the same keys: the chain's rows read from the database, the
visible ones decrypted, and the read's audit event (every value's fingerprint) committed, which is what any
read the broker serves costs and what a compile must cost too, since a compile audits like any read:
- flat: compiling a manifest naming 1,000 secrets of one environment, for each target, at most 1.5x;
- inherited: 1,000 values spread over three levels of inheritance (common <- shared <- production), half
  named as secrets and half reached through `${REFERENCE}`s in clear values, at most 2x the audited read
  of the same three environments' visible rows.
The compile side is the whole service call (`services.compile.compile_manifest`): scope check, manifest
parse and validation, rows, decryption, resolution, lint, rendering, and the audit event with 1,000
fingerprints committed in the same transaction. The bare read (no audit event, no checks) is printed beside
it for reference, to show how much of the ratio the audit trail is.
Interleaved: each round times every side once, back to back, so a burst of load elsewhere hits all of
them; the best round of each is compared. Exit 1 over a limit. `run(...)` returns the figures.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import string
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from broker.config import Settings
from broker.crypto.envelope import secret_aad
from broker.crypto.keyring import Sealed
from broker.db import migrate
from broker.domain.request import Actor, RequestContext
from broker.domain.scopes import Action, Scope
from broker.keys import new_document
from broker.main import build_runtime
from broker.repositories import projects as project_repo
from broker.repositories import secrets as secret_repo
from broker.services import audit as audit_service
from broker.services import auth as auth_service
from broker.services import compile as compile_service
from broker.services import projects as project_service
from broker.services import secrets as secret_service
from broker.services.runtime import Runtime, utcnow

ROWS = 1_000
REPEATS = 21
LIMIT_FLAT = 1.5
LIMIT_INHERITED = 2.0
TARGETS = ("dotenv", "dotenv-export", "env-file", "compose", "json", "yaml", "k8s", "systemd", "kamal")
PROJECT = "benchapp"
# Text every target carries (no quotes, backslashes, control characters, '#' next to '$').
ALPHABET = string.ascii_letters + string.digits + "$@:/._-+= "


@dataclass
class Figures:
    """Best times in seconds: the bare read, the audited one (the gate's baseline), and each target's compile."""

    bare: float
    baseline: float
    targets: dict[str, float]


def _ctx(action: str) -> RequestContext:
    return RequestContext(
        request_id=f"bench-{time.monotonic_ns()}",
        method="POST",
        route=action,
        source_addr="127.0.0.1",
        user_agent="bench",
    )


ADMIN = Actor(
    principal_id=1,
    principal_type="user",
    name="bench",
    token_id=0,
    accessor="bench",
    scopes=(
        Scope(project="*", environments="*", actions=frozenset({Action.READ, Action.WRITE, Action.ADMIN})),
    ),
)


def _value(rng: random.Random) -> str:
    return "v" + "".join(rng.choice(ALPHABET) for _ in range(rng.randint(16, 96))) + "x"


async def _seed(rt: Runtime) -> None:
    """Project with common <- shared <- production and flat (all in `flat`), 1,000 values each layout."""
    rng = random.Random(4)
    assert await auth_service.bootstrap_admin(rt) is not None  # principal 1, the author of the writes
    await project_service.create_project(rt, _ctx("project.create"), ADMIN, slug=PROJECT, description="")
    for slug, parent in (("flat", None), ("common", None), ("shared", "common"), ("production", "shared")):
        await project_service.create_environment(
            rt, _ctx("env.create"), ADMIN, project=PROJECT, slug=slug, parent=parent
        )
    for i in range(ROWS):
        await secret_service.write_secret(
            rt,
            _ctx("w"),
            ADMIN,
            project=PROJECT,
            environment="flat",
            name=f"S{i:04d}",
            value=_value(rng),
            sensitive=True,
            cas=None,
        )
        # Inherited layout: a third at each level, a tenth of them overridden nearer.
        level = ("common", "shared", "production")[i % 3]
        await secret_service.write_secret(
            rt,
            _ctx("w"),
            ADMIN,
            project=PROJECT,
            environment=level,
            name=f"S{i:04d}",
            value=_value(rng),
            sensitive=i % 2 == 1,
            cas=None,
        )
        if i % 10 == 0 and level != "production":
            await secret_service.write_secret(
                rt,
                _ctx("w"),
                ADMIN,
                project=PROJECT,
                environment="production",
                name=f"S{i:04d}",
                value=_value(rng),
                sensitive=i % 2 == 1,
                cas=None,
            )


def flat_manifest() -> str:
    """1,000 secret names."""
    names = "\n".join(f"    - S{i:04d}" for i in range(ROWS))
    return f"project: {PROJECT}\nservice: benchapp\nimage: acme/benchapp\nbuilder:\n  arch: amd64\nregistry: {{username: acme, password: S0001}}\nroles:\n  web:\n    hosts: [192.0.2.10]\nenv:\n  secret:\n{names}\n"


def inherited_manifest() -> str:
    """500 secret names (odd: sensitive) and 500 clear values each referencing one stored value (even)."""
    secret = "\n".join(f"    - S{i:04d}" for i in range(1, ROWS, 2))
    clear = "\n".join(f"    C{i:04d}: https://${{S{i:04d}}}/x" for i in range(0, ROWS, 2))
    return (
        f"project: {PROJECT}\nservice: benchapp\nimage: acme/benchapp\nbuilder:\n  arch: amd64\nregistry: {{username: acme, password: S0001}}\nroles:\n  web:\n    hosts: [192.0.2.10]\n"
        f"lint: {{secret_like: warn}}\nenv:\n  clear:\n{clear}\n  secret:\n{secret}\n"
    )


async def bare(rt: Runtime, environment: str, *, audited: bool = False) -> int:
    """The baseline: the chain's current rows, the visible ones decrypted; `audited` adds the read's audit event."""
    # Audited is what any read the broker serves costs (GET .../resolved without HTTP): every value's
    # fingerprint in the request's event, committed.
    ctx = _ctx("secret.resolve")
    async with rt.engine.begin() as conn:
        row = await project_repo.get_environment(conn, PROJECT, environment)
        assert row is not None
        project_id, env_id = row[0], row[1]
        tree = await project_repo.environment_slugs(conn, project_id)
        chain = []
        cursor: int | None = env_id
        while cursor is not None:
            chain.append(cursor)
            cursor = tree[cursor][1]
        rows = await secret_repo.current_values(conn, chain)
        rank = {e: i for i, e in enumerate(chain)}
        seen: set[str] = set()
        for eid, name, _sensitive, ver, ct, wrapped, kek, *_ in sorted(rows, key=lambda r: rank[r[0]]):
            if name in seen:
                continue
            seen.add(name)
            aad = secret_aad(project_id=project_id, environment_id=eid, name=name, version=ver)
            value = rt.keys.keyring.open(Sealed(ciphertext=ct, wrapped_dek=wrapped, kek_id=kek), aad).decode()
            if audited:
                audit_service.saw_value(
                    rt, ctx, environment=tree[eid][0], name=name, version=ver, value=value
                )
        if audited:
            ctx.about("secret.resolve", project=PROJECT, environment=environment)
            await audit_service.record(conn, rt, ctx)
    return len(seen)


async def cpu_time(fn: Callable[[], Awaitable[object]]) -> float:
    """CPU time of this process (all threads: SQLite runs in one) for one call, with no collection inside."""
    # CPU time, not wall time: other processes on a shared machine move it less, and waiting for the disk,
    # which both sides of a ratio share, not at all. A collection in the middle of one side would be
    # noise, not cost: collect first, then time.
    gc.collect()
    gc.disable()
    try:
        start = time.process_time()
        await fn()
        return time.process_time() - start
    finally:
        gc.enable()


async def measure(rt: Runtime, environment: str, manifest: str) -> Figures:
    """Baselines and per-target compile times for one layout: REPEATS interleaved rounds, best of each."""
    assert await bare(rt, environment) >= ROWS

    def compile_for(target: str) -> Callable[[], Awaitable[object]]:
        async def go() -> object:
            return await compile_service.compile_manifest(
                rt,
                _ctx("compile"),
                ADMIN,
                project=PROJECT,
                environment=environment,
                manifest=manifest,
                targets=[target],
                role=None,
            )

        return go

    sides: dict[str, Callable[[], Awaitable[object]]] = {
        "bare": lambda: bare(rt, environment),
        "audited": lambda: bare(rt, environment, audited=True),
        **{t: compile_for(t) for t in TARGETS},
    }
    for fn in sides.values():  # warm-up
        await fn()
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(REPEATS):
        for name, fn in sides.items():
            times[name].append(await cpu_time(fn))
    best = {name: min(runs) for name, runs in times.items()}
    return Figures(best["bare"], best["audited"], {t: best[t] for t in TARGETS})


async def run_async(directory: Path) -> tuple[Figures, Figures]:
    """Seed a broker database in `directory` and measure both layouts."""
    url = f"sqlite+aiosqlite:///{directory / 'bench.db'}"
    settings = Settings(
        database_url=url, data_dir=directory / "data", keyring=json.dumps(new_document(utcnow(), dev=False))
    )
    rt = build_runtime(settings)
    try:
        await _seed(rt)
        return await measure(rt, "flat", flat_manifest()), await measure(
            rt, "production", inherited_manifest()
        )
    finally:
        await rt.engine.dispose()


def run() -> tuple[Figures, Figures]:
    """(flat, inherited) figures, for bench/render.py to print with its own."""
    with tempfile.TemporaryDirectory() as directory:
        migrate.upgrade(f"sqlite+aiosqlite:///{Path(directory) / 'bench.db'}")  # runs its own event loop
        return asyncio.run(run_async(Path(directory)))


def report(name: str, figures: Figures, limit: float) -> list[str]:
    """Print one layout's figures; return the targets over `limit` (against the audited baseline)."""
    print(f"{name}:" if name == "flat" else f"{name} (3 levels of inheritance, 500 references):")
    print(f"  fetch + decrypt + audit event (the baseline) {figures.baseline * 1e3:8.2f} ms")
    print(
        f"  fetch + decrypt, bare (reference)            {figures.bare * 1e3:8.2f} ms"
        f"  (baseline = {figures.baseline / figures.bare:.2f}x bare)"
    )
    over = []
    for target, seconds in figures.targets.items():
        ratio = seconds / figures.baseline
        print(
            f"  compile {target:<14} {seconds * 1e3:8.2f} ms  ratio {ratio:5.2f} (limit {limit})"
            f"  vs bare {seconds / figures.bare:5.2f}"
        )
        if ratio > limit:
            over.append(f"{name}/{target}")
    return over


def main() -> int:
    """Measure, print, and return 1 if a target is over its limit."""
    flat, inherited = run()
    print(
        f"{ROWS} values, best CPU time of {REPEATS} interleaved rounds; compile = the whole service call, "
        f"audit event included; load average {os.getloadavg()[0]:.2f}"
    )
    over = report("flat", flat, LIMIT_FLAT) + report("inherited", inherited, LIMIT_INHERITED)
    if over:
        print(f"FAIL: over the limit: {', '.join(over)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
