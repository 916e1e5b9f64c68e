"""The kamal target (SECURITY.md F37, F38, F39): names only, every value arrives exactly or is refused.

Oracles: PyYAML's safe loader, Ruby's ERB and Psych, and the emulation of Kamal 2.12 reading
`.kamal/secrets*` with dotenv 3.2.x and 3.1.x (real Ruby JSON, Shellwords, String#dump) in
tests/support/kamal_oracle.py.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.compiler.compile import compile_environment, render, target_problems
from broker.compiler.parse import parse_manifest
from broker.domain.manifest import ManifestBody, deep_merge
from broker.renderers.base import Entry, RenderError, RenderOptions
from broker.renderers.envfile import LINE_MAX_BYTES
from broker.renderers.kamal import (
    DOTENV_PROBE,
    HOLDER,
    ClearValue,
    KamalPlan,
    KamalRenderer,
    build_secret_problem,
    destination_diff,
    env_file_problem,
    shell_problem,
)
from broker.renderers.kamal import _emit_yaml as kamal_emit_yaml
from broker.renderers.kamal import dump as kamal_dump
from broker.renderers.registry import get_renderer
from cli.commands.kamal import for_dotenv, kamal_json, shell_escape
from tests.conftest import need
from tests.support import kamal_oracle, rails_app

GOLDEN = Path(__file__).parent / "golden" / "kamal"
REPO = Path(__file__).resolve().parents[3]

PROBE_LINES = [
    "STRONGROOM_DOTENV_ORDER=3.2",
    f"{DOTENV_PROBE}=$(printf '\\\\044{{STRONGROOM_DOTENV_ORDER}}')",
    "STRONGROOM_DOTENV_ORDER=3.1",
]
FETCH_LINE = re.compile(
    rf"{HOLDER}=\$\(strongroom kamal fetch --dotenv \$\{{{DOTENV_PROBE}\}} -p [a-z0-9-]+ -e [a-z0-9-]+"
    rf"( [A-Z_][A-Z0-9_]*)+\)"
)
EXTRACT_LINE = re.compile(
    rf"([A-Z_][A-Z0-9_]*)=\$\(kamal secrets extract ([A-Z_][A-Z0-9_]*) \$\{{{HOLDER}\}}\)"
)

HOSTILE = [
    "<%= `id` %>",
    "<% system('id') %>",
    "!ruby/object:Gem::Installer",
    "!!python/object/apply:os.system ['id']",
    "&a",
    "*a",
    "{a: 1}",
    "[1, 2]",
    "a: b",
    "- item",
    "# not a comment",
    "yes",
    "NO",
    "null",
    "~",
    "1,000",
    "0o17",
    "0755",
    "1e3",
    ".inf",
    "2024-01-01",
    ":symbol",
    "'single'",
    '"double"',
    "trailing space ",
    " leading space",
    "ünïcödé \u202e bidi",
    "|",
    ">",
    "@at",
    "%percent",
    "a\nb",
    "tab\there",
]


def rails_files(environment: str) -> dict[str, str]:
    manifest = parse_manifest(rails_app.manifest_text())
    compiled = compile_environment(manifest, environment, rails_app.lookup)
    assert not compiled.problems, compiled.problems
    return {f.path: f.content.decode() for f in render(compiled, ["kamal"])}


def need_ruby() -> None:
    if kamal_oracle.RUBY is None:
        need("ruby is not installed (apt-get install ruby)")


# --- golden files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("environment", ["production", "staging"])
def test_golden_rails_app(environment: str) -> None:
    files = rails_files(environment)
    directory = GOLDEN / environment
    if os.environ.get("UPDATE_GOLDEN") == "1":
        for path, content in files.items():
            (directory / path).parent.mkdir(parents=True, exist_ok=True)
            (directory / path).write_text(content)
    on_disk = {str(p.relative_to(directory)): p.read_text() for p in directory.rglob("*") if p.is_file()}
    assert files == on_disk


def test_deploy_yml_is_the_same_for_every_environment() -> None:
    assert rails_files("production")["config/deploy.yml"] == rails_files("staging")["config/deploy.yml"]
    assert (
        rails_files("production")[".kamal/secrets-common"] == rails_files("staging")[".kamal/secrets-common"]
    )


def test_destination_merged_over_deploy_yml_is_the_environment() -> None:
    files = rails_files("staging")
    merged = deep_merge(
        yaml.safe_load(files["config/deploy.yml"]), yaml.safe_load(files["config/deploy.staging.yml"])
    )
    assert merged["servers"]["web"]["hosts"] == ["192.0.2.30"]
    assert merged["env"]["clear"]["FRONTEND_URL"] == "https://staging.microblog.example.com"
    assert merged["env"]["clear"]["RAILS_ENV"] == "staging"
    assert merged["proxy"]["host"] == "staging.microblog.example.com"
    assert merged["registry"]["password"] == ["KAMAL_REGISTRY_PASSWORD"]
    assert merged["builder"]["secrets"] == ["RAILS_MASTER_KEY"]


# --- F37: .kamal/secrets -----------------------------------------------------------------------------------


def test_secrets_files_hold_only_fetches_and_no_value() -> None:
    for environment in ("production", "staging"):
        files = rails_files(environment)
        fetched: list[str] = []
        extracted: list[str] = []
        probes: list[str] = []
        for path in (".kamal/secrets-common", f".kamal/secrets.{environment}"):
            for line in files[path].splitlines():
                if line.startswith("#"):
                    continue
                if line in PROBE_LINES:
                    probes.append(line)
                    continue
                if match := FETCH_LINE.fullmatch(line):
                    assert probes == PROBE_LINES
                    fetched = line.split(")")[0].split(" ")[9:]
                    continue
                match = EXTRACT_LINE.fullmatch(line)
                assert match and match.group(1) == match.group(2), line
                extracted.append(match.group(1))
        assert fetched == extracted == sorted(fetched)
        assert set(fetched) == set(parse_manifest(rails_app.manifest_text()).base.secret_names())
        every = "".join(files.values())
        for value in rails_app.sensitive_values():
            assert value not in every


@pytest.mark.parametrize("name", ["lower_case", HOLDER, DOTENV_PROBE, "STRONGROOM_DOTENV_ORDER", "Mixed"])
def test_secret_names_kamal_cannot_take_are_refused(name: str) -> None:
    body = ManifestBody.model_validate({"service": "app", "env": {"secret": [name]}})
    plan = KamalPlan(project="app", body=body, clear={})
    with pytest.raises(RenderError, match=r"\[A-Z_\]\[A-Z0-9_\]\*"):
        KamalRenderer(plan).render([Entry(name, "v", True)], options=RenderOptions("production", "app"))


def _stub_strongroom(tmp_path: Path, values: dict[str, str]) -> dict[str, str]:
    """A `strongroom` on PATH printing what `strongroom kamal fetch` prints for these values (the fetch line
    of `_secrets_file(sorted(values))`). The output is made here with the CLI's own functions and the stub, a
    shell script, prints it: a Python stub importing the CLI was most of each example's time."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    names = sorted(values)
    for version in kamal_oracle.DOTENV_VERSIONS:
        printed = shell_escape(kamal_json({n: for_dotenv(values[n], version) for n in names}))
        (bin_dir / f"fetch-{version}").write_text(printed + "\n")
    stub = bin_dir / "strongroom"
    stub.write_text(
        "#!/bin/sh\n"
        '[ "$1 $2 $3" = "kamal fetch --dotenv" ] || { echo "unexpected arguments: $*" >&2; exit 2; }\n'
        '[ "$5 $6 $7 $8" = "-p app -e production" ] || { echo "unexpected arguments: $*" >&2; exit 2; }\n'
        "version=$4\n"
        "shift 8\n"
        f'[ "$*" = "{" ".join(names)}" ] || {{ echo "unexpected names: $*" >&2; exit 2; }}\n'
        'case "$version" in 3.1|3.2) ;; *) echo "unexpected version: $version" >&2; exit 2 ;; esac\n'
        f'exec cat "{bin_dir}/fetch-$version"\n'
    )
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(tmp_path)}


