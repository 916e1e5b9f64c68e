"""`strongroom export`: the pure renderers, files 0600 and atomic, refusals as one sentence, stdout only on --reveal.

The broker is a stand-in (tests/unit/cli/standin_broker.py) used only for CLI unit tests; end-to-end tests
against the real broker live in tests/e2e.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import yaml
from cli_test_support import Invoke, canary
from standin_broker import StandinBroker

from cli.commands.export import FORMATS, NEEDS_DESTINATION
from cli.credentials import Credential

ENV = ("-p", "shop", "-e", "production")


@pytest.fixture
def values(broker: StandinBroker) -> dict[str, str]:
    """Production sees a tricky canary password, a multi-line key (common) and a public URL."""
    password = canary() + " $HOME #x 'q' \"dq\""
    key = "-----BEGIN KEY-----\n" + canary() + "\n-----END KEY-----\n"
    broker.put("shop", "production", "DB_PASSWORD", password)
    broker.put("shop", "common", "TLS_KEY", key)
    broker.put("shop", "production", "PUBLIC_URL", "https://shop.example", sensitive=False)
    return {"DB_PASSWORD": password, "TLS_KEY": key, "PUBLIC_URL": "https://shop.example"}


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    """An empty directory to export into."""
    path = tmp_path / "out"
    path.mkdir()
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_json_export_to_a_file_is_0600_and_carries_every_value_exactly(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, values: dict[str, str], out_dir: Path
) -> None:
    out = out_dir / "values.json"

    result = cli("export", *ENV, "--format", "json", "--out", str(out))

    assert result.exit_code == 0, result.output
    assert result.stdout == f"Wrote 3 variables of shop/production to {out} (0600).\n"
    assert mode(out) == 0o600
    assert json.loads(out.read_text()) == values
    for value in values.values():
        assert value.splitlines()[1 if "\n" in value else 0] not in result.output
    [call] = broker.calls()
    assert call.target == "/v1/projects/shop/environments/production/resolved"
    assert call.reveal is None  # to a file: an ordinary read


def test_yaml_and_dotenv_exports_read_back_exactly(
    cli: Invoke, logged_in: Credential, values: dict[str, str], out_dir: Path
) -> None:
    from dotenv import dotenv_values

    # A password mixing both quote kinds with `$` is refused by dotenv (readers disagree), so not asked here.
    only = ("--only", "TLS_KEY,PUBLIC_URL")
    assert cli("export", *ENV, "--format", "yaml", "--out", str(out_dir / "v.yaml")).exit_code == 0
    assert cli("export", *ENV, "--format", "dotenv", *only, "--out", str(out_dir / "v.env")).exit_code == 0

    assert yaml.safe_load((out_dir / "v.yaml").read_text()) == values
    assert dotenv_values(out_dir / "v.env", interpolate=False) == {
        k: values[k] for k in ("TLS_KEY", "PUBLIC_URL")
    }


def test_a_directory_takes_the_formats_own_file_name(
    cli: Invoke, logged_in: Credential, values: dict[str, str], out_dir: Path
) -> None:
    result = cli("export", *ENV, "--format", "k8s", "--out", str(out_dir), "--namespace", "shop")

    assert result.exit_code == 0, result.output
    [written] = [p for p in out_dir.iterdir() if p.is_file()]
    assert mode(written) == 0o600
    documents = [d for d in yaml.safe_load_all(written.read_text()) if d]
    assert {d["kind"] for d in documents} == {"ConfigMap", "Secret"}
    assert all(d["metadata"]["namespace"] == "shop" for d in documents)


def test_an_existing_0644_file_is_replaced_by_a_0600_one(
    cli: Invoke, logged_in: Credential, values: dict[str, str], out_dir: Path
) -> None:
    out = out_dir / ".env"
    out.write_text("OLD=1\n")
    out.chmod(0o644)
    inode = out.stat().st_ino

    result = cli("export", *ENV, "--format", "dotenv-export", "--out", str(out))

    assert result.exit_code == 0, result.output
    assert mode(out) == 0o600
    assert out.stat().st_ino != inode
    assert "OLD=1" not in out.read_text()
    assert [p.name for p in out_dir.iterdir()] == [".env"]  # no temporary file left


def test_a_value_the_target_cannot_carry_is_refused_in_one_sentence_without_it(
    cli: Invoke, logged_in: Credential, values: dict[str, str], out_dir: Path
) -> None:
    out = out_dir / "app.env"

    result = cli("export", *ENV, "--format", "env-file", "--out", str(out))

    assert result.exit_code == 1
    assert result.stderr == (
        "Error: shop/production/TLS_KEY: value has a newline; the env-file target cannot carry it "
        "(use the compose, dotenv or k8s target, or a file mount)\n"
    )
    assert not out.exists()
    for value in values.values():
        assert value.splitlines()[0] not in result.output


def test_only_exports_the_named_variables(
    cli: Invoke, logged_in: Credential, values: dict[str, str], out_dir: Path
) -> None:
    out = out_dir / "v.json"

    result = cli("export", *ENV, "--format", "json", "--only", "PUBLIC_URL,DB_PASSWORD", "--out", str(out))

    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text()) == {k: values[k] for k in ("PUBLIC_URL", "DB_PASSWORD")}
    missing = cli("export", *ENV, "--format", "json", "--only", "NOPE", "--out", str(out))
    assert missing.exit_code == 1 and "shop/production has no NOPE" in missing.stderr


@pytest.mark.parametrize("only", [(), ("--only", "NUL_KEY,PUBLIC_URL")])
def test_a_nul_value_is_the_renderers_to_judge_with_or_without_only(
    broker: StandinBroker,
    cli: Invoke,
    logged_in: Credential,
    values: dict[str, str],
    out_dir: Path,
    only: tuple[str, ...],
) -> None:
    """As `compile` does (docs/targets.md): json carries a NUL, env-file refuses it naming itself."""
    broker.put("shop", "production", "NUL_KEY", "a\x00b")
    carried = cli("export", *ENV, "--format", "json", *only, "--out", str(out_dir / "v.json"))
    assert carried.exit_code == 0, carried.output
    assert json.loads((out_dir / "v.json").read_text())["NUL_KEY"] == "a\x00b"
    refused = cli("export", *ENV, "--format", "env-file", *only, "--out", str(out_dir / "e"))
    assert refused.exit_code == 1
    assert refused.stderr.startswith(
        "Error: shop/production/NUL_KEY: value has a NUL character; the env-file target"
    )
    assert not (out_dir / "e").exists()


def test_stdout_needs_reveal_which_the_broker_audits(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, values: dict[str, str]
) -> None:
    refused = cli("export", *ENV, "--format", "json")
    shown = cli("export", *ENV, "--format", "json", "--reveal")

    assert refused.exit_code == 2
    assert f"Error: {NEEDS_DESTINATION}" in refused.stderr
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout) == values
    [call] = broker.calls()
    assert call.reveal == "1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--format", "json", "--out", "x", "--reveal"), "give --out or --reveal, not both"),
        (("--format", "json", "--namespace", "n", "--reveal"), "--namespace is for --format k8s only"),
        (("--format", "toml", "--reveal"), "'toml' is not one of"),
        (("--reveal",), "Missing option '--format'"),
    ],
)
def test_usage_errors(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, args: tuple[str, ...], message: str
) -> None:
    result = cli("export", *ENV, *args)

    assert result.exit_code == 2
    assert message in result.stderr
    assert broker.calls() == []


def test_every_format_renders_a_plain_environment(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, out_dir: Path
) -> None:
    broker.put("shop", "production", "PLAIN", "value-1")
    for target in FORMATS:
        out = out_dir / target
        result = cli("export", *ENV, "--format", target, "--out", str(out))
        assert result.exit_code == 0, (target, result.output)
        assert mode(out) == 0o600
        assert b"value-1" in out.read_bytes() or target == "k8s"


def test_export_does_not_leave_a_partial_file_when_the_disk_fails(
    cli: Invoke,
    logged_in: Credential,
    values: dict[str, str],
    out_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = out_dir / "v.json"
    out.write_text("previous")

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    result = cli("export", *ENV, "--format", "json", "--out", str(out))

    assert result.exit_code == 1
    assert result.stderr == f"Error: cannot write {out}: no space left on device\n"
    assert out.read_text() == "previous"
    assert [p.name for p in out_dir.iterdir()] == ["v.json"]
