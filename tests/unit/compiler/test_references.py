"""References in clear values: syntax, scoping, other environments, cycles, depth, sensitivity."""

from __future__ import annotations

import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.compiler.compile import compile_environment
from broker.compiler.parse import parse_manifest
from broker.compiler.references import MAX_DEPTH, Ref, Resolved, StoredValue, TemplateError, parse

STORE = {
    "production": {"HOST": ("app.example.com", False), "DB_PASSWORD": ("pa$$${x}", True)},
    "staging": {"HOST": ("staging.example.com", False)},
}


def lookup(env: str, name: str) -> StoredValue | None:
    got = STORE.get(env, {}).get(name)
    return None if got is None else StoredValue(got[0], got[1], 1, env)


def compiled(text: str, env: str = "production"):  # type: ignore[no-untyped-def]
    return compile_environment(parse_manifest(textwrap.dedent(text)), env, lookup)


def test_syntax() -> None:
    assert parse("plain") == ("plain",)
    assert parse("$$") == ("$",)
    assert parse("a$${HOME}b") == ("a${HOME}b",)
    assert parse("https://${HOST}/x") == ("https://", Ref(None, "HOST"), "/x")
    assert parse("${staging.HOST}") == (Ref("staging", "HOST"),)
    assert parse("${a}${B}") == (Ref(None, "a"), Ref(None, "B"))


@pytest.mark.parametrize(
    "text", ["$", "a$b", "$(id)", "${", "${A", "${A:-b}", "${ A}", "${1A}", "${Prod.A}", "`id`$"]
)
def test_bad_syntax_is_an_error(text: str) -> None:
    with pytest.raises(TemplateError):
        parse(text)


@given(st.text())
def test_escaped_text_is_literal(text: str) -> None:
    assert "".join(p for p in parse(text.replace("$", "$$")) if isinstance(p, str)) == text


def test_resolution_scopes_and_stored_values_are_never_expanded() -> None:
    c = compiled(
        """
        service: microblog
        roles:
          web:
            hosts: [192.0.2.10]
            env:
              clear:
                PORT: "8080"
                URL: http://${HOST}:${PORT}
        env:
          clear:
            PORT: "3000"
            URL: http://${HOST}:${PORT}
            LITERAL: $${HOST}
            DSN: user:${DB_PASSWORD}@db
        """
    )
    assert not c.problems, c.problems
    glob = c.clear[("global",)]
    assert glob["URL"].value == "http://app.example.com:3000"
    assert c.clear[("role", "web")]["URL"].value == "http://app.example.com:8080"
    assert glob["LITERAL"].value == "${HOST}"
    assert glob["DSN"].value == "user:pa$$${x}@db"  # the stored value is carried as it is
    assert glob["DSN"].sensitive and not glob["URL"].sensitive
    assert ("production", "DB_PASSWORD") in c.reads


def test_other_environment() -> None:
    c = compiled(
        """
        service: microblog
        env:
          clear:
            STAGING_URL: https://${staging.HOST}
        """
    )
    assert c.clear[("global",)]["STAGING_URL"].value == "https://staging.example.com"
    assert ("staging", "HOST") in c.reads


def test_other_environment_sees_its_own_overrides() -> None:
    c = compiled(
        """
        service: microblog
        env:
          clear:
            NAME: base
            OTHER: ${staging.NAME}
        environments:
          staging:
            env: {clear: {NAME: from-staging}}
        """
    )
    assert c.clear[("global",)]["OTHER"].value == "from-staging"


def test_missing_reference_names_the_path() -> None:
    c = compiled("service: microblog\nenv:\n  clear:\n    URL: https://${NOPE}\n")
    assert [p.text() for p in c.problems] == [
        "env/clear/URL: ${NOPE} names neither a clear variable here nor a secret stored in production "
        "(or the environments it inherits)"
    ]


def test_cycle() -> None:
    c = compiled(
        """
        service: microblog
        env:
          clear:
            A: ${B}
            B: x${C}
            C: ${A}
            D: ${A}
        """
    )
    texts = [p.text() for p in c.errors]
    assert len(texts) == 1 and "reference cycle: A -> B -> C -> A" in texts[0], texts
    assert c.clear[("global",)] == {}


def _chain(length: int) -> str:
    lines = [f"    V{i}: ${{V{i + 1}}}" for i in range(length)]
    lines.append(f"    V{length}: ${{HOST}}")
    return "service: microblog\nenv:\n  clear:\n" + "\n".join(lines) + "\n"