def _secrets_file(names: list[str]) -> str:
    body = ManifestBody.model_validate({"service": "app", "env": {"secret": names}})
    plan = KamalPlan(project="app", body=body, clear={})
    entries = [Entry(n, "x", True) for n in names]
    files = KamalRenderer(plan).render(entries, options=RenderOptions("production", "app"))
    return next(f.content.decode() for f in files if f.path == ".kamal/secrets.production")


def _read_with_kamal(tmp_path: Path, values: dict[str, str], dotenv: kamal_oracle.Dotenv) -> dict[str, str]:
    env = _stub_strongroom(tmp_path, values)
    secrets_dir = tmp_path / ".kamal"
    secrets_dir.mkdir(exist_ok=True)
    (secrets_dir / "secrets.production").write_text(_secrets_file(sorted(values)))
    got = kamal_oracle.read_secrets(secrets_dir, "production", env=env, cwd=tmp_path, dotenv=dotenv)
    for name in (HOLDER, DOTENV_PROBE, "STRONGROOM_DOTENV_ORDER"):
        got.pop(name)
    return got


TRICKY = {
    "DOLLAR": "pa$word$$ and $HOME and ${HOME} and $(id) and `id`",
    "QUOTES": "it's \"quoted\" 'twice'",
    "HASH": "p#ss #{x} #$y #@z # comment",
    "PARENS": "(unbalanced ((( and ) ) )",
    "EMPTYPARENS": "()",
    "BACKSLASH": "back\\slash \\n \\$",
    "SPACES": "  both ends  ",
    "UNICODE": "ünïcödé \u202e 日本 \U0001f600",
    "MULTILINE": "line1\nline2\r\nline3",
    "JSON": '{"a": [1, 2]}',
    "SHELLISH": "a; rm -rf / && echo | cat > /dev/null",
    "EMPTY": "",
}


