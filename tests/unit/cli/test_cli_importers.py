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
    found, skipped = importers.parse_dotenv(DOTENV, ".env")
    assert skipped == []
    assert values(found) == {
        "PLAIN": "hello world",
        "EXPORTED": "yes",
        "SINGLE": 'pa$word #not-a-comment "x"',
        "DOUBLE": 'line1\\nline2 "q" #kept',  # dotenv 3.x: `\n` stays a backslash and an n
        "TRAILING": "value",
        "SPACED": "padded",
        "EMPTY": "",
        "COLON": "yaml-style",
    }


def test_dotenv_linebreaks_follow_dotenv_3() -> None:
    """dotenv 3.2.0 (what Kamal 2.12 locks), per its README: `\\n` in double quotes is no longer a newline
    unless DOTENV_LINEBREAK_MODE=legacy comes first in the file; single quotes never change."""
    text = 'A="x\\ny\\rz"\nB=\'x\\ny\'\nDOTENV_LINEBREAK_MODE=legacy\nC="x\\ny\\rz"\nD="\\\\n"\n'
    found, skipped = importers.parse_dotenv(text, ".env")
    assert skipped == []
    assert values(found) == {
        "A": "x\\ny\\rz",
        "B": "x\\ny",
        "DOTENV_LINEBREAK_MODE": "legacy",
        "C": "x\ny\rz",
        "D": "\n",  # `\\n`: the `\n` becomes a line break, then the backslash before it is dropped
    }


def test_dotenv_literals_agree_with_ruby_dotenv(tmp_path: Path) -> None:
    """Against Debian's Ruby dotenv (2.4, which always expands `\\n`): the grammar, in dotenv 3's legacy mode."""
    if RUBY is None:
        need("ruby is not installed (apt-get install ruby ruby-dotenv)")
    text = "DOTENV_LINEBREAK_MODE=legacy\n" + DOTENV
    (tmp_path / ".env").write_text(text)
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
    assert json.loads(done.stdout) == values(importers.parse_dotenv(text, ".env")[0])


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
    (found,), _skipped = importers.parse_dotenv(line + "\n", ".kamal/secrets")
    if reason is None:
        assert found.value == "`id`"  # Ruby dotenv has no backtick substitution: a literal
    else:
        assert found.value is None and found.reason is not None and reason in found.reason


def test_env_file_is_literal_and_lines_without_equals_need_a_value() -> None:
    text = '# c\n  A=  spaced "quoted" $HOME #x\nB\nC=\r\n\n1BAD=x\n'
    found, skipped = importers.parse_env_file(text, "prod.env")
    assert [(f.name, f.value, f.reason is None) for f in found] == [
        ("A", '  spaced "quoted" $HOME #x', True),
        ("B", None, False),
        ("C", "", True),
    ]
    assert [s.text() for s in skipped] == [
        "prod.env:6: the name starts with a digit, which a variable name cannot"
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


# --- lines that cannot be brought are listed, with the line and why, never with what they hold ---------------

CANARY = "canary-value-7f3a"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (f"MY-VAR={CANARY}", "the name has '-'"),
        (f"MY VAR={CANARY}", "the name has a space"),
        (f"MY\u200bVAR={CANARY}", "invisible character (U+200B zero width space)"),
        (f"MY\u202eRAV={CANARY}", "bidirectional control character (U+202E right-to-left override)"),
        (f"\ufeffMY_VAR={CANARY}", "byte order mark (U+FEFF"),
        (f"MY\u00e9VAR={CANARY}", "the name has U+00E9 latin small letter e with acute"),
        (f"app.name={CANARY}", "the name has '.'"),
        (f"1PASSWORD={CANARY}", "the name starts with a digit"),
        (f"={CANARY}", "has no name before '='"),
        ("export MY_VAR", "is `export NAME` without a value"),
        (CANARY, "has no '='"),
        (f"MY_VAR\x07={CANARY}", "invisible character (U+0007"),
    ],
)
def test_dotenv_lists_each_line_it_cannot_bring(line: str, reason: str) -> None:
    text = f"# first\nGOOD=1\n{line}\nLAST='x'\n"
    found, skipped = importers.parse_dotenv(text, ".env")
    assert values(found) == {"GOOD": "1", "LAST": "x"}
    (item,) = skipped
    assert (item.source, item.line) == (".env", 3)
    assert reason in item.reason, item.reason
    assert CANARY not in item.text() and "MY" not in item.text()


