"""Compiling 1,000 secrets per target: what rendering adds, and the whole compile against an audited read (issues 4, 13).

Run by hand: ``.venv/bin/python bench/render.py``. The gates: compiling 1,000 secrets for each target costs
at most 1.5x the audited read of the same keys (a compile must audit like any read); with three levels of
inheritance and references at most 2x. Two tables, all figures from the same run:
- the renderer half (this file): the baseline is the bare decryption of 1,000 values already in memory
  (unwrap the DEK, decrypt the value: two AES-256-GCM calls per row, as bench/crypto.py), and each target's
  figure is baseline + render, so the ratio shows what rendering adds (kamal needs a manifest, so it is
  measured in the second table only);
- the whole compile (bench/render_fetch.py), the gates above: the broker's service call against the same
  rows read from SQLite, decrypted and their read's audit event committed, flat and with three levels of
  inheritance and 500 references, every target; the bare read (no audit event) is printed for reference.
Interleaved repeats, best of each side; exits 1 if a target is over its limit.
"""

from __future__ import annotations

import os
import random
import string
import sys
import time
import timeit
from collections.abc import Callable

import render_fetch  # bench/render_fetch.py, beside this file
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.renderers.base import Entry, RenderOptions
from broker.renderers.registry import get_renderer

LIMIT = 1.5
ROWS = 1_000
REPEATS = 15
NUMBER = 3
TARGETS = ("dotenv", "dotenv-export", "env-file", "compose", "json", "yaml", "k8s", "systemd")
OPTIONS = RenderOptions(environment="production", service="myapp")
# What every target carries: URL- and token-like text with `$`, `#`, `@`, `:`, `/` and spaces inside.
ALPHABET = string.ascii_letters + string.digits + "$#@:/._-+= "


def make_rows(rng: random.Random) -> list[tuple[str, bytes, bytes, bytes, bytes, bool]]:
    """ROWS sealed values: (name, wrapped-DEK nonce+body, value nonce+body, KEK, AAD, sensitive)."""
    kek = os.urandom(32)
    rows = []
    for i in range(ROWS):
        value = "v" + "".join(rng.choice(ALPHABET) for _ in range(rng.randint(16, 96))) + "x"
        dek = os.urandom(32)
        aad = f"bench/{i}".encode()
        n1, n2 = os.urandom(12), os.urandom(12)
        wrapped = n1 + AESGCM(kek).encrypt(n1, dek, aad)
        sealed = n2 + AESGCM(dek).encrypt(n2, value.encode(), aad)
        rows.append((f"SECRET_{i:04d}", wrapped, sealed, kek, aad, i % 2 == 0))
    return rows


def decrypt_all(rows: list[tuple[str, bytes, bytes, bytes, bytes, bool]]) -> list[Entry]:
    """The baseline's work: unwrap each DEK, decrypt each value, build the entries."""
    kek_aead = AESGCM(rows[0][3])
    entries = []
    for name, wrapped, sealed, _kek, aad, sensitive in rows:
        dek = kek_aead.decrypt(wrapped[:12], wrapped[12:], aad)
        value = AESGCM(dek).decrypt(sealed[:12], sealed[12:], aad).decode()
        entries.append(Entry(name, value, sensitive=sensitive))
    return entries


def baseline_call(rows: list[tuple[str, bytes, bytes, bytes, bytes, bool]]) -> Callable[[], object]:
    """One baseline run: fetch (here: rows already in memory) and decrypt bare."""
    return lambda: decrypt_all(rows)


def pipeline_call(
    rows: list[tuple[str, bytes, bytes, bytes, bytes, bool]], target: str
) -> Callable[[], object]:
    """One compile run: fetch and decrypt as the baseline does, then render for `target`."""
    renderer = get_renderer(target)
    return lambda: renderer.render(decrypt_all(rows), options=OPTIONS)


def render_call(entries: list[Entry], target: str) -> Callable[[], object]:
    """Rendering alone, on entries already decrypted."""
    renderer = get_renderer(target)
    return lambda: renderer.render(entries, options=OPTIONS)


def main() -> int:
    """Print per-target figures and ratios; return 1 if any target is over LIMIT."""
    rows = make_rows(random.Random(4))
    entries = decrypt_all(rows)
    for target in TARGETS:  # every row must be carried, or the figures would flatter a refusal
        (file,) = get_renderer(target).render(entries, options=OPTIONS)
        assert file.content
    base_fn = baseline_call(rows)
    pipe_fns = {t: pipeline_call(rows, t) for t in TARGETS}
    render_fns = {t: render_call(entries, t) for t in TARGETS}
    base_runs: list[float] = []
    pipe_runs: dict[str, list[float]] = {t: [] for t in TARGETS}
    render_runs: dict[str, list[float]] = {t: [] for t in TARGETS}
    # Interleaved: every repeat times the baseline and every target back to back, so a burst of
    # load elsewhere on the machine hits both sides; the best repeat of each is compared. CPU time of
    # this process, not wall time: on a shared machine other processes' turns would count otherwise.
    for _ in range(REPEATS):
        base_runs.append(timeit.timeit(base_fn, number=NUMBER, timer=time.process_time) / NUMBER)
        for target in TARGETS:
            pipe_runs[target].append(
                timeit.timeit(pipe_fns[target], number=NUMBER, timer=time.process_time) / NUMBER
            )
            render_runs[target].append(
                timeit.timeit(render_fns[target], number=NUMBER, timer=time.process_time) / NUMBER
            )
    base = min(base_runs)
    print(
        f"{ROWS} rows; best CPU time of {REPEATS} repeats x {NUMBER} calls; load average {os.getloadavg()[0]:.2f}"
    )
    print(f"baseline = unwrap DEK + decrypt value (AES-256-GCM x2 per row): {base * 1e3:.2f} ms")
    print(f"{'target':<14} {'compile':>9} {'render':>9} {'ratio':>6}  (limit {LIMIT})")
    failed = []
    for target in TARGETS:
        total = min(pipe_runs[target])
        ratio = total / base
        print(f"{target:<14} {total * 1e3:7.2f}ms {min(render_runs[target]) * 1e3:7.2f}ms {ratio:6.2f}")
        if ratio > LIMIT:
            failed.append(target)
    print()
    flat, inherited = render_fetch.run()
    print(
        f"whole compile: {render_fetch.ROWS} values, best CPU time of {render_fetch.REPEATS} interleaved rounds"
    )
    failed += render_fetch.report("flat", flat, render_fetch.LIMIT_FLAT)
    failed += render_fetch.report("inherited", inherited, render_fetch.LIMIT_INHERITED)
    if failed:
        print(f"FAIL: over the limit: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