@pytest.mark.parametrize("dotenv", kamal_oracle.DOTENV_VERSIONS)
def test_kamal_reads_back_every_value_exactly(tmp_path: Path, dotenv: kamal_oracle.Dotenv) -> None:
    need_ruby()
    sentinel = tmp_path / "pwned"
    values = {
        **TRICKY,
        "SENTINEL1": f"$(touch {sentinel})",
        "SENTINEL2": f"`touch {sentinel}`",
        "SENTINEL3": f"${{{HOLDER}}}$(touch {sentinel})",
    }
    assert _read_with_kamal(tmp_path, values, dotenv) == values
    assert not sentinel.exists()


@pytest.mark.parametrize("dotenv", kamal_oracle.DOTENV_VERSIONS)
def test_trailing_line_breaks_survive_kamals_chomp(tmp_path: Path, dotenv: kamal_oracle.Dotenv) -> None:
    """A PEM named by proxy/ssl or a build secret keeps its last line break through `$(kamal secrets extract)`."""
    need_ruby()
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    values = {"CERT": pem, "CR": "x\r", "CRLF": "y\r\n", "TWO": "z\n\n", "ONLY": "\n", "PLAIN": "w"}
    assert _read_with_kamal(tmp_path, values, dotenv) == values
    assert build_secret_problem(pem) is None


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.lists(st.text(st.characters(exclude_categories=["Cs"]), max_size=80), min_size=1, max_size=12),
    st.sampled_from(kamal_oracle.DOTENV_VERSIONS),
)
def test_kamal_fetch_and_extract_carry_arbitrary_text(
    tmp_path: Path, texts: list[str], dotenv: kamal_oracle.Dotenv
) -> None:
    need_ruby()
    values = {f"K{i}": t for i, t in enumerate(texts)}
    got = _read_with_kamal(tmp_path, values, dotenv)
    for name, value in values.items():
        assert got[name] == value, name  # trailing line breaks and NULs included