def test_depth_ten_is_fine_eleven_is_an_error() -> None:
    ok = compiled(_chain(MAX_DEPTH - 1))  # V0 -> ... -> V9 -> HOST: ten references deep
    assert not ok.problems and ok.clear[("global",)]["V0"].value == "app.example.com"
    bad = compiled(_chain(MAX_DEPTH))
    texts = [p.text() for p in bad.errors]
    assert texts == [f"env/clear/V0: references nest deeper than {MAX_DEPTH} levels"], texts


def test_secrets_missing_or_empty_are_problems_with_paths() -> None:
    STORE["production"]["EMPTY"] = ("", True)
    try:
        c = compiled("service: microblog\nenv:\n  secret: [HOST, NOPE, EMPTY]\n")
    finally:
        del STORE["production"]["EMPTY"]
    assert [p.text() for p in c.problems] == [
        "env/secret/2: EMPTY is empty in production",
        "env/secret/1: NOPE is not stored in production (nor in the environments it inherits)",
    ]


def test_entries_for_a_role() -> None:
    c = compiled(
        """
        service: microblog
        roles:
          web:
            hosts: [192.0.2.10]
            env:
              clear: {MODE: web}
              secret: [DB_PASSWORD]
        env:
          clear: {MODE: all, X: "1"}
          secret: [HOST]
        """
    )
    assert [(e.name, e.value, e.sensitive) for e in c.entries()] == [
        ("HOST", "app.example.com", True),
        ("MODE", "all", False),
        ("X", "1", False),
    ]
    by_name = {e.name: e for e in c.entries("web")}
    assert by_name["MODE"].value == "web" and "DB_PASSWORD" in by_name


def test_stored_names_cover_every_lookup() -> None:
    from broker.compiler.references import stored_names

    text = textwrap.dedent(
        """
        service: microblog
        roles:
          web:
            hosts: [{host: 192.0.2.10, tags: [t]}]
            env: {clear: {R: "${HOST}-${G}"}, secret: [DB_PASSWORD]}
        env:
          clear:
            G: ${staging.HOST}
            H: ${staging.NAME}
          secret: [HOST]
          tags:
            t: {clear: {T: "${DB_PASSWORD}"}}
        environments:
          staging:
            env: {clear: {NAME: "${HOST}x"}}
        """
    )
    manifest = parse_manifest(text)
    asked: set[tuple[str, str]] = set()

    def recording(env: str, name: str) -> StoredValue | None:
        asked.add((env, name))
        return lookup(env, name)

    compiled_env = compile_environment(manifest, "production", recording)
    assert not compiled_env.problems, compiled_env.problems
    assert asked <= stored_names(manifest, "production")
    assert compiled_env.clear[("global",)]["H"].value == "staging.example.comx"


def test_stored_and_resolved_reprs_never_show_values() -> None:
    stored = StoredValue("hunter2", True, 3, "production")
    resolved = Resolved("postgres://app:hunter2@db", True, frozenset({("production", "DB_PASSWORD")}))
    for text in (repr(stored), str(stored), repr(resolved), str(resolved), repr([stored, resolved])):
        assert "hunter2" not in text and "[REDACTED]" in text
    assert "production" in repr(stored) and "DB_PASSWORD" in repr(resolved)


def test_stored_names_are_exactly_the_unanswered_names() -> None:
    from broker.compiler.references import stored_names

    manifest = parse_manifest(
        textwrap.dedent(
            """
            service: microblog
            roles:
              web:
                hosts: [{host: 192.0.2.10, tags: [t]}]
                env: {clear: {R: "${HOST}-${G}-${X}", X: "${staging.Q}"}, secret: [DB_PASSWORD]}
            env:
              clear:
                G: ${staging.HOST}
                H: ${staging.NAME}-${X}-${Y}
              secret: [HOST]
              tags:
                t: {clear: {T: "${DB_PASSWORD}${G}${Z}"}}
            environments:
              staging:
                env: {clear: {NAME: "${HOST}x${production.W}"}}
            """
        )
    )
    # X is a clear variable of the role only: the global H reads a stored X, the role's R its own clear X.
    assert stored_names(manifest, "production") == {
        ("production", "DB_PASSWORD"),
        ("production", "HOST"),
        ("production", "W"),
        ("production", "X"),
        ("production", "Y"),
        ("production", "Z"),
        ("staging", "HOST"),
        ("staging", "Q"),
        ("staging", "X"),
        ("staging", "Y"),
    }
