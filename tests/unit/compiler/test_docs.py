"""docs/manifest.md cannot go stale: each YAML example parses, and each documented error is produced."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from broker.compiler.parse import ManifestError, parse_manifest
from broker.domain.manifest import ManifestBody

DOC = Path(__file__).resolve().parents[3] / "docs" / "manifest.md"
BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)
EXAMPLES = BLOCK.findall(DOC.read_text())


def test_every_section_has_an_example() -> None:
    covered: set[str] = set()
    for text in EXAMPLES:
        covered |= {line.split(":")[0] for line in text.splitlines() if re.match(r"[a-z_]+:", line)}
    assert set(ManifestBody.model_fields) | {"project", "environments"} <= covered


@pytest.mark.parametrize("text", EXAMPLES, ids=[f"example{i}" for i in range(len(EXAMPLES))])
def test_example_parses(text: str) -> None:
    parse_manifest(text)


def test_documented_error_is_what_the_parser_says() -> None:
    sample = DOC.read_text().split("```text\n", 1)[1].split("```", 1)[0].strip()
    manifest = "\n".join(
        ["service: microblog", *["# filler"] * 7, "roles:", "  web:", "    hosts:", "      - not a host"]
    )
    with pytest.raises(ManifestError) as caught:
        parse_manifest(manifest + "\n")
    assert caught.value.message == sample