@given(st.dictionaries(st.from_regex(r"[A-Z_][A-Z0-9_]{0,10}", fullmatch=True), st.text(), max_size=8))
def test_fetch_output_is_what_extract_reads(values: dict[str, str]) -> None:
    need_ruby()
    for dotenv in kamal_oracle.DOTENV_VERSIONS:
        printed = shell_escape(kamal_json({k: for_dotenv(v, dotenv) for k, v in values.items()}))
        # Nothing left for dotenv's variable or command patterns, Ruby's chomp or a shell to act on.
        assert not re.search(r"[()$`'#\n]", printed), printed
        (argument,) = kamal_oracle.ruby_shellsplit(printed)
        for name, value in values.items():
            extracted = kamal_oracle.kamal_secrets_extract(name, argument)
            # 3.1 keeps what extract returns; 3.2 substitutes variables over it first.
            # Kamal chomps it first; 3.1 keeps the rest, 3.2 substitutes variables over it.
            chomped = kamal_oracle.chomp(extracted)
            kept = chomped if dotenv == "3.1" else kamal_oracle.substitute_variables(chomped, {}, {})
            assert kept == value


# --- F38: deploy.yml ---------------------------------------------------------------------------------------


def _plan(body: dict[str, Any], clear: dict[str, str] | None = None) -> KamalPlan:
    model = ManifestBody.model_validate(body)
    values = {("global",): {k: ClearValue(v) for k, v in (clear or {}).items()}}
    return KamalPlan(project="app", body=model, clear=values)


def _render(plan: KamalPlan, entries: list[Entry] | None = None) -> dict[str, Any]:
    files = KamalRenderer(plan).render(entries or [], options=RenderOptions("production", "app"))
    texts = {f.path: f.content.decode() for f in files}
    for path in ("config/deploy.yml", "config/deploy.production.yml"):
        assert "<%" not in texts[path]
        no_tags_or_anchors(texts[path])
    return deep_merge(
        yaml.safe_load(texts["config/deploy.yml"]),
        yaml.safe_load(texts["config/deploy.production.yml"]) or {},
    )


def no_tags_or_anchors(text: str) -> None:
    """The YAML has no explicit tag, anchor or alias: nothing for a loader to act on."""
    for event in yaml.parse(text):
        assert not isinstance(event, yaml.AliasEvent), text
        assert getattr(event, "anchor", None) is None, text
        assert getattr(event, "tag", None) is None, text


