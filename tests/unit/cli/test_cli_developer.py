"""Issue 15 at the terminal: `secrets list --resolved`, `secrets get` through inheritance, completion, --json.

The broker is a stand-in (tests/unit/cli/standin_broker.py) used only for CLI unit tests; end-to-end tests
against the real broker live in tests/e2e. Its `shop` project has `common` <- `production`.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest
from cli_test_support import Invoke, canary
from click.shell_completion import ShellComplete
from standin_broker import StandinBroker

from cli import options
from cli.client import MASK
from cli.commands.secrets import REFUSAL_ON_ARGV
from cli.credentials import Credential
from cli.root import strongroom

PROD = ("-p", "shop", "-e", "production")


@pytest.fixture
def tree(broker: StandinBroker) -> dict[str, str]:
    """common: DB_URL, SHARED (overridden in production), LOG_LEVEL (not sensitive); production: SHARED, OWN."""
    values = {name: canary() for name in ("DB_URL", "SHARED_COMMON", "SHARED", "OWN")}
    broker.put("shop", "common", "DB_URL", values["DB_URL"])
    broker.put("shop", "common", "SHARED", values["SHARED_COMMON"])
    broker.put("shop", "common", "LOG_LEVEL", "info", sensitive=False)
    broker.put("shop", "production", "SHARED", values["SHARED"])
    broker.put("shop", "production", "SHARED", values["SHARED"])
    broker.put("shop", "production", "OWN", values["OWN"])
    broker.requests.clear()
    return values


def value_reads(broker: StandinBroker) -> list[str]:
    """Paths of every request that returns a value (a secret read or a resolved view)."""
    return [
        r.target
        for r in broker.calls("GET")
        if "/secrets/" in r.target or r.target.split("?")[0].endswith("/resolved")
    ]


# --- secrets list --resolved


def test_list_resolved_shows_each_name_with_where_it_comes_from(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, tree: dict[str, str]
) -> None:
    result = cli("secrets", "list", *PROD, "--resolved")

    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows[0] == ["NAME", "VERSION", "SENSITIVE", "FROM", "UPDATED"]
    assert [row[:4] for row in rows[1:]] == [
        ["DB_URL", "1", "yes", "common"],
        ["LOG_LEVEL", "1", "no", "common"],
        ["OWN", "1", "yes", "production"],
        ["SHARED", "2", "yes", "production"],  # the nearest environment wins
    ]
    for value in tree.values():
        assert value not in result.output


def test_list_resolved_reads_no_value(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, tree: dict[str, str]
) -> None:
    result = cli("secrets", "list", *PROD, "--resolved", "--json")

    assert result.exit_code == 0, result.output
    assert value_reads(broker) == []
    assert {(item["name"], item["environment"]) for item in json.loads(result.stdout)} == {
        ("DB_URL", "common"),
        ("LOG_LEVEL", "common"),
        ("OWN", "production"),
        ("SHARED", "production"),
    }


def test_list_resolved_of_an_unknown_environment_is_a_404(
    broker: StandinBroker, cli: Invoke, logged_in: Credential
) -> None:
    result = cli("secrets", "list", "-p", "shop", "-e", "nope", "--resolved")

    assert result.exit_code == 1
    assert result.stderr == "Error: projects/shop/environments/nope: no such environment\n"


# --- secrets get through inheritance


def test_get_reveal_reads_through_inheritance_and_says_where_on_stderr(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, tree: dict[str, str]
) -> None:
    result = cli("secrets", "get", *PROD, "DB_URL", "--reveal")

    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == tree["DB_URL"].encode()  # byte-exact, nothing added
    assert result.stderr == "DB_URL: version 1 from shop/common\n"
    # One value read, from where it lives, audited as a reveal there.
    reads = [r for r in broker.calls("GET") if "/secrets/DB_URL" in r.target]
    assert [(r.target.split("/")[5], r.reveal) for r in reads] == [("production", "1"), ("common", "1")]


def test_get_of_an_own_secret_is_unchanged_and_says_nothing_more(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, tree: dict[str, str]
) -> None:
    result = cli("secrets", "get", *PROD, "SHARED", "--reveal")

    assert result.exit_code == 0, result.output
    assert result.stdout == tree["SHARED"] and result.stderr == ""
    assert broker.calls("GET", "/v1/projects/shop/environments") == []


def test_get_masked_shows_the_origin_and_no_value(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, tree: dict[str, str]
) -> None:
    result = cli("secrets", "get", *PROD, "DB_URL")

    assert result.exit_code == 0, result.output
    assert "environment: common (inherited by production)" in result.stdout
    assert tree["DB_URL"] not in result.output


def test_get_json_names_the_origin(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, tree: dict[str, str]
) -> None:
    result = cli("--json", "secrets", "get", *PROD, "DB_URL")

    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert (shown["environment"], shown["inherited"], shown["value"]) == ("common", True, MASK)
    assert tree["DB_URL"] not in result.output


def test_get_of_a_name_nowhere_in_the_chain_names_the_chain(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, tree: dict[str, str]
) -> None:
    result = cli("secrets", "get", *PROD, "MISSING")

    assert result.exit_code == 1
    assert result.stderr == (
        "Error: projects/shop/environments/production: no secret MISSING "
        "(nor in the environments it inherits: common)\n"
    )


def test_get_with_a_version_never_reads_a_parent(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, tree: dict[str, str]
) -> None:
    result = cli("secrets", "get", *PROD, "DB_URL", "--version", "1")

    assert result.exit_code == 1
    assert "environments/production/secrets/DB_URL: not found" in result.stderr
    assert [r for r in broker.calls("GET") if "/common/" in r.target] == []


def test_get_in_an_unknown_environment_keeps_the_brokers_answer(
    broker: StandinBroker, cli: Invoke, logged_in: Credential
) -> None:
    result = cli("secrets", "get", "-p", "shop", "-e", "nope", "DB_URL")

    assert result.exit_code == 1
    assert result.stderr == "Error: projects/shop/environments/nope: not found\n"


def test_a_refusal_where_a_value_is_inherited_from_says_why_it_was_asked(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, tree: dict[str, str]
) -> None:
    # As for a token scoped to production only: the broker refuses reads in common.
    refusal = {"detail": "the token's scopes do not grant read"}
    broker.override("GET", "/v1/projects/shop/environments/common/secrets/DB_URL", 403, refusal)
    broker.override("GET", "/v1/projects/shop/environments/common/secrets", 403, refusal)

    got = cli("secrets", "get", *PROD, "DB_URL", "--reveal")
    listed = cli("secrets", "list", *PROD, "--resolved", "--json")

    expected = (
        "shop/production inherits from common, and reading there needs read on shop/common: "
        "the token's scopes do not grant read"
    )
    assert got.exit_code == 1 and got.stdout == "" and got.stderr == f"Error: {expected}\n"
    assert listed.exit_code == 1 and listed.stdout == ""
    assert json.loads(listed.stderr) == {"error": expected, "field": None, "status": 403}


# --- --json: output and errors


def test_the_global_json_gives_what_the_commands_own_gives(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, tree: dict[str, str]
) -> None:
    own = cli("secrets", "list", *PROD, "--json")
    global_ = cli("--json", "secrets", "list", *PROD)

    assert own.exit_code == global_.exit_code == 0
    assert json.loads(global_.stdout) == json.loads(own.stdout)


@pytest.mark.parametrize("where", ["global", "command"])
def test_a_broker_error_under_json_is_json_on_stderr(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, where: str
) -> None:
    args = ["secrets", "list", "-p", "shop", "-e", "staging"]
    result = cli("--json", *args) if where == "global" else cli(*args, "--json")

    assert result.exit_code == 1
    assert result.stdout == ""
    assert json.loads(result.stderr) == {
        "error": "projects/shop/environments/staging: not found",
        "field": None,
        "status": 404,
    }
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("where", ["global", "command"])
def test_a_usage_error_under_json_names_the_field(cli: Invoke, where: str) -> None:
    args = ["secrets", "list", "-p", "shop", "-e", "Not_A_Slug"]
    result = cli("--json", *args) if where == "global" else cli(*args, "--json")

    assert result.exit_code == 2
    error = json.loads(result.stderr)
    assert (error["field"], error["status"]) == ("environment", None)
    assert error["error"].startswith("Invalid value for '-e' / '--environment': must be lower-case")


def test_a_broker_validation_error_under_json_names_its_field(
    broker: StandinBroker, cli: Invoke, logged_in: Credential
) -> None:
    path = "/v1/projects/shop/environments/production/secrets/DB_PASSWORD"
    broker.override("PUT", path, 400, {"detail": "value: must be at most 65536 bytes"})

    result = cli("--json", "secrets", "set", *PROD, "DB_PASSWORD", input=canary())

    assert result.exit_code == 1
    assert json.loads(result.stderr) == {
        "error": "value: must be at most 65536 bytes",
        "field": "value",
        "status": 400,
    }


def test_a_missing_option_under_json_names_it(cli: Invoke) -> None:
    result = cli("--json", "secrets", "get", "-e", "production", "NAME")

    assert result.exit_code == 2
    assert json.loads(result.stderr)["field"] == "project"


def test_an_unknown_root_option_under_json_is_json(cli: Invoke) -> None:
    result = cli("--json", "--no-such-option", "secrets")

    assert result.exit_code == 2
    assert json.loads(result.stderr) == {
        "error": "No such option '--no-such-option'.",
        "field": "no_such_option",
        "status": None,
    }


def test_a_cli_error_under_json_keeps_its_exit_status(cli: Invoke) -> None:
    result = cli("--json", "secrets", "list", *PROD)

    assert result.exit_code == 1
    assert json.loads(result.stderr) == {
        "error": "not logged in: run strongroom login --url URL --client-id ID",
        "field": None,
        "status": None,
    }


def test_a_value_typed_on_the_command_line_is_not_in_the_json_error(
    cli: Invoke, logged_in: Credential
) -> None:
    secret = canary()

    result = cli("--json", "secrets", "set", *PROD, "DB_PASSWORD", secret)

    assert result.exit_code == 2
    assert json.loads(result.stderr)["error"] == REFUSAL_ON_ARGV
    assert secret not in result.output


def test_a_value_the_broker_echoes_is_masked_in_the_json_error(
    broker: StandinBroker, cli: Invoke, logged_in: Credential
) -> None:
    secret = canary()
    path = "/v1/projects/shop/environments/production/secrets/DB_PASSWORD"
    broker.override("PUT", path, 400, {"detail": f"value: {secret} is too long"})

    result = cli("--json", "secrets", "set", *PROD, "DB_PASSWORD", input=secret)

    assert result.exit_code == 1
    assert json.loads(result.stderr) == {
        "error": f"value: {MASK} is too long",
        "field": "value",
        "status": 400,
    }
    assert secret not in result.output


def test_without_json_errors_stay_sentences(cli: Invoke) -> None:
    result = cli("secrets", "list", "-p", "shop", "-e", "Not_A_Slug")

    assert result.exit_code == 2
    assert "Error: Invalid value for '-e' / '--environment'" in result.stderr
    assert not result.stderr.lstrip().startswith("{")


# --- completion of project and environment names


def complete(args: list[str], incomplete: str) -> list[str]:
    """What click's shell completion offers for `strongroom ARGS INCOMPLETE<TAB>`."""
    return [
        item.value
        for item in ShellComplete(strongroom, {}, "strongroom", "_X").get_completions(args, incomplete)
    ]