def test_dotenv_bom_at_the_start_is_dropped_as_ruby_dotenv_does() -> None:
    # Ruby dotenv opens files "rb:bom|utf-8", so Kamal reads the first variable; so does import.
    found, skipped = importers.parse_dotenv("\ufeffFIRST=1\nSECOND=2\n", ".kamal/secrets")
    assert values(found) == {"FIRST": "1", "SECOND": "2"} and skipped == []


def test_dotenv_line_numbers_count_multi_line_values_and_crlf() -> None:
    text = 'A="one\r\ntwo"\r\nBAD-ONE=x\r\n\r\n# c\r\nB=2\r\nBAD TWO=y\r\n'
    found, skipped = importers.parse_dotenv(text, "f.env")
    assert values(found) == {"A": "one\ntwo", "B": "2"}
    assert [(s.line, s.reason.split(",")[0]) for s in skipped] == [
        (3, "the name has '-'"),
        (7, "the name has a space in it"),
    ]


def test_env_file_lists_names_it_cannot_bring() -> None:
    found, skipped = importers.parse_env_file(f"A=1\nMY-VAR={CANARY}\nZ\u200bW={CANARY}\n", "prod.env")
    assert values(found) == {"A": "1"}
    assert [(s.line, s.reason[:20]) for s in skipped] == [
        (2, "the name has '-', wh"),
        (3, "has an invisible cha"),
    ]
    assert all(CANARY not in s.text() for s in skipped)


# --- the seed app's Kamal project --------------------------------------------------------------------------

SEED = Path(__file__).resolve().parents[3] / "tests" / "support" / "rails_app" / "kamal"


def seed_import() -> tuple[dict[str, object], importers.KamalImport]:
    into = importers.KamalImport(manifest={})
    source = "config/deploy.yml"
    text = importers.strip_erb((SEED / source).read_text(), source)
    return importers.map_deploy(yaml.safe_load(text), source, into), into


def test_seed_import_keeps_registry_and_ssl_and_marks_what_erb_hid() -> None:
    body, into = seed_import()
    assert body["registry"] == {
        "server": "ghcr.io",
        "username": "acme",
        "password": "KAMAL_REGISTRY_PASSWORD",
    }
    assert body["proxy"] == {"ssl": True, "host": "microblog.example.com", "app_port": 3000}
    roles = body["roles"]
    assert isinstance(roles, dict)
    assert roles["web"]["hosts"] == ["servers-web-hosts.fill-in.invalid"]
    assert roles["job"]["hosts"] == ["servers-job-hosts-0.fill-in.invalid"]
    accessories = body["accessories"]
    assert isinstance(accessories, dict)
    assert accessories["db"]["host"] == "accessories-db-host.fill-in.invalid"
    fill = "\n".join(into.to_fill)
    for expected in (
        "servers/web/hosts: hosts is computed by ERB, which import never runs; replace the placeholder "
        "servers-web-hosts.fill-in.invalid in strongroom.yml with the real hosts",
        "servers/job/hosts/0: host is computed by ERB",
        "accessories/db/host: host is computed by ERB",
        "builder/arch: is not set, and Kamal 2.12 refuses",
    ):
        assert expected in fill
    assert [f.name for f in into.values] == []  # the password is a name, never stored as a value
    assert any("registry/password: read as the name of a secret" in n for n in into.notes)
    assert "asset_path" in "\n".join(into.not_brought)


