"""Scopes: default deny, explicit deny wins, delegation never widens; checked against a reference model."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from broker.domain.scopes import Action, Scope, allowed, covered, scope_from_json, with_denies

PROJECTS = ["microblog", "shop"]
ENVS = ["common", "staging", "production", "prod-eu"]
GLOBS = ["*", "common", "staging", "production", "prod*", "prod-??", "st*"]
KEYS = ["DB_PASSWORD", "API_KEY", "REGISTRY_TOKEN"]


def glob_to_regex(glob: str) -> re.Pattern[str]:
    """An independent glob reading for the reference model: * any run, ? one character."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob) + r"\Z")


def reference(scopes: list[Scope], action: Action, project: str, env: str, key: str | None = None) -> bool:
    """The rule as written in SECURITY.md: nothing unless granted, and any matching deny refuses.

    A scope with keys grants only on those keys (never an environment-wide call, key None); a deny with
    keys refuses those keys and every environment-wide call (its answer would hold them).
    """

    def on_key(s: Scope) -> bool:
        if s.keys is None:
            return True
        if key is None:
            return s.deny
        return key in s.keys

    def hit(s: Scope) -> bool:
        return (
            action in s.actions
            and s.project in ("*", project)
            and bool(glob_to_regex(s.environments).match(env))
            and on_key(s)
        )

    return not any(hit(s) for s in scopes if s.deny) and any(hit(s) for s in scopes if not s.deny)


scope_st = st.builds(
    Scope,
    project=st.sampled_from(["*", *PROJECTS]),
    environments=st.sampled_from(GLOBS),
    actions=st.frozensets(st.sampled_from(list(Action)), min_size=1),
    deny=st.booleans(),
    keys=st.none() | st.frozensets(st.sampled_from(KEYS), max_size=3),
)
key_st = st.none() | st.sampled_from(KEYS)


@given(
    scopes=st.lists(scope_st, max_size=6),
    action=st.sampled_from(list(Action)),
    project=st.sampled_from(PROJECTS),
    env=st.sampled_from(ENVS),
    key=key_st,
)
def test_allowed_matches_the_reference_model(
    scopes: list[Scope], action: Action, project: str, env: str, key: str | None
) -> None:
    assert allowed(scopes, action, project, env, key=key) == reference(scopes, action, project, env, key)


@given(
    parent=st.lists(scope_st, max_size=4),
    child=st.lists(scope_st, max_size=4),
    action=st.sampled_from(list(Action)),
    project=st.sampled_from(PROJECTS),
    env=st.sampled_from(ENVS),
    key=key_st,
)
def test_a_covered_child_never_reaches_what_its_parent_cannot(
    parent: list[Scope], child: list[Scope], action: Action, project: str, env: str, key: str | None
) -> None:
    if not covered(parent, child):
        return
    effective = with_denies(parent, child)
    if allowed(effective, action, project, env, key=key):
        assert allowed(parent, action, project, env, key=key)


def test_no_scopes_means_nothing() -> None:
    assert not allowed([], Action.READ, "microblog", "production")
    assert not allowed([], Action.ADMIN, None, None)


def test_deny_wins_over_a_wildcard_grant() -> None:
    scopes = [
        Scope("*", "*", frozenset(Action)),
        Scope("microblog", "production", frozenset({Action.READ}), deny=True),
    ]
    assert not allowed(scopes, Action.READ, "microblog", "production")
    assert allowed(scopes, Action.READ, "microblog", "staging")
    assert allowed(scopes, Action.WRITE, "microblog", "production")


def test_project_wide_actions_need_every_environment() -> None:
    staging_admin = [Scope("microblog", "staging", frozenset({Action.ADMIN}))]
    assert allowed(staging_admin, Action.ADMIN, "microblog", "staging")
    assert not allowed(staging_admin, Action.ADMIN, "microblog", None)


def test_case_variants_of_a_project_do_not_match() -> None:
    scopes = [Scope("microblog", "prod", frozenset({Action.READ}))]
    assert not allowed(scopes, Action.READ, "microblog", "Prod")
    assert not allowed(scopes, Action.READ, "microblog", "\u0440rod")  # Cyrillic er