def test_projects_complete_from_the_broker(broker: StandinBroker, logged_in: Credential) -> None:
    broker.add_project("shipping")

    assert complete(["secrets", "list", "-p"], "sh") == ["shipping", "shop"]
    assert complete(["secrets", "list", "-p"], "shi") == ["shipping"]


def test_environments_complete_for_the_project_given(broker: StandinBroker, logged_in: Credential) -> None:
    assert complete(["secrets", "list", "-p", "shop", "-e"], "") == ["common", "production"]
    assert complete(["run", "-p", "shop", "-e"], "pro") == ["production"]
    assert complete(["envs", "create", "-p", "shop", "staging", "--parent"], "c") == ["common"]


def test_environments_need_a_project_to_complete(broker: StandinBroker, logged_in: Credential) -> None:
    assert complete(["secrets", "list", "-e"], "") == []


def test_completion_without_a_session_offers_nothing_and_prints_nothing(
    capfd: pytest.CaptureFixture[str],
) -> None:
    assert complete(["secrets", "list", "-p"], "") == []
    assert complete(["secrets", "list", "-p", "shop", "-e"], "") == []

    captured = capfd.readouterr()
    assert captured.out == captured.err == ""


@pytest.fixture
def silent_broker() -> Iterator[str]:
    """A URL where a socket accepts connections (the kernel's backlog) but never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def test_completion_gives_up_on_a_broker_that_does_not_answer(
    silent_broker: str, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    seen: list[float] = []
    monkeypatch.setenv("STRONGROOM_TOKEN", "srt_" + "a" * 40)
    monkeypatch.setattr(options, "COMPLETION_TIMEOUT_SECONDS", 0.2)

    from cli.client import transport

    original = transport.Transport.__init__

    def spy(self: transport.Transport, *args: object, **kwargs: object) -> None:
        seen.append(float(kwargs["timeout"]))  # type: ignore[arg-type]
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(transport.Transport, "__init__", spy)

    assert complete(["--url", silent_broker, "secrets", "list", "-p"], "") == []
    assert seen == [0.2]
    captured = capfd.readouterr()
    assert captured.out == captured.err == ""