class _ReferenceDumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """The representer path the event writer replaces: PyYAML's (libyaml) SafeDumper, the same quoting rule."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _reference_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    plain = bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text)) and text.lower() not in {
        "y", "n", "yes", "no", "on", "off", "true", "false", "null"
    }  # fmt: skip
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=None if plain else '"')


_ReferenceDumper.add_representer(str, _reference_str)

_TEXT_ANY = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
_CONFIG = st.recursive(
    st.one_of(
        _TEXT_ANY,
        st.sampled_from(["web", "On", "NULL", "_x1", "1.0", "~", ""]),
        st.integers(),
        st.booleans(),
        st.none(),
    ),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_TEXT_ANY, children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_TEXT_ANY, _CONFIG, max_size=5))
def test_deploy_yaml_writer_matches_pyyaml_and_reads_back(config: dict[str, Any]) -> None:
    text = kamal_dump(config)
    # Byte for byte what yaml.dump writes through the representer and the same emitter ...
    assert text == yaml.dump(
        config,
        Dumper=_ReferenceDumper,
        allow_unicode=False,
        default_flow_style=False,
        sort_keys=False,
        width=1 << 30,
    )
    # ... and read back as exactly this data, with no tag, anchor or alias.
    assert yaml.safe_load(text) == config
    no_tags_or_anchors(text)


def test_clear_value_repr_never_shows_the_value() -> None:
    value = ClearValue("hunter2-canary", sensitive=True)
    assert "canary" not in repr(value) and "canary" not in str([value]) and "[REDACTED]" in repr(value)


def test_deploy_yaml_writer_refuses_what_it_cannot_write_exactly() -> None:
    plan = _plan(
        {
            "service": "app",
            "image": "acme/app",
            "roles": {"web": {"hosts": ["192.0.2.1"]}},
            "env": {"clear": {"V": "x"}},
        },
        {"V": "a\ud800b"},
    )
    with pytest.raises(RenderError, match="env/clear/V: it is not valid Unicode text"):
        KamalRenderer(plan).render([], options=RenderOptions("production", "app"))
    with pytest.raises(RenderError, match="a/0: a float has no exact YAML form"):
        kamal_emit_yaml({"a": [1.5]}, "")


def _hostile_fields(text: str) -> Iterator[tuple[str, dict[str, Any], dict[str, str], list[str]]]:
    """(where, manifest body, clear values, path to the value in the Kamal config) for each interpolated field."""
    base: dict[str, Any] = {"service": "app", "image": "acme/app", "roles": {"web": {"hosts": ["192.0.2.1"]}}}
    yield "env/clear", {**base, "env": {"clear": {"V": "x"}}}, {"V": text}, ["env", "clear", "V"]
    yield "builder/args", {**base, "builder": {"args": {"V": text}}}, {}, ["builder", "args", "V"]
    yield (
        "registry/username",
        {**base, "registry": {"username": text, "password": "P"}},
        {},
        ["registry", "username"],
    )
    yield (
        "roles/web/cmd",
        {**base, "roles": {"web": {"hosts": ["192.0.2.1"], "cmd": text}}},
        {},
        ["servers", "web", "cmd"],
    )
    yield (
        "roles/web/options",
        {**base, "roles": {"web": {"hosts": ["192.0.2.1"], "options": {"label": text}}}},
        {},
        [
            "servers",
            "web",
            "options",
            "label",
        ],
    )


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_is_refused_or_read_back_identically(text: str) -> None:
    for where, body, clear, path in _hostile_fields(text):
        try:
            plan = _plan(body, clear)
        except ValueError:
            continue  # the manifest model itself refused it (control characters in commands, say)
        try:
            merged = _render(plan, [Entry("P", "pw", True)])
        except RenderError as exc:
            assert text not in exc.message
            assert "<%" in text or shell_problem(text), (where, text)
            continue
        node: Any = merged
        for key in path:
            node = node[key]
        assert node == text, (where, text)


def test_erb_is_refused_wherever_it_appears() -> None:
    for _where, body, clear, _path in _hostile_fields("<%= `touch /tmp/x` %>"):
        with pytest.raises(RenderError, match="ERB"):
            KamalRenderer(_plan(body, clear)).render(
                [Entry("P", "pw", True)], options=RenderOptions("production", "app")
            )


def test_clear_value_built_from_a_secret_is_refused() -> None:
    manifest = parse_manifest(
        "service: app\nimage: acme/app\nroles: {web: {hosts: [192.0.2.1]}}\nbuilder: {arch: amd64}\n"
        "registry: {username: acme, password: DB_PASSWORD}\n"
        "env:\n  clear:\n    DSN: postgres://app:${DB_PASSWORD}@db/app\n"
    )
    compiled = compile_environment(manifest, "production", rails_app.lookup_with({"DB_PASSWORD": "hunter2"}))
    problems = target_problems(compiled, ["kamal", "json"])
    assert [p.where for p in problems] == ["targets/kamal"]
    assert "DSN" in problems[0].message and "list DSN under secret" in problems[0].message
    assert "hunter2" not in problems[0].message


def test_deploy_yml_through_kamal_erb_and_psych(tmp_path: Path) -> None:
    """Each accepted deploy.yml goes through ERB then Psych as Kamal reads it, one file at a time, in one Ruby
    process (a Ruby start per text was most of this test's time)."""
    need_ruby()
    accepted: list[str] = []
    paths: list[str] = []
    for text in [*HOSTILE, "100%", "<%% literal", "a%>b", "\\", "\\n"]:
        plan = _plan(
            {
                "service": "app",
                "image": "acme/app",
                "roles": {"web": {"hosts": ["192.0.2.1"]}},
                "env": {"clear": {"V": "x"}},
            },
            {"V": text},
        )
        try:
            files = KamalRenderer(plan).render([], options=RenderOptions("production", "app"))
        except RenderError:
            continue
        accepted.append(text)
        deploy = next(f.content.decode() for f in files if f.path == "config/deploy.production.yml")
        path = tmp_path / f"deploy-{len(paths)}.yml"
        path.write_text(deploy)
        paths.append(str(path))
    script = (
        'require "erb"; require "yaml"; require "json"; '
        "ARGV.each { |path| puts JSON.generate(YAML.load(ERB.new(File.read(path)).result)) }"
    )
    done = subprocess.run([str(kamal_oracle.RUBY), "-e", script, *paths], capture_output=True, check=False)
    assert done.returncode == 0, done.stderr
    read = [json.loads(line)["env"]["clear"]["V"] for line in done.stdout.decode().splitlines()]
    assert read == accepted
    assert "yes" in accepted and "1,000" in accepted and ":symbol" in accepted


# --- F39: the rules against Kamal's own escaping -------------------------------------------------------------

_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)


