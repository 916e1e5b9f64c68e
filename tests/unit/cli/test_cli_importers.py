"""`strongroom import` parsers: nothing is run or guessed; Kamal configurations become valid manifests."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from broker.compiler.parse import parse_manifest
from cli import importers
from tests.conftest import need
from tests.support.kamal_oracle import RUBY


def values(found: list[importers.Found]) -> dict[str, str | None]:
    return {f.name: f.value for f in found}


DOTENV = textwrap.dedent(
    """\
    # comment
    PLAIN=hello world
    export EXPORTED=yes
    SINGLE='pa$word #not-a-comment "x"'
    DOUBLE="line1\\nline2 \\"q\\" #kept"
    TRAILING=value # a comment
    SPACED = padded
    EMPTY=
    COLON: yaml-style
    """
)


def test_dotenv_literals() -> None:
    assert values(importers.parse_dotenv(DOTENV, ".env")) == {
        "PLAIN": "hello world",
        "EXPORTED": "yes",
        "SINGLE": 'pa$word #not-a-comment "x"',
        "DOUBLE": 'line1\nline2 "q" #kept',
        "TRAILING": "value",
        "SPACED": "padded",
        "EMPTY": "",
        "COLON": "yaml-style",
    }


def test_dotenv_literals_agree_with_ruby_dotenv(tmp_path: Path) -> None:
    if RUBY is None:
        need("ruby is not installed (apt-get install ruby ruby-dotenv)")
    (tmp_path / ".env").write_text(DOTENV)
    done = subprocess.run(
        [
            RUBY,
            "-e",
            'require "dotenv"; require "json"; print JSON.generate(Dotenv::Parser.call(File.read(ARGV[0])))',
            str(tmp_path / ".env"),
        ],
        capture_output=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert json.loads(done.stdout) == values(importers.parse_dotenv(DOTENV, ".env"))


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("A=$(cat config/master.key)", "shell command"),
        ('A="$(op read x)"', "shell command"),
        ("A=$HOME/x", "expands another variable"),
        ("A=${HOME}", "expands another variable"),
        ('A="pre-${X}"', "expands another variable"),
        ("A=\\$HOME", "expands another variable"),
        ("A=`id`", None),
    ],
)
def test_dotenv_computed_values_are_never_run_or_guessed(line: str, reason: str | None) -> None:
    (found,) = importers.parse_dotenv(line + "\n", ".kamal/secrets")
    if reason is None:
        assert found.value == "`id`"  # Ruby dotenv has no backtick substitution: a literal
    else:
        assert found.value is None and found.reason is not None and reason in found.reason


def test_env_file_is_literal_and_lines_without_equals_need_a_value() -> None:
    text = '# c\n  A=  spaced "quoted" $HOME #x\nB\nC=\r\n\n1BAD=x\n'
    found = importers.parse_env_file(text, "prod.env")
    assert [(f.name, f.value, f.reason is None) for f in found] == [
        ("A", '  spaced "quoted" $HOME #x', True),
        ("B", None, False),
        ("C", "", True),
        ("1BAD", None, False),
    ]


def test_erb_is_never_evaluated() -> None:
    text = "a: <%= ENV['X'] %>\n# <%# a comment %>\nb: plain\n"
    stripped = importers.strip_erb(text, "deploy.yml")
    assert importers.ERB_MARK in stripped and "ENV" not in stripped
    with pytest.raises(importers.ImportError_, match="never runs"):
        importers.strip_erb("<% if true %>a: 1<% end %>", "deploy.yml")
    with pytest.raises(importers.ImportError_):
        importers.strip_erb("<%- x -%>", "deploy.yml")


KAMAL = textwrap.dedent(
    """
    service: microblog
    image: acme/microblog
    servers:
      web:
        hosts:
          - 192.0.2.10
          - 192.0.2.11: [monitoring]
        options:
          memory: 1g
      job:
        hosts: [192.0.2.12]
        cmd: bin/jobs
        proxy: false
    proxy:
      ssl: true
      hosts: [app.example.com, www.example.com]
      app_port: 3000
      healthcheck: {path: /up, interval: 3}
    registry:
      server: ghcr.io
      username: acme
      password: literal-password-in-deploy-yml
    builder:
      arch: [amd64, arm64]
      secrets: [RAILS_MASTER_KEY]
      args: {RUBY_VERSION: 3.3.4}
      cache: {type: gha}
    env:
      clear:
        RAILS_ENV: production
        PRICE: $5
        WORKERS: 4
        BUILT: <%= `date` %>
      secret:
        - DATABASE_URL
        - ALIASED:OTHER
      tags:
        monitoring:
          STATSD_HOST: 127.0.0.1
    accessories:
      db:
        image: postgres:16
        host: 192.0.2.20
        port: 5432
        env:
          secret: [POSTGRES_PASSWORD]
        files: [config/init.sql:/docker-entrypoint-initdb.d/init.sql]
    ssh:
      user: deploy
      keys: [~/.ssh/id_ed25519]
    labels: {a: b}
    """
)


def test_kamal_config_becomes_a_valid_manifest() -> None:
    into = importers.KamalImport(manifest={})
    config = yaml.safe_load(importers.strip_erb(KAMAL, "config/deploy.yml"))
    body = importers.map_deploy(config, "config/deploy.yml", into)
    manifest = parse_manifest(yaml.safe_dump(body, sort_keys=False))
    base = manifest.base
    assert base.roles["web"].hosts[1].tags == ["monitoring"]
    assert base.roles["job"].proxy is False
    assert base.proxy is not None and base.proxy.host == "app.example.com"
    assert base.healthcheck is not None and base.healthcheck.interval == 3
    assert base.registry is not None and base.registry.password == "KAMAL_REGISTRY_PASSWORD"
    assert base.env.clear == {"RAILS_ENV": "production", "PRICE": "$$5", "WORKERS": "4"}
    assert base.env.secret == ["DATABASE_URL"]
    assert base.env.tags["monitoring"].clear == {"STATSD_HOST": "127.0.0.1"}
    assert base.builder is not None and base.builder.arch == ["amd64", "arm64"]
    assert [(f.name, f.value) for f in into.values] == [
        ("KAMAL_REGISTRY_PASSWORD", "literal-password-in-deploy-yml")
    ]
    skipped = "\n".join(into.not_brought)
    for expected in (
        "proxy/hosts: only the first host is brought",
        "builder/cache: has no manifest equivalent",
        "env/clear/BUILT: is computed by ERB",
        "env/secret/ALIASED:OTHER: aliases a secret",
        "accessories/db/files: has no manifest equivalent",
        "ssh/keys: has no manifest equivalent",
        "labels: has no manifest equivalent",
    ):
        assert expected in skipped
    assert "literal-password" not in skipped


def test_secrets_files_in_kamal_order() -> None:
    names = ["secrets.staging", "secrets", "secrets-common", "secrets.production", "other"]
    assert list(importers.secrets_files(names)) == [
        ("secrets", None),
        ("secrets-common", None),
        ("secrets.production", "production"),
        ("secrets.staging", "staging"),
    ]


@pytest.mark.parametrize("path", ["config/deploy.yml", ".kamal/secrets.production", "production.env", ".env"])
def test_output_paths_inside_the_directory(path: str) -> None:
    from cli.commands.compile import safe_relative

    assert str(safe_relative(path)) == path


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../b", "..", "", "x/\x1b[0m", "a\\b"])
def test_output_paths_that_could_escape_are_refused(path: str) -> None:
    from cli.commands.compile import safe_relative
    from cli.errors import CliError

    with pytest.raises(CliError):
        safe_relative(path)
