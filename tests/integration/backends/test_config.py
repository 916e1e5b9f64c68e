"""The backends file: strict parsing with errors that name the file and the key path (no upstream needed)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from broker.backends.config import load, parse
from broker.errors import Invalid

DOCS = Path(__file__).resolve().parents[3] / "docs" / "backends.md"


def doc(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "format": "strongroom-backends/1",
        "backends": {
            "v": {
                "type": "vault",
                "address": "https://vault.example:8200",
                "auth": {"method": "token", "token": "t"},
            }
        },
        "mappings": [
            {"project": "microblog", "environment": "production", "backend": "v", "path": "production"}
        ],
    }
    base.update(over)
    return base


def refused(d: dict[str, Any], pattern: str) -> None:
    with pytest.raises(Invalid, match=pattern) as info:
        parse(json.dumps(d), source="backends.json")
    assert info.value.message.startswith("backends.json: ")


def test_the_documented_example_parses() -> None:
    text = DOCS.read_text()
    block = re.search(r"```yaml\n(format: strongroom-backends/1.*?)```", text, re.S)
    assert block is not None
    cfg = parse(block.group(1), source="docs")
    assert set(cfg.backends) == {"vault-main", "aws-main"}
    assert len(cfg.mappings) == 3


def test_unknown_keys_are_named_with_their_path() -> None:
    d = doc()
    d["backends"]["v"]["adress"] = "x"
    refused(d, r"backends\.v\.adress: Extra inputs are not permitted")
    d = doc()
    d["backends"]["v"]["auth"]["tokn"] = "x"
    refused(d, r"backends\.v\.auth\.tokn")
    refused(doc(colour="red"), "colour")


def test_references_and_paths_are_checked() -> None:
    refused(
        doc(mappings=[{"project": "microblog", "environment": "production", "backend": "nope"}]),
        r"mappings\.0\.backend",
    )
    two = [{"project": "microblog", "environment": "production", "backend": "v", "path": "p"}] * 2
    refused(doc(mappings=two), "mapped twice")
    for path in ("../x", "a//b", "a/./b", "a b", "a\\b"):
        refused(
            doc(
                mappings=[{"project": "microblog", "environment": "production", "backend": "v", "path": path}]
            ),
            "path",
        )
    refused(doc(mappings=[{"project": "Microblog", "environment": "production", "backend": "v"}]), "project")
    d = doc()
    d["backends"]["v"]["prefix"] = "../etc"
    refused(d, r"backends\.v\.prefix")
    d = doc()
    d["backends"]["v"]["auth"] = {"method": "token"}
    refused(d, "exactly one of token and token_file")
    d = doc()
    d["backends"]["v"]["allow_networks"] = ["not-a-net"]
    refused(d, "allow_networks")
    d = doc()
    d["backends"]["a"] = {"type": "aws-sm", "region": "evil.example.com/"}
    refused(d, r"backends\.a\.region: .*must be an AWS region name")
    d = doc()
    d["backends"]["v"].update(prefix="../etc", timeout="soon")
    refused(d, r"backends\.v\.\w+: .* \(and 1 more problem\)$")


def test_format_and_syntax() -> None:
    refused(doc(format="strongroom-backends/2"), "format")
    with pytest.raises(Invalid, match="neither valid JSON nor valid YAML"):
        parse("{: [", source="f")
    with pytest.raises(Invalid, match="must be an object"):
        parse("[]", source="f")


def test_the_file_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "backends.json"
    path.write_text(json.dumps(doc()))
    path.chmod(0o644)
    with pytest.raises(Invalid, match="readable by others"):
        load(path)
    path.chmod(0o600)
    assert load(path).backends["v"].type == "vault"
    with pytest.raises(Invalid, match="cannot be read"):
        load(tmp_path / "missing.json")


def test_secrets_in_the_file_do_not_show_in_errors_or_reprs() -> None:
    d = doc()
    d["backends"]["v"]["auth"] = {"method": "token", "token": "hunter2-token", "extra": 1}
    with pytest.raises(Invalid) as info:
        parse(json.dumps(d), source="f")
    assert "hunter2" not in info.value.message
    ok = parse(json.dumps(doc()), source="f")
    assert "'t'" not in repr(ok.backends["v"])
