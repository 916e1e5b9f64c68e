"""`strongroom import` as a user runs it, against the CLI stand-in broker (see standin_broker.py).

Pinned here: what is listed (stdout), what cannot be brought (stderr, FILE:LINE and why, never the line),
what is stored, and the exit status: 1 when a line could not be brought, a placeholder needs filling or a
value is still needed (after everything else is stored); 0 for a --dry-run, which lists the same.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from cli_test_support import Invoke, canary
from standin_broker import StandinBroker

from cli.credentials import Credential

SEED = Path(__file__).resolve().parents[3] / "tests" / "support" / "rails_app" / "kamal"


def dotenv(tmp_path: Path, secret: str) -> Path:
    path = tmp_path / ".env"
    path.write_text(
        f"GOOD={secret}\nMY-VAR={secret}\nZERO\u200bWIDTH={secret}\nRIGHT\u202eLEFT={secret}\nLAST='ok'\n",
        encoding="utf-8",
    )
    return path


def test_import_dotenv_lists_lines_it_cannot_bring_and_exits_1(
    logged_in: Credential, broker: StandinBroker, cli: Invoke, tmp_path: Path
) -> None:
    secret = canary()
    path = dotenv(tmp_path, secret)
    result = cli("import", "-p", "shop", "-e", "production", "--dotenv", str(path), "--no-input")
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines()[:3] == [
        f"cannot bring {path}:2: the name has '-', which a variable name cannot hold",
        f"cannot bring {path}:3: has an invisible character (U+200B zero width space) where a name is expected",
        f"cannot bring {path}:4: has a bidirectional control character (U+202E right-to-left override), "
        "which makes the line show differently from what it holds",
    ]
    assert "3 lines could not be brought" in result.stderr
    # Everything readable is stored; nothing of any line is printed.
    assert broker.secrets[("shop", "production", "GOOD")][-1].value == secret
    assert broker.secrets[("shop", "production", "LAST")][-1].value == "ok"
    assert len(broker.secrets) == 2
    assert secret not in result.output and "MY-VAR" not in result.output and "\u202e" not in result.output


def test_import_dotenv_dry_run_lists_the_same_and_exits_0(
    logged_in: Credential, broker: StandinBroker, cli: Invoke, tmp_path: Path
) -> None:
    secret = canary()
    path = dotenv(tmp_path, secret)
    result = cli("import", "-p", "shop", "-e", "production", "--dotenv", str(path), "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.stderr.count("cannot bring ") == 3
    assert "production/GOOD" in result.stdout and "Dry run: nothing was written." in result.stdout
    assert broker.secrets == {} and secret not in result.output


def test_import_clean_dotenv_exits_0(
    logged_in: Credential, broker: StandinBroker, cli: Invoke, tmp_path: Path
) -> None:
    path = tmp_path / ".env"
    path.write_text("\ufeffA=1\nexport B='two'\n", encoding="utf-8")
    result = cli("import", "-p", "shop", "-e", "production", "--dotenv", str(path))
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert {k[2] for k in broker.secrets} == {"A", "B"}


def test_import_kamal_seed_writes_placeholders_and_says_what_to_fill_in(
    logged_in: Credential, broker: StandinBroker, cli: Invoke, tmp_path: Path
) -> None:
    project = tmp_path / "app"
    shutil.copytree(SEED, project)
    out = project / "strongroom.yml"
    result = cli(
        "import", "-p", "shop", "-e", "production", "--kamal", str(project), "--no-input", "--manifest-out", str(out)
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    fill = [line for line in result.stderr.splitlines() if line.startswith("fill in: ")]
    assert [line.split(": ")[2] for line in fill] == [
        "servers/web/hosts",
        "servers/job/hosts/0",
        "accessories/db/host",
        "builder/arch",
    ]
    assert f"Fill in {out} before deploying" in result.stderr
    text = out.read_text()
    assert "# FILL IN before deploying" in text and "servers-web-hosts.fill-in.invalid" in text
    assert "password: KAMAL_REGISTRY_PASSWORD" in text and "ssl: true" in text
    assert "note: " in result.stdout and "read as the name of a secret" in result.stdout
    # Literal values were stored; computed ones are asked for, never run.
    assert broker.secrets[("shop", "production", "DATABASE_PASSWORD")][-1].value == 'pa$1wor$D#x"q'
    assert "strongroom secrets set -p shop -e production RAILS_MASTER_KEY" in result.stderr
    assert 'pa$1wor$D#x"q' not in result.output and 'pa$1wor$D#x"q' not in text


def test_import_kamal_of_a_compiled_project_skips_what_compile_wrote(
    logged_in: Credential, broker: StandinBroker, cli: Invoke, tmp_path: Path
) -> None:
    """A directory written by the real kamal renderer: its fetch lines are not secrets, nothing is needed."""
    from broker.compiler.compile import compile_environment, render
    from broker.compiler.parse import parse_manifest
    from broker.renderers.kamal import RESERVED
    from tests.support import rails_app

    project = tmp_path / "compiled"
    manifest = parse_manifest(rails_app.manifest_text())
    for environment in ("production", "staging"):
        for item in render(compile_environment(manifest, environment, rails_app.lookup), ["kamal"]):
            (project / item.path).parent.mkdir(parents=True, exist_ok=True)
            (project / item.path).write_bytes(item.content)
    fetched = {
        "DATABASE_URL",
        "KAMAL_REGISTRY_PASSWORD",
        "POSTGRES_PASSWORD",
        "RAILS_MASTER_KEY",
        "SECRET_KEY_BASE",
    }
    out = tmp_path / "strongroom.yml"
    args = (
        "import",
        "-p",
        "shop",
        "-e",
        "production",
        "--kamal",
        str(project),
        "--no-input",
        "--manifest-out",
        str(out),
    )
    for extra in (("--dry-run",), ()):
        result = cli(*args, *extra)
        assert result.exit_code == 0, result.output
        assert "needs a value" not in result.output and "Still needed" not in result.stderr
        assert "cannot bring" not in result.stderr and "fill in:" not in result.stderr
        listed = {
            line.split(" ", 1)[0]
            for line in result.stdout.splitlines()
            if line.endswith(": written by strongroom compile --target kamal; skipped")
        }
        assert listed == {f"{env}/{name}" for env in ("production", "staging") for name in fetched | RESERVED}
        assert broker.secrets == {}
    text = out.read_text()
    assert parse_manifest(text).project == "shop"
    assert not [name for name in RESERVED if name in text]
