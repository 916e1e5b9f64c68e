"""`strongroom tokens create|list|revoke` and `strongroom secrets generate`, against the stand-in broker.

The broker is a stand-in (tests/unit/cli/standin_broker.py) used only for CLI unit tests; end-to-end tests
against the real broker live in tests/e2e.
"""

from __future__ import annotations

import json

import pytest
from cli_test_support import CLIENT_ID, Invoke, canary
from standin_broker import StandinBroker

from cli.commands.tokens import parse_scope
from cli.credentials import Credential

ENV = ("-p", "shop", "-e", "production")


# --- tokens create


def test_create_prints_the_token_alone_on_stdout_and_what_it_can_do_on_stderr(
    broker: StandinBroker, cli: Invoke, logged_in: Credential
) -> None:
    result = cli(
        "tokens",
        "create",
        "--scope",
        "shop:production:read",
        "--deny",
        "shop:production:write",
        "--ttl",
        "10m",
        "--uses",
        "3",
        "--cidr",
        "10.0.0.0/8",
    )

    assert result.exit_code == 0, result.output
    [call] = broker.calls("POST", "/v1/tokens")
    assert call.body == {
        "scopes": [
            {"project": "shop", "environments": "production", "actions": ["read"], "deny": False},
            {"project": "shop", "environments": "production", "actions": ["write"], "deny": True},
        ],
        "ttl": 600,
        "num_uses": 3,
        "bound_cidrs": ["10.0.0.0/8"],
    }
    token = result.stdout.strip()
    assert token in broker.tokens and result.stdout == token + "\n"
    assert token not in result.stderr
    assert "read shop/production; deny write shop/production" in result.stderr
    assert "expires in 10 minutes; 3 uses; only from 10.0.0.0/8" in result.stderr


def test_create_json_has_the_token_and_its_metadata(
    broker: StandinBroker, cli: Invoke, logged_in: Credential
) -> None:
    result = cli("tokens", "create", "--json")

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["token"] in broker.tokens
    assert data["accessor"].startswith("sra_") and data["expires_in"] == 900
    assert broker.calls("POST", "/v1/tokens")[0].body["scopes"] is None  # all of the session's scopes


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--scope", "shop"), "is not PROJECT[:ENVIRONMENTS]:ACTIONS"),
        (("--scope", "Shop:read"), "the project must be a project slug or *"),
        (("--scope", "shop:prod:fly"), "the actions must be among read, write, admin, audit"),
        (("--scope", "shop:pr/od:read"), "the environments must be a slug or a glob"),
        (("--ttl", "forever"), "must be seconds or a duration"),
        (("--ttl", "32d"), "must be between 1 second and 31 days"),
        (("--uses", "0"), "--uses"),
        (("--deny", "shop:*:write"), "--deny narrows --scope grants"),
    ],
)
def test_create_usage_errors_send_nothing(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, args: tuple[str, ...], message: str
) -> None:
    result = cli("tokens", "create", *args)

    assert result.exit_code == 2
    assert message in result.stderr
    assert broker.calls() == []


def test_scope_forms() -> None:
    assert parse_scope("shop:read", deny=False) == {
        "project": "shop",
        "environments": "*",
        "actions": ["read"],
        "deny": False,
    }
    assert parse_scope("*:prod*:read+write", deny=True)["actions"] == ["read", "write"]


def test_a_broker_refusal_is_one_sentence(broker: StandinBroker, cli: Invoke, logged_in: Credential) -> None:
    broker.override(
        "POST", "/v1/tokens", 403, {"detail": "scopes: a child token cannot be broader than its parent"}
    )

    result = cli("tokens", "create", "--scope", "*:*:admin")

    assert result.exit_code == 1
    assert result.stderr == "Error: scopes: a child token cannot be broader than its parent\n"
    assert result.stdout == ""


# --- tokens list and revoke


def test_list_shows_accessors_and_never_tokens(
    broker: StandinBroker, cli: Invoke, logged_in: Credential
) -> None:
    ci = json.loads(cli("tokens", "create", "--uses", "5", "--json").stdout)

    table = cli("tokens", "list")
    as_json = cli("tokens", "list", "--json")

    assert table.exit_code == 0, table.output
    assert table.stdout.splitlines()[0].split() == [
        "ACCESSOR",
        "PRINCIPAL",
        "SCOPES",
        "EXPIRES",
        "USES",
        "CIDRS",
        "CREATED",
    ]
    assert ci["accessor"] in table.stdout and "5/5" in table.stdout
    for token in broker.tokens:
        assert token not in table.output + as_json.output
    items = json.loads(as_json.stdout)
    assert next(i["accessor"] for i in items) == ci["accessor"]
    assert "token" not in items[0]


def test_list_all_includes_revoked_tokens(broker: StandinBroker, cli: Invoke, logged_in: Credential) -> None:
    ci = json.loads(cli("tokens", "create", "--json").stdout)
    assert cli("tokens", "revoke", ci["accessor"]).exit_code == 0

    live = cli("tokens", "list")
    everything = cli("tokens", "list", "--all")

    assert ci["accessor"] not in live.stdout
    assert "revoked" in next(line for line in everything.stdout.splitlines() if ci["accessor"] in line)
    assert broker.calls("GET", "/v1/tokens")[-1].target == "/v1/tokens?limit=200&include_inactive=true"


