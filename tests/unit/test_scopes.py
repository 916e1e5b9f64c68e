"""Scopes: default deny, explicit deny wins, delegation never widens; checked against a reference model."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from broker.domain.scopes import Action, Scope, allowed, covered, scope_from_json, with_denies

PROJECTS = ["microblog", "shop"]
ENVS = ["common", "staging", "production", "prod-eu"]
GLOBS = ["*", "common", "staging", "production", "prod*", "prod-??", "st*"]


def glob_to_regex(glob: str) -> re.Pattern[str]:
    """An independent glob reading for the reference model: * any run, ? one character."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob) + r"\Z")


def reference(scopes: list[Scope], action: Action, project: str, env: str) -> bool:
    """The rule as written in SECURITY.md: nothing unless granted, and any matching deny refuses."""

    def hit(s: Scope) -> bool:
        return (
            action in s.actions
            and s.project in ("*", project)
            and bool(glob_to_regex(s.environments).match(env))
        )

    return not any(hit(s) for s in scopes if s.deny) and any(hit(s) for s in scopes if not s.deny)


scope_st = st.builds(
    Scope,
    project=st.sampled_from(["*", *PROJECTS]),
    environments=st.sampled_from(GLOBS),
    actions=st.frozensets(st.sampled_from(list(Action)), min_size=1),
    deny=st.booleans(),
)


@given(
    scopes=st.lists(scope_st, max_size=6),
    action=st.sampled_from(list(Action)),
    project=st.sampled_from(PROJECTS),
    env=st.sampled_from(ENVS),
)
def test_allowed_matches_the_reference_model(
    scopes: list[Scope], action: Action, project: str, env: str
) -> None:
    assert allowed(scopes, action, project, env) == reference(scopes, action, project, env)


@given(
    parent=st.lists(scope_st, max_size=4),
    child=st.lists(scope_st, max_size=4),
    action=st.sampled_from(list(Action)),
    project=st.sampled_from(PROJECTS),
    env=st.sampled_from(ENVS),
)
def test_a_covered_child_never_reaches_what_its_parent_cannot(
    parent: list[Scope], child: list[Scope], action: Action, project: str, env: str
) -> None:
    if not covered(parent, child):
        return
    effective = with_denies(parent, child)
    if allowed(effective, action, project, env):
        assert allowed(parent, action, project, env)


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
