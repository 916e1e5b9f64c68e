"""Bad input to `strongroom deploy` and `app` is refused before anything is contacted, naming the option or path.

No broker runs here on purpose: STRONGROOM_URL points at a closed port, so a command that got past its
input checks would fail with a connection error instead of the message these tests expect.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cli.root import strongroom
from tests.support.ports import free_port

MANIFEST = """\
project: shop
service: app
image: shop/app
roles:
  web:
    hosts: [web1]
env:
  secret: [APP_SECRET]
"""


def _closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # a number no server of this run is given


def _run(tmp_path: Path, *args: str, manifest: str | None = MANIFEST) -> Result:
    if manifest is not None:
        (tmp_path / "strongroom.yml").write_text(manifest)
    env = {"STRONGROOM_URL": _closed_url(), "STRONGROOM_TOKEN": "srt_" + "a" * 43}
    argv = [*args, "-f", str(tmp_path / "strongroom.yml")]
    return CliRunner().invoke(strongroom, argv, env=env, catch_exceptions=False)


@pytest.mark.parametrize("ttl", ["10", "3601", "soon"])
def test_deploy_ttl_out_of_range_names_the_option(tmp_path: Path, ttl: str) -> None:
    result = _run(tmp_path, "deploy", "-e", "production", "--version", "v1", "--ttl", ttl)
    assert result.exit_code == 2
    assert "--ttl" in result.output


def test_deploy_empty_hosts_names_the_option(tmp_path: Path) -> None:
    result = _run(tmp_path, "deploy", "-e", "production", "--version", "v1", "--hosts", " , ")
    assert result.exit_code == 2
    assert "--hosts" in result.output and "at least one host" in result.output


def test_deploy_missing_manifest_names_the_file(tmp_path: Path) -> None:
    result = _run(tmp_path, "deploy", "-e", "production", "--version", "v1", manifest=None)
    assert result.exit_code == 1
    assert "strongroom.yml" in result.output and "cannot read" in result.output


def test_dry_run_of_a_bad_manifest_names_the_path(tmp_path: Path) -> None:
    bad = MANIFEST.replace("hosts: [web1]", "hosts: ['-oProxyCommand=touch /tmp/x']")
    result = _run(tmp_path, "deploy", "-e", "production", "--version", "v1", "--dry-run", manifest=bad)
    assert result.exit_code != 0
    assert "roles/web/hosts/0" in result.output
    assert "Traceback" not in result.output


def test_app_unknown_action_is_a_usage_error(tmp_path: Path) -> None:
    result = _run(tmp_path, "app", "explode", "-e", "production")
    assert result.exit_code == 2
    assert "explode" in result.output