def test_list_needs_admin_and_says_so_in_one_sentence(
    broker: StandinBroker, cli: Invoke, client_secret: str
) -> None:
    broker.add_client("reader", "s3", actions=("read",))
    token = broker.issue("reader")

    result = cli("tokens", "list", env={"STRONGROOM_TOKEN": token, "STRONGROOM_URL": broker.url})

    assert result.exit_code == 1
    assert result.stderr == "Error: the token's scopes do not grant admin\n"


def test_revoke_by_accessor(broker: StandinBroker, cli: Invoke, logged_in: Credential) -> None:
    ci = json.loads(cli("tokens", "create", "--json").stdout)

    result = cli("tokens", "revoke", ci["accessor"])

    assert result.exit_code == 0, result.output
    assert result.stdout == f"Revoked {ci['accessor']} and every token created from it.\n"
    assert broker.tokens[ci["token"]].revoked
    again = cli("tokens", "revoke", "sra_nobody", "--json")
    # Under --json the error is JSON too (issue 15).
    assert again.exit_code == 1
    assert json.loads(again.stderr) == {
        "error": "accessor: no token has this accessor",
        "field": None,
        "status": 404,
    }


def test_revoke_refuses_a_token_without_echoing_it(
    broker: StandinBroker, cli: Invoke, logged_in: Credential
) -> None:
    token = broker.issue(CLIENT_ID)

    result = cli("tokens", "revoke", token)

    assert result.exit_code == 2
    assert "that is a token, not its accessor" in result.stderr
    assert token not in result.output
    assert broker.calls() == []


# --- secrets generate


def test_generate_creates_once_and_never_prints_the_value(
    broker: StandinBroker, cli: Invoke, logged_in: Credential
) -> None:
    first = cli("secrets", "generate", *ENV, "SECRET_KEY_BASE")
    value = broker.secrets[("shop", "production", "SECRET_KEY_BASE")][-1].value
    again = cli("secrets", "generate", *ENV, "SECRET_KEY_BASE", "--bytes", "32", "--format", "alnum")

    assert first.exit_code == 0, first.output
    assert first.stdout == (
        "Generated shop/production/SECRET_KEY_BASE in the broker (version 1); the value was not shown.\n"
    )
    assert broker.calls("POST")[0].body == {"bytes": 64, "format": "hex", "rotate": False}
    assert again.exit_code == 0
    assert again.stdout == (
        "shop/production/SECRET_KEY_BASE already exists (version 1); left unchanged (--rotate replaces it).\n"
    )
    assert broker.secrets[("shop", "production", "SECRET_KEY_BASE")][-1].value == value
    assert value not in first.output + again.output


def test_generate_rotate_and_reveal(broker: StandinBroker, cli: Invoke, logged_in: Credential) -> None:
    assert cli("secrets", "generate", *ENV, "SECRET_KEY_BASE").exit_code == 0

    result = cli("secrets", "generate", *ENV, "SECRET_KEY_BASE", "--rotate", "--reveal")

    assert result.exit_code == 0, result.output
    value = broker.secrets[("shop", "production", "SECRET_KEY_BASE")][-1].value
    assert result.stdout == value  # raw, nothing added
    assert result.stderr == "Rotated shop/production/SECRET_KEY_BASE: the broker generated version 2.\n"
    read = broker.calls("GET")[-1]
    assert read.reveal == "1"


def test_generate_json(broker: StandinBroker, cli: Invoke, logged_in: Credential) -> None:
    result = cli("secrets", "generate", *ENV, "API_KEY", "--json")

    data = json.loads(result.stdout)
    assert data["generated"] is True and data["secret"]["version"] == 1 and "value" not in data


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--bytes", "8"), "8 is not in the range 16<=x<=1024"),
        (("--format", "base32"), "'base32' is not one of"),
    ],
)
def test_generate_usage_errors(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, args: tuple[str, ...], message: str
) -> None:
    result = cli("secrets", "generate", *ENV, "X", *args)

    assert result.exit_code == 2
    assert message in result.stderr
    assert broker.calls() == []


def test_generate_takes_no_value_from_the_command_line(
    broker: StandinBroker, cli: Invoke, logged_in: Credential
) -> None:
    value = canary()

    result = cli("secrets", "generate", *ENV, "X", value)

    assert result.exit_code == 2
    assert broker.calls() == []


def test_generate_without_write_is_one_sentence(broker: StandinBroker, cli: Invoke) -> None:
    broker.add_client("reader", "s3", actions=("read",))
    env = {"STRONGROOM_TOKEN": broker.issue("reader"), "STRONGROOM_URL": broker.url}

    result = cli("secrets", "generate", *ENV, "X", env=env)

    assert result.exit_code == 1
    assert result.stderr == "Error: the token's scopes do not grant write\n"


def test_get_reveal_sends_the_reveal_header_and_plain_get_does_not(
    broker: StandinBroker, cli: Invoke, logged_in: Credential
) -> None:
    value = canary()
    broker.put("shop", "production", "DB_PASSWORD", value)

    masked = cli("secrets", "get", *ENV, "DB_PASSWORD", "--json")
    shown = cli("secrets", "get", *ENV, "DB_PASSWORD", "--reveal", "--json")

    assert json.loads(masked.stdout)["value"] == "********"
    assert value not in masked.output
    assert json.loads(shown.stdout)["value"] == value
    assert [c.reveal for c in broker.calls("GET")] == [None, "1"]
