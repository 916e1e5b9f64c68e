"""`strongroom projects ...` and `strongroom envs ...` against the stand-in broker.

The broker is a stand-in (tests/unit/cli/standin_broker.py) used only for CLI unit tests; end-to-end tests
against the real broker live in tests/e2e.
"""

from __future__ import annotations

import json

import pytest
from cli_test_support import Invoke
from standin_broker import StandinBroker

from cli.credentials import Credential


def test_projects_list_is_an_aligned_table(broker: StandinBroker, cli: Invoke, logged_in: Credential) -> None:
    broker.add_project("blog")

    result = cli("projects", "list")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "SLUG  DESCRIPTION   CREATED",
        "shop  the web shop  2030-01-01T00:00:00Z",
        "blog                2030-01-01T00:00:00Z",
    ]


def test_projects_list_json(cli: Invoke, logged_in: Credential) -> None:
    result = cli("projects", "list", "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {"slug": "shop", "description": "the web shop", "created_at": "2030-01-01T00:00:00Z"}
    ]


def test_projects_list_when_there_are_none(broker: StandinBroker, cli: Invoke, logged_in: Credential) -> None:
    broker.projects.clear()

    result = cli("projects", "list")

    assert result.exit_code == 0
    assert result.stdout == "No projects.\n"


def test_projects_list_neutralises_terminal_escapes_from_the_broker(
    broker: StandinBroker, cli: Invoke, logged_in: Credential
) -> None:
    broker.add_project("evil", "\x1b]0;pwned\x07 and\nnewline")

    result = cli("projects", "list")

    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout
    assert "\\x1b]0;pwned\\x07 and\\nnewline" in result.stdout
    assert len(result.stdout.splitlines()) == 3


def test_projects_create(broker: StandinBroker, cli: Invoke, logged_in: Credential) -> None:
    result = cli("projects", "create", "blog", "--description", "the blog")

    assert result.exit_code == 0, result.output
    assert result.stdout == "Created project blog.\n"
    assert broker.calls("POST")[0].body == {"slug": "blog", "description": "the blog"}
    assert broker.projects["blog"]["description"] == "the blog"


def test_projects_create_a_duplicate_is_the_brokers_sentence(cli: Invoke, logged_in: Credential) -> None:
    result = cli("projects", "create", "shop")

    assert result.exit_code == 1
    assert result.stderr == "Error: projects/shop: already exists\n"


@pytest.mark.parametrize("slug", ["Shop", "-shop", "sh op", "a" * 65, "..", "shop/x", ""])
def test_projects_create_refuses_a_bad_slug_before_any_round_trip(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, slug: str
) -> None:
    result = cli("projects", "create", "--", slug)

    assert result.exit_code == 2
    assert "must be lower-case letters, digits and '-'" in result.stderr
    assert broker.calls() == []


def test_envs_list_shows_parents(cli: Invoke, logged_in: Credential) -> None:
    result = cli("envs", "list", "-p", "shop")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "SLUG        PARENT  CREATED",
        "common      -       2030-01-01T00:00:00Z",
        "production  common  2030-01-01T00:00:00Z",
    ]


def test_envs_list_json(cli: Invoke, logged_in: Credential) -> None:
    result = cli("envs", "list", "--json", env={"STRONGROOM_PROJECT": "shop"})

    assert result.exit_code == 0, result.output
    assert [e["parent"] for e in json.loads(result.stdout)] == [None, "common"]


def test_envs_list_needs_a_project(cli: Invoke, logged_in: Credential) -> None:
    result = cli("envs", "list")

    assert result.exit_code == 2
    assert "Missing option '-p' / '--project'" in result.stderr


def test_envs_list_of_a_missing_project_is_one_sentence(cli: Invoke, logged_in: Credential) -> None:
    result = cli("envs", "list", "-p", "nope")

    assert result.exit_code == 1
    assert result.stderr == "Error: projects/nope: not found\n"


def test_envs_create_with_a_parent(broker: StandinBroker, cli: Invoke, logged_in: Credential) -> None:
    result = cli("envs", "create", "-p", "shop", "staging", "--parent", "common")

    assert result.exit_code == 0, result.output
    assert result.stdout == "Created environment shop/staging, inheriting from common.\n"
    assert broker.calls("POST")[0].body == {"slug": "staging", "parent": "common"}


def test_envs_create_without_a_parent(broker: StandinBroker, cli: Invoke, logged_in: Credential) -> None:
    result = cli("envs", "create", "-p", "shop", "dev")

    assert result.exit_code == 0, result.output
    assert result.stdout == "Created environment shop/dev.\n"
    assert broker.calls("POST")[0].body == {"slug": "dev", "parent": None}


def test_envs_create_without_admin_scope_is_the_brokers_sentence(broker: StandinBroker, cli: Invoke) -> None:
    broker.add_client("writer", "s", actions=("read", "write"))
    env = {"STRONGROOM_TOKEN": broker.issue("writer"), "STRONGROOM_URL": broker.url}

    result = cli("envs", "create", "-p", "shop", "dev", env=env)

    assert result.exit_code == 1
    assert result.stderr == "Error: the token's scopes do not grant admin\n"
