"""`strongroom export` and `strongroom compile` accept and refuse the same values, as docs/targets.md says.

A real broker process holds values with a NUL character (and a plain one beside them). For every target
both commands share, both must either write a file whose consumer reads back exactly the stored values
(json: a JSON parser; yaml: PyYAML and Ruby's Psych, a YAML reader apps use; k8s: the Secret's base64 data),
or both refuse naming the key, the target and an alternative; with `export --only` as without it.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cli.commands.export import FORMATS
from tests.e2e.conftest import BrokerProcess

pytestmark = pytest.mark.e2e

VALUES = {"NUL_SECRET": "before\x00after", "NUL_END": "trailing\x00", "PLAIN": "p@ss$word#1 'q' \"d\""}
CARRIED = ("json", "yaml", "k8s")  # docs/targets.md: these carry a NUL; every env-style target refuses it


def _psych(text: str) -> object:
    """Ruby's YAML reader (Psych, as Rails apps load YAML), through JSON; None when Ruby is missing."""
    if shutil.which("ruby") is None:
        return None
    script = "require 'yaml'; require 'json'; print JSON.generate(YAML.safe_load(STDIN.read))"
    done = subprocess.run(["ruby", "-e", script], input=text.encode(), capture_output=True, check=True)
    return json.loads(done.stdout)


def read_back(target: str, text: str) -> dict[str, str]:
    """The values a consumer reads from the file."""
    if target == "json":
        return dict(json.loads(text))
    if target == "yaml":
        got = dict(yaml.safe_load(text))
        psych = _psych(text)
        assert psych is None or psych == got
        return got
    config_map, secret = yaml.safe_load_all(text)
    return dict(config_map["data"]) | {
        k: base64.b64decode(v, validate=True).decode() for k, v in secret["data"].items()
    }


def setup(broker: BrokerProcess, tmp_path: Path) -> Path:
    secret_file = broker.data_dir / "bootstrap-admin.secret"
    out = broker.cli("login", "--url", broker.url, "--client-id", "admin", "--secret-file", str(secret_file))
    assert out.returncode == 0, out.stderr
    assert broker.cli("projects", "create", "nulapp").returncode == 0
    assert broker.cli("envs", "create", "-p", "nulapp", "production").returncode == 0
    for name, value in VALUES.items():
        out = broker.cli("secrets", "set", "-p", "nulapp", "-e", "production", name, input=value.encode())
        assert out.returncode == 0, out.stderr
    manifest = tmp_path / "strongroom.yml"
    manifest.write_text(f"project: nulapp\nservice: nulapp\nenv:\n  secret: [{', '.join(VALUES)}]\n")
    return manifest


def test_export_and_compile_agree_on_nul_values(broker: BrokerProcess, tmp_path: Path) -> None:
    manifest = setup(broker, tmp_path)
    env = ("-p", "nulapp", "-e", "production")
    for target in FORMATS:
        compiled_dir = tmp_path / "compiled" / target
        compiled = broker.cli("compile", *env, "-t", target, "-f", str(manifest), "-o", str(compiled_dir))
        exports = []
        for only in ((), ("--only", ",".join(VALUES))):
            out_file = tmp_path / "exported" / f"{target}{len(only)}"
            out_file.parent.mkdir(parents=True, exist_ok=True)
            exports.append(
                (broker.cli("export", *env, "--format", target, *only, "--out", str(out_file)), out_file)
            )
        if target in CARRIED:
            assert compiled.returncode == 0, (target, compiled.stderr)
            (written,) = [p for p in compiled_dir.rglob("*") if p.is_file()]
            assert read_back(target, written.read_text()) == VALUES, target
            for done, out_file in exports:
                assert done.returncode == 0, (target, done.stderr)
                assert read_back(target, out_file.read_text()) == VALUES, target
        else:
            assert compiled.returncode != 0, target
            assert f"the {target} target cannot carry it" in compiled.stdout + compiled.stderr, target
            for done, out_file in exports:
                assert done.returncode == 1, target
                assert "value has a NUL character" in done.stderr, (target, done.stderr)
                assert f"the {target} target cannot carry it" in done.stderr, (target, done.stderr)
                assert not out_file.exists()
    for text in broker.outputs:
        assert "before" not in text and "trailing" not in text and "p@ss$word" not in text