def test_seed_manifest_fails_check_only_at_the_placeholders_then_compiles_for_kamal() -> None:
    from broker.compiler.compile import compile_environment, target_problems
    from broker.compiler.parse import ManifestError
    from broker.compiler.references import StoredValue

    body, _into = seed_import()
    text = yaml.safe_dump({"project": "microblog", **body}, sort_keys=False)
    with pytest.raises(ManifestError) as caught:
        parse_manifest(text)
    assert sorted(p.where for p in caught.value.problems) == [
        "accessories/db/host",
        "roles/job/hosts/0",
        "roles/web/hosts/0",
    ]
    assert all("is a placeholder" in p.message for p in caught.value.problems)

    filled = (
        text.replace("servers-web-hosts.fill-in.invalid", "192.0.2.10")
        .replace("servers-job-hosts-0.fill-in.invalid", "192.0.2.11")
        .replace("accessories-db-host.fill-in.invalid", "192.0.2.20")
    )
    stored = {n: StoredValue("v", True, 1, "production") for n in parse_manifest(filled).base.secret_names()}
    compiled = compile_environment(parse_manifest(filled), "production", lambda _e, n: stored.get(n))
    assert compiled.problems == []  # DATABASE_HOST (a host name) is not taken for a secret by the lint
    problems = target_problems(compiled, ["kamal"])
    assert [p.message.split(":")[0] for p in problems] == ["builder/arch"]
    with_arch = parse_manifest(filled + "builder:\n  arch: amd64\n")
    compiled = compile_environment(with_arch, "production", lambda _e, n: stored.get(n))
    assert target_problems(compiled, ["kamal"]) == []


@pytest.mark.parametrize(
    ("password", "expected", "note"),
    [
        (["KAMAL_REGISTRY_PASSWORD"], "KAMAL_REGISTRY_PASSWORD", False),
        ("KAMAL_REGISTRY_PASSWORD", "KAMAL_REGISTRY_PASSWORD", True),
        ("GHCR_TOKEN", "GHCR_TOKEN", True),
    ],
)
def test_registry_password_by_name_stays_a_name(password: object, expected: str, note: bool) -> None:
    into = importers.KamalImport(manifest={})
    config = {
        "service": "a",
        "registry": {"username": "u", "password": password},
        "builder": {"arch": "arm64"},
    }
    body = importers.map_deploy(config, "deploy.yml", into)
    assert body["registry"] == {"username": "u", "password": expected}
    assert into.values == [] and bool(into.notes) is note
    assert body["builder"] == {"arch": "arm64"} and into.to_fill == []


def test_erb_inside_sections_costs_only_that_key() -> None:
    text = textwrap.dedent(
        """
        service: app
        proxy:
          ssl: true
          host: <%= ENV["HOST"] %>
        registry:
          server: <%= ENV["REGISTRY"] %>
          username: <%= ENV["REGISTRY_USER"] %>
          password: [KAMAL_REGISTRY_PASSWORD]
        builder:
          arch: amd64
          args: {A: <%= 1 %>}
        ssh:
          user: deploy
          port: <%= 22 %>
        """
    )
    into = importers.KamalImport(manifest={})
    body = importers.map_deploy(yaml.safe_load(importers.strip_erb(text, "d.yml")), "d.yml", into)
    assert body["proxy"] == {"ssl": True, "host": "proxy-host.fill-in.invalid"}
    assert body["registry"] == {"password": "KAMAL_REGISTRY_PASSWORD"}
    assert body["builder"] == {"arch": "amd64"}
    assert body["ssh"] == {"user": "deploy"}
    skipped = "\n".join(into.not_brought)
    assert "registry/server: is computed by ERB" in skipped and "builder/args" in skipped
    assert "ssh/port: is computed by ERB" in skipped
    assert any("registry/username" in line for line in into.to_fill)


def test_destination_files_need_no_builder() -> None:
    into = importers.KamalImport(manifest={})
    importers.map_deploy({"servers": {"web": ["192.0.2.30"]}}, "deploy.staging.yml", into, base=False)
    assert into.to_fill == []


def test_what_is_not_brought_is_listed_in_the_files_order() -> None:
    """Keys with no manifest equivalent are listed in the order the file has them, the same every run (a
    set's order changes with the interpreter's hash seed)."""
    extra = ["zeta", "alpha", "mid", "kappa", "omega", "beta", "nu", "delta"]
    config = {
        "service": "app",
        "image": "app",
        "servers": ["10.0.0.1"],
        "registry": {"server": "r.example.com", "username": "u", **{k: 1 for k in extra}},
        "env": {"clear": {"A": "1"}, **{k: 1 for k in reversed(extra)}},
    }
    into = importers.KamalImport(manifest={})
    importers.map_deploy(config, "config/deploy.yml", into)
    lines = [line.split(": ")[1] for line in into.not_brought if "has no manifest equivalent" in line]
    assert [line for line in lines if line.startswith("registry/")] == [f"registry/{k}" for k in extra]
    assert [line for line in lines if line.startswith("env/")] == [f"env/{k}" for k in reversed(extra)]