@settings(max_examples=60, deadline=None)
@given(st.lists(_TEXT, min_size=1, max_size=30))
def test_accepted_values_survive_kamal_escaping(texts: list[str]) -> None:
    need_ruby()
    for text in texts:
        line = kamal_oracle.env_file({"V": text})
        if env_file_problem(text) is None:
            assert line == f"V={text}\n", text
        else:
            assert line != f"V={text}\n", text
        if shell_problem(text) is None:
            assert kamal_oracle.sh_word(kamal_oracle.shell_word(text)) == text, text


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("a\nb", env_file_problem),
        ("a\\b", env_file_problem),
        ("a\x00", env_file_problem),
        ("", shell_problem),
        ("   ", shell_problem),
        ("#{x}", shell_problem),
        ("${HOME}", shell_problem),
        ("a\tb", shell_problem),
        ("a\x00b", build_secret_problem),
    ],
)
def test_refusals(value: str, rule: Any) -> None:
    assert rule(value)


@pytest.mark.parametrize("value", ["pa$word", "p#ss", "it's", 'say "hi"', "$HOME", "${x", "ünï", "#$@"])
def test_env_file_carries(value: str) -> None:
    assert env_file_problem(value) is None


PEM = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"


@pytest.mark.parametrize(
    ("value", "named", "not_named"),
    [
        (PEM, "use the k8s target", "env-file"),
        ("line1\r\nline2", "use the k8s target", "env-file"),
        ("a\x00b", "use the k8s target", "env-file"),
        ("back\\slash", "use the env-file or k8s target", None),
        ("tab\there", "use the env-file or k8s target", None),
        ('"quoted\\"', "use the k8s target", "env-file"),
    ],
)
def test_a_refused_secret_names_a_target_that_carries_it(
    value: str, named: str, not_named: str | None
) -> None:
    body = ManifestBody.model_validate({"service": "app", "env": {"secret": ["V"]}})
    renderer = KamalRenderer(KamalPlan(project="app", body=body, clear={}))
    entry = Entry("V", value, True)
    (problem,) = renderer.find_problems([entry], options=RenderOptions("production", "app"))
    assert named in problem.alternative and "file mount" in problem.alternative
    if not_named:
        assert not_named not in problem.alternative
    for target in re.findall(r"env-file|k8s", problem.alternative):
        assert get_renderer(target).render([entry], options=RenderOptions("production", "app"))


