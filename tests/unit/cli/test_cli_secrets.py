"""`strongroom secrets ...` against the stand-in broker: values in only by file, pipe or prompt; out only on --reveal.

The broker is a stand-in (tests/unit/cli/standin_broker.py) used only for CLI unit tests; end-to-end tests
against the real broker live in tests/e2e.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_test_support import Invoke, canary
from standin_broker import StandinBroker

from cli import secret_input
from cli.commands.secrets import REFUSAL_ON_ARGV
from cli.credentials import Credential

ENV = ("-p", "shop", "-e", "production")


@pytest.fixture
def value(broker: StandinBroker) -> str:
    """A canary stored as shop/production/DB_PASSWORD version 1."""
    secret = canary()
    broker.put("shop", "production", "DB_PASSWORD", secret)
    return secret


def stored(broker: StandinBroker, name: str) -> str:
    return broker.secrets[("shop", "production", name)][-1].value


# --- list


def test_list_shows_names_and_versions_never_values(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, value: str
) -> None:
    broker.put("shop", "production", "DB_PASSWORD", canary())
    broker.put("shop", "production", "PUBLIC_URL", "https://shop.example", sensitive=False)

    result = cli("secrets", "list", *ENV)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "SENSITIVE", "UPDATED"]
    assert lines[1].split() == ["DB_PASSWORD", "2", "yes", "2030-01-01T00:00:00Z"]
    assert lines[2].split() == ["PUBLIC_URL", "1", "no", "2030-01-01T00:00:00Z"]
    assert lines[1].index("2") == lines[0].index("VERSION")  # columns are aligned
    assert value not in result.output


def test_list_json_is_a_list_of_metadata(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, value: str
) -> None:
    result = cli("secrets", "list", *ENV, "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {
            "name": "DB_PASSWORD",
            "version": 1,
            "sensitive": True,
            "deleted": False,
            "created_at": "2030-01-01T00:00:00Z",
            "updated_at": "2030-01-01T00:00:00Z",
        }
    ]
    assert value not in result.output


def test_list_of_an_empty_environment_says_so(cli: Invoke, logged_in: Credential) -> None:
    result = cli("secrets", "list", *ENV)

    assert result.exit_code == 0
    assert result.stdout == "No secrets in shop/production.\n"


def test_list_needs_an_environment(cli: Invoke, logged_in: Credential) -> None:
    result = cli("secrets", "list", "-p", "shop")

    assert result.exit_code == 2
    assert "Missing option '-e' / '--environment'" in result.stderr


def test_project_comes_from_strongroom_project(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, value: str
) -> None:
    result = cli("secrets", "list", "-e", "production", env={"STRONGROOM_PROJECT": "shop"})

    assert result.exit_code == 0, result.output
    assert broker.calls()[0].target == "/v1/projects/shop/environments/production/secrets"


def test_a_missing_environment_is_the_brokers_sentence(cli: Invoke, logged_in: Credential) -> None:
    result = cli("secrets", "list", "-p", "shop", "-e", "staging")

    assert result.exit_code == 1
    assert result.stderr == "Error: projects/shop/environments/staging: not found\n"


# --- get


def test_get_masks_the_value(cli: Invoke, logged_in: Credential, value: str) -> None:
    result = cli("secrets", "get", *ENV, "DB_PASSWORD")

    assert result.exit_code == 0, result.output
    assert "value:       ********" in result.stdout
    assert "version:     1" in result.stdout
    assert value not in result.output


def test_get_masks_even_a_value_marked_not_sensitive(
    broker: StandinBroker, cli: Invoke, logged_in: Credential
) -> None:
    public = canary()
    broker.put("shop", "production", "PUBLIC_URL", public, sensitive=False)

    result = cli("secrets", "get", *ENV, "PUBLIC_URL")

    assert result.exit_code == 0, result.output
    assert public not in result.output


def test_get_reveal_prints_exactly_the_value_and_nothing_else(
    broker: StandinBroker, cli: Invoke, logged_in: Credential
) -> None:
    exact = f"-----BEGIN KEY-----\r\n{canary()}\n  é ✓ $HOME `id`\n"
    broker.put("shop", "production", "TLS_KEY", exact)

    result = cli("secrets", "get", *ENV, "TLS_KEY", "--reveal")

    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == exact.encode()
    assert result.stderr == ""


def test_get_a_given_version(broker: StandinBroker, cli: Invoke, logged_in: Credential, value: str) -> None:
    broker.put("shop", "production", "DB_PASSWORD", canary())

    result = cli("secrets", "get", *ENV, "DB_PASSWORD", "--version", "1", "--reveal")

    assert result.exit_code == 0, result.output
    assert result.stdout == value
    assert broker.calls()[0].target.endswith("/secrets/DB_PASSWORD?version=1")


def test_get_of_a_missing_secret_is_one_sentence(cli: Invoke, logged_in: Credential) -> None:
    result = cli("secrets", "get", *ENV, "NOPE")

    assert result.exit_code == 1
    # production inherits from common: the sentence says both were looked at.
    assert result.stderr == (
        "Error: projects/shop/environments/production: no secret NOPE "
        "(nor in the environments it inherits: common)\n"
    )


def test_get_without_read_scope_is_the_brokers_sentence(
    broker: StandinBroker, cli: Invoke, value: str
) -> None:
    broker.add_client("auditor", "s", name="audrey", actions=("audit",))
    token = broker.issue("auditor")

    result = cli(
        "secrets", "get", *ENV, "DB_PASSWORD", env={"STRONGROOM_TOKEN": token, "STRONGROOM_URL": broker.url}
    )

    assert result.exit_code == 1
    assert result.stderr == "Error: the token's scopes do not grant read\n"
    assert value not in result.output


@pytest.mark.parametrize("name", ["db-password", "1ABC", "A/B", "..", "A B", "É"])
def test_get_refuses_an_invalid_name_before_any_round_trip(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, name: str
) -> None:
    result = cli("secrets", "get", *ENV, name)

    assert result.exit_code == 2
    assert "must match [A-Za-z_][A-Za-z0-9_]*" in result.stderr
    assert broker.calls() == []


# --- set


def test_set_from_a_file_stores_the_bytes_exactly(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, tmp_path: Path
) -> None:
    exact = f"{canary()}\r\nsecond line\n\n"
    source = tmp_path / "value"
    source.write_bytes(exact.encode())

    result = cli("secrets", "set", *ENV, "TLS_KEY", "--from-file", str(source))

    assert result.exit_code == 0, result.output
    assert result.stdout == "Set shop/production/TLS_KEY: version 1.\n"
    assert stored(broker, "TLS_KEY") == exact
    assert exact.splitlines()[0] not in result.output


def test_set_from_piped_stdin_keeps_the_trailing_newline_and_crlf(
    broker: StandinBroker, cli: Invoke, logged_in: Credential
) -> None:
    exact = f"{canary()}\r\n"

    result = cli("secrets", "set", *ENV, "DB_PASSWORD", input=exact.encode())

    assert result.exit_code == 0, result.output
    assert stored(broker, "DB_PASSWORD") == exact
    [put] = broker.calls("PUT")
    assert put.body == {"value": exact, "sensitive": True, "cas": None}
    assert exact.strip() not in put.target


def test_set_prompts_hidden_with_confirmation_when_stdin_is_a_terminal(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(secret_input, "stdin_is_terminal", lambda: True)
    secret = canary()

    result = cli("secrets", "set", *ENV, "DB_PASSWORD", input=f"{secret}\n{secret}\n")

    assert result.exit_code == 0, result.output
    assert "Value for DB_PASSWORD:" in result.output
    assert "Repeat for confirmation:" in result.output
    assert stored(broker, "DB_PASSWORD") == secret  # the Enter is not part of the value
    assert secret not in result.output


def test_set_prompt_asks_again_when_the_confirmation_differs(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(secret_input, "stdin_is_terminal", lambda: True)
    first, second = canary(), canary()

    result = cli("secrets", "set", *ENV, "DB_PASSWORD", input=f"{first}\n{second}\n{second}\n{second}\n")

    assert result.exit_code == 0, result.output
    assert "do not match" in result.output
    assert stored(broker, "DB_PASSWORD") == second
    assert first not in result.output and second not in result.output


@pytest.mark.parametrize(
    "extra",
    [
        ["{value}"],
        ["--", "{value}"],
        ["-{value}"],
        ["--{value}=x"],
        ["-sh{value}"],
        ["-x{value}e"],
        ["-hush{value}"],
        ["{value}", "-p", "shop"],
    ],
    ids=[
        "plain",
        "after-dashes",
        "dash",
        "long-option",
        "cluster-with-h",
        "ends-in-e",
        "starts-with-h",
        "before",
    ],
)
def test_set_refuses_a_value_on_the_command_line_without_echoing_it(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, extra: list[str]
) -> None:
    secret = canary()

    result = cli("secrets", "set", *ENV, "DB_PASSWORD", *[arg.format(value=secret) for arg in extra])

    assert result.exit_code == 2
    assert f"Error: {REFUSAL_ON_ARGV}\n" in result.stderr
    assert secret not in result.output
    assert broker.calls() == []


def test_set_refuses_the_value_even_before_a_missing_option_error(cli: Invoke, logged_in: Credential) -> None:
    secret = canary()

    result = cli("secrets", "set", "DB_PASSWORD", secret)

    assert result.exit_code == 2
    assert REFUSAL_ON_ARGV in result.stderr
    assert secret not in result.output


def test_set_dash_h_still_shows_help(cli: Invoke) -> None:
    result = cli("secrets", "set", "-h")

    assert result.exit_code == 0
    assert result.stdout.startswith("Usage: strongroom secrets set [OPTIONS] NAME\n")


def test_set_not_sensitive_and_cas_reach_the_broker(
    broker: StandinBroker, cli: Invoke, logged_in: Credential
) -> None:
    result = cli("secrets", "set", *ENV, "PUBLIC_URL", "--not-sensitive", "--cas", "0", input=b"https://x")

    assert result.exit_code == 0, result.output
    assert broker.calls("PUT")[0].body == {"value": "https://x", "sensitive": False, "cas": 0}


def test_set_with_a_stale_cas_is_the_brokers_sentence_with_the_value_masked(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, value: str
) -> None:
    broker.echo_values_in_errors = True  # a broker bug the CLI must not pass on
    new = canary()

    result = cli("secrets", "set", *ENV, "DB_PASSWORD", "--cas", "0", input=new.encode())

    assert result.exit_code == 1
    assert result.stderr.startswith(
        "Error: environments/production/secrets/DB_PASSWORD: cas 0 does not match"
    )
    assert "(value ********)" in result.stderr
    assert new not in result.output and value not in result.output
    assert stored(broker, "DB_PASSWORD") == value


def test_set_refuses_an_empty_value(broker: StandinBroker, cli: Invoke, logged_in: Credential) -> None:
    result = cli("secrets", "set", *ENV, "DB_PASSWORD", input=b"")

    assert result.exit_code == 1
    assert result.stderr == "Error: the value for DB_PASSWORD is empty; refusing to store an empty secret\n"
    assert broker.calls() == []


def test_set_refuses_a_value_over_64_kib(broker: StandinBroker, cli: Invoke, logged_in: Credential) -> None:
    result = cli("secrets", "set", *ENV, "BIG", input=b"x" * (64 * 1024 + 1))

    assert result.exit_code == 1
    assert result.stderr == "Error: the value for BIG is larger than 64 KiB, the broker's limit\n"
    assert broker.calls() == []


def test_set_accepts_exactly_64_kib(broker: StandinBroker, cli: Invoke, logged_in: Credential) -> None:
    result = cli("secrets", "set", *ENV, "BIG", input=b"x" * (64 * 1024))

    assert result.exit_code == 0, result.output
    assert len(stored(broker, "BIG")) == 64 * 1024


def test_set_refuses_a_file_that_is_not_utf8(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, tmp_path: Path
) -> None:
    source = tmp_path / "binary"
    source.write_bytes(b"\xff\xfe\x00secret")

    result = cli("secrets", "set", *ENV, "BLOB", "--from-file", str(source))

    assert result.exit_code == 1
    assert result.stderr == "Error: the value for BLOB is not UTF-8 text\n"
    assert broker.calls() == []


def test_set_without_write_scope_is_the_brokers_sentence(broker: StandinBroker, cli: Invoke) -> None:
    broker.add_client("reader", "s", actions=("read",))
    env = {"STRONGROOM_TOKEN": broker.issue("reader"), "STRONGROOM_URL": broker.url}
    secret = canary()

    result = cli("secrets", "set", *ENV, "DB_PASSWORD", input=secret.encode(), env=env)

    assert result.exit_code == 1
    assert result.stderr == "Error: the token's scopes do not grant write\n"
    assert secret not in result.output


# --- delete, history, rollback


def test_delete(broker: StandinBroker, cli: Invoke, logged_in: Credential, value: str) -> None:
    result = cli("secrets", "delete", *ENV, "DB_PASSWORD")

    assert result.exit_code == 0, result.output
    assert result.stdout == "Deleted shop/production/DB_PASSWORD.\n"
    assert broker.secrets[("shop", "production", "DB_PASSWORD")][-1].deleted


def test_delete_of_a_missing_secret_is_one_sentence(cli: Invoke, logged_in: Credential) -> None:
    result = cli("secrets", "delete", *ENV, "NOPE")

    assert result.exit_code == 1
    assert result.stderr == "Error: environments/production/secrets/NOPE: not found\n"


def test_history_table_and_json_show_versions_not_values(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, value: str
) -> None:
    second = canary()
    broker.put("shop", "production", "DB_PASSWORD", second)

    table = cli("secrets", "history", *ENV, "DB_PASSWORD")
    as_json = cli("secrets", "history", *ENV, "DB_PASSWORD", "--json")

    assert table.exit_code == 0, table.output
    assert [line.split()[0] for line in table.stdout.splitlines()] == ["VERSION", "1", "2"]
    assert table.stdout.splitlines()[2].endswith("current")
    assert json.loads(as_json.stdout)["current_version"] == 2
    assert [v["version"] for v in json.loads(as_json.stdout)["versions"]] == [1, 2]
    for output in (table.output, as_json.output):
        assert value not in output and second not in output


def test_rollback_stores_the_old_value_as_a_new_version(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, value: str
) -> None:
    broker.put("shop", "production", "DB_PASSWORD", canary())

    result = cli("secrets", "rollback", *ENV, "DB_PASSWORD", "1")

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "Rolled shop/production/DB_PASSWORD back to the value of version 1.\nIt is now version 3.\n"
    )
    assert broker.calls("POST")[0].body == {"version": 1}
    assert stored(broker, "DB_PASSWORD") == value
    assert value not in result.output


def test_rollback_to_a_missing_version_is_one_sentence(
    cli: Invoke, logged_in: Credential, value: str
) -> None:
    result = cli("secrets", "rollback", *ENV, "DB_PASSWORD", "9")

    assert result.exit_code == 1
    assert result.stderr == "Error: environments/production/secrets/DB_PASSWORD: no version 9\n"


def test_rollback_needs_a_positive_version(cli: Invoke, logged_in: Credential) -> None:
    result = cli("secrets", "rollback", *ENV, "DB_PASSWORD", "0")

    assert result.exit_code == 2


def test_history_of_a_missing_secret_is_one_sentence(cli: Invoke, logged_in: Credential) -> None:
    result = cli("secrets", "history", *ENV, "NOPE")

    assert result.exit_code == 1
    assert result.stderr == "Error: environments/production/secrets/NOPE: not found\n"