def test_key_restricted_grant_reaches_only_its_keys_and_never_the_whole_environment() -> None:
    scopes = [Scope("shop", "production", frozenset({Action.READ}), keys=frozenset({"DB_PASSWORD"}))]
    assert allowed(scopes, Action.READ, "shop", "production", key="DB_PASSWORD")
    assert not allowed(scopes, Action.READ, "shop", "production", key="API_KEY")
    assert not allowed(scopes, Action.READ, "shop", "production")  # list, resolved, compile, export
    assert not allowed(scopes, Action.READ, "shop", None)
    assert not allowed(scopes, Action.READ, "shop", "staging", key="DB_PASSWORD")
    assert not allowed(scopes, Action.WRITE, "shop", "production", key="DB_PASSWORD")
    assert not allowed([], Action.READ, "shop", "production", key="DB_PASSWORD")


def test_key_restricted_deny_refuses_its_keys_and_environment_wide_calls() -> None:
    scopes = [
        Scope("shop", "*", frozenset({Action.READ})),
        Scope("shop", "production", frozenset({Action.READ}), deny=True, keys=frozenset({"ROOT_KEY"})),
    ]
    assert not allowed(scopes, Action.READ, "shop", "production", key="ROOT_KEY")
    assert allowed(scopes, Action.READ, "shop", "production", key="API_KEY")
    assert not allowed(scopes, Action.READ, "shop", "production")
    assert allowed(scopes, Action.READ, "shop", "staging")
    assert allowed(scopes, Action.READ, "shop", "staging", key="ROOT_KEY")


def test_child_keys_must_be_a_subset_of_the_parent_keys() -> None:
    read = frozenset({Action.READ})
    everything = Scope("shop", "production", read)
    two = Scope("shop", "production", read, keys=frozenset({"A", "B"}))
    one = Scope("shop", "production", read, keys=frozenset({"A"}))
    other = Scope("shop", "production", read, keys=frozenset({"A", "C"}))
    assert everything.covers(two) and two.covers(one) and two.covers(two)
    assert not two.covers(everything)
    assert not two.covers(other)
    assert not one.covers(two)
    assert Scope("shop", "*", read, keys=frozenset({"A"})).covers(
        Scope("shop", "production", read, keys=frozenset())
    )


def test_keys_round_trip_and_bad_keys_name_the_field() -> None:
    s = Scope("shop", "production", frozenset({Action.READ}), keys=frozenset({"B", "A"}))
    assert s.to_json()["keys"] == ["A", "B"]
    assert scope_from_json(s.to_json()) == s
    assert "keys" not in Scope("shop", "*", frozenset({Action.READ})).to_json()
    base = {"project": "shop", "actions": ["read"]}
    for bad, field in [
        ({**base, "keys": "A"}, "scopes.keys"),
        ({**base, "keys": ["A", "bad-name"]}, "scopes.keys[1]"),
        ({**base, "keys": [1]}, "scopes.keys[0]"),
        ({**base, "keys": [f"K{i}" for i in range(1001)]}, "scopes.keys"),
    ]:
        try:
            scope_from_json(bad)
        except Exception as exc:
            assert str(exc).startswith(field + ":"), (field, str(exc))
        else:
            raise AssertionError(f"accepted {bad}")


def test_scope_json_round_trip_and_errors_name_the_field() -> None:
    s = Scope("shop", "prod*", frozenset({Action.READ}), deny=True)
    assert scope_from_json(s.to_json()) == s
    for bad, field in [
        ({"project": "Shop", "actions": ["read"]}, "scopes.project"),
        ({"project": "shop", "environments": "../x", "actions": ["read"]}, "scopes.environments"),
        ({"project": "shop", "actions": ["sudo"]}, "scopes.actions"),
        ({"project": "shop", "actions": ["read"], "deny": "yes"}, "scopes.deny"),
        ({"project": "shop", "actions": ["read"], "extra": 1}, "scopes"),
    ]:
        try:
            scope_from_json(bad)
        except Exception as exc:
            assert str(exc).startswith(field), (bad, str(exc))
        else:
            raise AssertionError(f"accepted {bad}")