def test_a_refused_clear_value_names_a_target_that_carries_it() -> None:
    plan = _plan({"service": "app", "env": {"clear": {"V": "x"}}}, {"V": "a\nb"})
    (problem,) = KamalRenderer(plan).find_problems([], options=RenderOptions("production", "app"))
    assert problem.alternative == "use the k8s target, or a file mount"
    plan = _plan({"service": "app", "env": {"clear": {"V": "x"}}}, {"V": "a\x00b"})
    (problem,) = KamalRenderer(plan).find_problems([], options=RenderOptions("production", "app"))
    assert problem.alternative == "use a file mount"  # a ConfigMap refuses NUL too


# --- destinations and the registry default ---------------------------------------------------------------------

_TREE = st.recursive(
    st.one_of(st.integers(0, 3), st.text("ab", max_size=2), st.lists(st.integers(0, 2), max_size=2)),
    lambda children: st.dictionaries(st.sampled_from("abcd"), children, max_size=3),
    max_leaves=12,
)


@given(
    st.dictionaries(st.sampled_from("abcd"), _TREE, max_size=4),
    st.dictionaries(st.sampled_from("abcd"), _TREE, max_size=4),
)
def test_destination_diff_merges_back(base: dict[str, Any], override: dict[str, Any]) -> None:
    full = deep_merge(base, override)
    assert deep_merge(base, destination_diff(base, full)) == full


def test_registry_default_renders_entries_alone() -> None:
    renderer = get_renderer("kamal")
    entries = [Entry("RAILS_ENV", "production", False), Entry("DATABASE_URL", "pa$s", True)]
    files = {
        f.path: f.content.decode()
        for f in renderer.render(entries, options=RenderOptions("production", "app"))
    }
    merged = deep_merge(
        yaml.safe_load(files["config/deploy.yml"]), yaml.safe_load(files["config/deploy.production.yml"])
    )
    assert merged == {
        "service": "app",
        "env": {"clear": {"RAILS_ENV": "production"}, "secret": ["DATABASE_URL"]},
        "ssh": {"user": "root", "port": 22},
    }
    assert (
        "strongroom kamal fetch --dotenv ${STRONGROOM_DOTENV} -e production DATABASE_URL)"
        in files[".kamal/secrets.production"]
    )
    assert "pa$s" not in "".join(files.values())


def test_a_sub_second_health_interval_is_whole_seconds_for_kamal() -> None:
    """Kamal 2.12's validator takes an integer interval: 0.25 (for `strongroom deploy`) renders as 1."""
    body = {"service": "app", "image": "acme/app", "healthcheck": {"interval": 0.25, "path": "/up"}}
    assert _render(_plan(body))["proxy"]["healthcheck"]["interval"] == 1
    body["healthcheck"] = {"interval": 3, "path": "/up"}
    assert _render(_plan(body))["proxy"]["healthcheck"]["interval"] == 3


def test_an_env_secret_over_dockers_env_file_line_limit_is_refused() -> None:
    """Kamal's env file goes to `docker run --env-file`, whose line limit (pinned against real docker in
    tests/integration/renderers/test_envfile_engines.py::test_line_limit_is_the_scanners) stops the start."""
    fits = "x" * (LINE_MAX_BYTES - len("V") - 1)
    assert env_file_problem(fits, "V") is None
    assert kamal_oracle.env_file({"V": fits}) == f"V={fits}\n"  # Kamal writes it as it is: one full line
    too_long = "é" * ((LINE_MAX_BYTES - len("V")) // 2)  # counted in bytes, not characters
    assert "longer than 65535 bytes" in (env_file_problem(too_long, "V") or "")
    body = ManifestBody.model_validate({"service": "app", "env": {"secret": ["V"]}})
    renderer = KamalRenderer(KamalPlan(project="app", body=body, clear={}))
    (problem,) = renderer.find_problems(
        [Entry("V", fits + "x", True)], options=RenderOptions("production", "app")
    )
    assert problem.key == "V" and "longer than" in problem.reason
    assert "use the k8s target" in problem.alternative and "env-file" not in problem.alternative
