"""`projects delete`, `envs delete`, `envs set-parent`, `secrets undelete` and `secrets destroy`, against
the stand-in broker (tests/unit/cli/standin_broker.py, used only for CLI unit tests); the broker's own rules
(refusals while in use, audit) are proven by tests/integration."""

from __future__ import annotations

import json

from cli_test_support import Invoke, canary
from standin_broker import StandinBroker

from cli.credentials import Credential


def test_envs_set_parent_sends_the_parent_or_null(
    broker: StandinBroker, cli: Invoke, logged_in: Credential
) -> None:
    broker.add_environment("shop", "staging")
    result = cli("envs", "set-parent", "-p", "shop", "staging", "--parent", "common")
    assert result.exit_code == 0, result.output
    assert result.stdout == "shop/staging now inherits from common.\n"
    result = cli("envs", "set-parent", "-p", "shop", "staging", "--no-parent", "--json")
    assert json.loads(result.stdout)["parent"] is None
    bodies = [c.body for c in broker.calls("PATCH", "/v1/projects/shop/environments/staging")]
    assert bodies == [{"parent": "common"}, {"parent": None}]


def test_envs_set_parent_needs_exactly_one_choice(
    broker: StandinBroker, cli: Invoke, logged_in: Credential
) -> None:
    for args in ((), ("--parent", "common", "--no-parent")):
        result = cli("envs", "set-parent", "-p", "shop", "production", *args)
        assert result.exit_code == 2
        assert "exactly one of --parent ENVIRONMENT and --no-parent" in result.stderr
    assert cli("envs", "set-parent", "-p", "shop", "production", "--parent", "Bad/Slug").exit_code == 2
    assert broker.calls() == []


def test_envs_and_projects_delete_and_the_brokers_refusal(
    broker: StandinBroker, cli: Invoke, logged_in: Credential
) -> None:
    refused = cli("envs", "delete", "-p", "shop", "common")
    assert refused.exit_code == 1
    assert "still has secrets or inheriting environments" in refused.stderr
    assert cli("projects", "delete", "shop").exit_code == 1
    assert (
        cli("envs", "delete", "-p", "shop", "production").stdout == "Deleted environment shop/production.\n"
    )
    assert json.loads(cli("envs", "delete", "-p", "shop", "common", "--json").stdout)["deleted"] is True
    assert cli("projects", "delete", "shop").stdout == "Deleted project shop.\n"
    assert "shop" not in broker.projects


def test_secrets_undelete_and_destroy(broker: StandinBroker, cli: Invoke, logged_in: Credential) -> None:
    first, second = canary(), canary()
    broker.put("shop", "production", "API_KEY", first)
    broker.put("shop", "production", "API_KEY", second)
    env = ("-p", "shop", "-e", "production")
    assert cli("secrets", "delete", *env, "API_KEY").exit_code == 0
    result = cli("secrets", "undelete", *env, "API_KEY")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Undeleted shop/production/API_KEY: version 2.\n"

    result = cli("secrets", "destroy", *env, "API_KEY", "1")
    assert result.exit_code == 0, result.output
    assert "Destroyed version 1 of shop/production/API_KEY" in result.stdout
    assert broker.calls(
        "POST", "/v1/projects/shop/environments/production/secrets/API_KEY/versions/1/destroy"
    )
    history = json.loads(cli("secrets", "history", *env, "API_KEY", "--json").stdout)
    assert [v["destroyed"] for v in history["versions"]] == [True, False]
    assert cli("secrets", "destroy", *env, "API_KEY", "0").exit_code == 2
    for call in cli("secrets", "history", *env, "API_KEY"), result:
        assert first not in call.output and second not in call.output
