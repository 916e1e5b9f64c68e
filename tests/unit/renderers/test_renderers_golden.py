"""Golden files for every target, for a Rails app deployed with Kamal (catalogue F, proof).

The values are realistic in shape and fake: a DATABASE_URL whose password holds `$` and `#`, a
multi-line PEM key, clear FRONTEND_URL and RAILS_ENV. A target that cannot carry a value writes
the refusal message to `refusals.txt` beside its output and renders the rest. Regenerate after a
deliberate change with STRONGROOM_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from broker.renderers.base import Entry, RenderError, RenderOptions, find_problems
from broker.renderers.registry import get_renderer
from tests.support import render_oracles as oracles

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("STRONGROOM_UPDATE_GOLDEN") == "1"
OPTIONS = RenderOptions(environment="production", service="myapp")

SSL_PRIVATE_KEY = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n"
    "MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu\n"
    "NMoSfm76oqFvAp8Gy0iz5sxjZmSnXyCdPEovGhLa0VzMaQ8s+CLOyS56YyCFGeJZ\n"
    "-----END PRIVATE KEY-----\n"
)

APP = [
    Entry(
        "SECRET_KEY_BASE",
        "6f1c3b0e9a2d4c8b7e5f0a1d2c3b4a5968778695a4b3c2d1e0f9a8b7c6d5e4f3" * 2,
        sensitive=True,
    ),
    Entry("RAILS_MASTER_KEY", "0123456789abcdef0123456789abcdef", sensitive=True),
    Entry("DATABASE_URL", "postgres://myapp:s3cr$t#pa55@db.internal:5432/myapp_production", sensitive=True),
    Entry("KAMAL_REGISTRY_PASSWORD", "dckr_pat_Zx9$Qw#7'lk", sensitive=True),
    Entry("FRONTEND_URL", "https://app.example.com", sensitive=False),
    Entry("RAILS_ENV", "production", sensitive=False),
    Entry("SSL_PRIVATE_KEY", SSL_PRIVATE_KEY, sensitive=True),
]

TARGETS = ("dotenv", "dotenv-export", "env-file", "compose", "json", "yaml", "k8s", "systemd")


def _k8s(content: bytes) -> dict[str, str]:
    config_map, secret = yaml.safe_load_all(content)
    return dict(config_map["data"]) | {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def _python_dotenv(content: bytes, tmp: Path) -> dict[str, str | None]:
    path = tmp / "golden.env"
    path.write_bytes(content)
    return oracles.python_dotenv(path, interpolate=True)


# In-process readers (the property tests also run the shells, Node, Ruby and docker).
READERS: dict[str, Callable[[bytes, Path], object]] = {
    "dotenv": _python_dotenv,
    "env-file": lambda c, _t: dict(oracles.docker_env_file(c)),
    "compose": lambda c, _t: oracles.compose_env_file(c),
    "json": lambda c, _t: json.loads(c),
    "yaml": lambda c, _t: yaml.safe_load(c),
    "k8s": lambda c, _t: _k8s(c),
    "systemd": lambda c, _t: oracles.systemd_env_file(c),
}


def check(path: Path, content: bytes) -> None:
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    assert path.exists(), f"missing golden file {path} (run with STRONGROOM_UPDATE_GOLDEN=1)"
    assert content == path.read_bytes(), f"{path} differs (run with STRONGROOM_UPDATE_GOLDEN=1 and review)"


@pytest.mark.parametrize("target", TARGETS)
def test_golden(target: str, tmp_path: Path) -> None:
    renderer = get_renderer(target)
    problems = find_problems(renderer, APP, options=OPTIONS)
    refused = {p.key for p in problems}
    (file,) = renderer.render([e for e in APP if e.name not in refused], options=OPTIONS)
    check(GOLDEN / target / file.path, file.content)
    refusals = "".join(f"{p.message}\n" for p in problems)
    check(GOLDEN / target / "refusals.txt", refusals.encode())
    if problems:
        with pytest.raises(RenderError):
            renderer.render(APP, options=OPTIONS)
    for entry in APP:  # no value leaks into a refusal message
        assert entry.value not in refusals
    if target in READERS:
        assert READERS[target](file.content, tmp_path) == {
            e.name: e.value for e in APP if e.name not in refused
        }
