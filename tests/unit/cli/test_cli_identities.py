"""`strongroom identities ...` and the `tokens create --ttl` cap notice, against the stand-in broker.

The broker is a stand-in (tests/unit/cli/standin_broker.py) used only for CLI unit tests; the broker's own
rules for these routes are proven in tests/integration/auth/test_identity_lifecycle.py.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cli_test_support import Invoke
from standin_broker import StandinBroker

from cli.credentials import Credential


def _secret_of(broker: StandinBroker, client_id: str) -> str:
    return broker.clients[client_id].secret


def test_create_sends_what_was_asked_and_prints_the_secret_alone_on_stdout(
    broker: StandinBroker, cli: Invoke, logged_in: Credential
) -> None:
    result = cli(
        "identities",
        "create",
        "ci",
        "--kind",
        "machine",
        "--scope",
        "shop:production:read",
        "--deny",
        "shop:production:write",
        "--cidr",
        "10.0.0.0/8",
        "--client-id",
        "ci-deployer",
        "--token-ttl",
        "10m",
    )

    assert result.exit_code == 0, result.output
    [call] = broker.calls("POST", "/v1/identities")
    assert call.body == {
        "name": "ci",
        "type": "machine",
        "scopes": [
            {"project": "shop", "environments": "production", "actions": ["read"], "deny": False},
            {"project": "shop", "environments": "production", "actions": ["write"], "deny": True},
        ],
        "bound_cidrs": ["10.0.0.0/8"],
        "client_id": "ci-deployer",
        "token_ttl": 600,
        "token_max_ttl": None,
    }
    secret = _secret_of(broker, "ci-deployer")
    assert result.stdout == secret + "\n"
    assert secret not in result.stderr
    assert "client id ci-deployer" in result.stderr
    assert "only from 10.0.0.0/8" in result.stderr


def test_create_with_secret_file_writes_it_0600_and_prints_no_secret(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, tmp_path: Path
) -> None:
    target = tmp_path / "ci.secret"
    target.write_text("stale\n")
    target.chmod(0o644)

    result = cli("identities", "create", "ci", "--scope", "shop:read", "--secret-file", str(target), "--json")

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert "client_secret" not in data
    assert data["secret_file"] == str(target) and data["status"] == "active"
    secret = _secret_of(broker, data["client_id"])
    assert target.read_text() == secret + "\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert secret not in result.output
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("ci",), "give at least one --scope"),
        (("ci", "--scope", "shop:fly"), "the actions must be among"),
        (("ci", "--scope", "shop:read", "--kind", "robot"), "--kind"),
        (("ci", "--scope", "shop:read", "--client-id", "srs_abcdefghijkl"), "not a client id"),
        (("ci", "--scope", "shop:read", "--token-ttl", "forever"), "--token-ttl"),
        (("ci", "--scope", "shop:read", "--secret-file", "/nonexistent-dir/x"), "--secret-file"),
    ],
)
def test_create_usage_errors_send_nothing(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, args: tuple[str, ...], message: str
) -> None:
    result = cli("identities", "create", *args)

    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "srs_abcdefghijkl" not in result.output
    assert broker.calls() == []


def test_list_show_disable_enable_delete(broker: StandinBroker, cli: Invoke, logged_in: Credential) -> None:
    created = json.loads(cli("identities", "create", "ci", "--scope", "shop:read", "--json").stdout)
    client_id = created["client_id"]
    secret = created["client_secret"]

    listed = cli("identities", "list")
    assert listed.exit_code == 0, listed.output
    assert client_id in listed.stdout and "active" in listed.stdout
    shown = cli("identities", "show", client_id)
    assert shown.exit_code == 0, shown.output
    assert "status:" in shown.stdout and "read shop/*" in shown.stdout

    assert cli("identities", "disable", client_id).exit_code == 0
    assert json.loads(cli("identities", "show", client_id, "--json").stdout)["status"] == "disabled"
    assert cli("identities", "enable", client_id).exit_code == 0
    assert json.loads(cli("identities", "show", client_id, "--json").stdout)["status"] == "active"
    deleted = cli("identities", "delete", client_id)
    assert deleted.exit_code == 0, deleted.output
    assert client_id not in cli("identities", "list").stdout
    assert "deleted" in cli("identities", "list", "--all").stdout

    refused = cli("identities", "enable", client_id)
    assert refused.exit_code == 1
    assert "deleted and cannot be enabled" in refused.stderr

    paths = [c.target for c in broker.calls() if "/v1/identities/" in c.target]
    assert f"/v1/identities/{client_id}/disable" in paths and f"/v1/identities/{client_id}" in paths
    everything = "".join(c.target + json.dumps(c.body) for c in broker.calls())
    assert secret not in everything  # a client secret never travels back to the broker in a request


def test_rotate_secret_with_grace_prints_only_the_new_secret(
    broker: StandinBroker, cli: Invoke, logged_in: Credential
) -> None:
    created = json.loads(cli("identities", "create", "ci", "--scope", "shop:read", "--json").stdout)
    old = created["client_secret"]

    result = cli("identities", "rotate-secret", created["client_id"], "--grace", "1h")

    assert result.exit_code == 0, result.output
    assert broker.calls("POST", f"/v1/identities/{created['client_id']}/rotate-secret")[0].body == {
        "grace": 3600
    }
    new = _secret_of(broker, created["client_id"])
    assert new != old
    assert result.stdout == new + "\n"
    assert new not in result.stderr and old not in result.output
    assert "the old one is accepted until" in result.stderr


def test_rotate_secret_into_a_file_replaces_it_0600(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, tmp_path: Path
) -> None:
    target = tmp_path / "ci.secret"
    created = cli(
        "identities", "create", "ci", "--scope", "shop:read", "--secret-file", str(target), "--json"
    )
    client_id = json.loads(created.stdout)["client_id"]
    old = target.read_text()

    result = cli("identities", "rotate-secret", client_id, "--secret-file", str(target))

    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert target.read_text() == _secret_of(broker, client_id) + "\n" != old
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert "refused from now" in result.stderr


def test_rotate_secret_bad_grace_sends_nothing(
    broker: StandinBroker, cli: Invoke, logged_in: Credential
) -> None:
    result = cli("identities", "rotate-secret", "ci-deployer", "--grace", "32d")

    assert result.exit_code == 2
    assert "--grace" in result.stderr
    assert broker.calls() == []


def test_a_non_admin_gets_the_brokers_refusal(broker: StandinBroker, cli: Invoke, tmp_path: Path) -> None:
    broker.add_client("reader", "reader-secret-0123456789", actions=("read",))
    secret_file = tmp_path / "reader.secret"
    secret_file.write_text("reader-secret-0123456789\n")
    assert (
        cli(
            "login", "--url", broker.url, "--client-id", "reader", "--secret-file", str(secret_file)
        ).exit_code
        == 0
    )

    result = cli("identities", "list")

    assert result.exit_code == 1
    assert "do not grant admin" in result.stderr


# --- tokens create --ttl beyond the session


def test_tokens_create_says_when_ttl_is_capped_by_the_session(
    broker: StandinBroker, cli: Invoke, logged_in: Credential
) -> None:
    result = cli("tokens", "create", "--ttl", "99h")

    assert result.exit_code == 0, result.output
    assert "--ttl asked for 4 days 3 hours, but the maximum is your session's remaining life, 15 minutes" in (
        result.stderr.replace("\n", " ")
    )
    data = json.loads(cli("tokens", "create", "--ttl", "99h", "--json").stdout)
    assert (data["requested_ttl"], data["ttl_capped"], data["expires_in"]) == (356400, True, 900)


def test_tokens_create_within_the_session_says_nothing_of_a_cap(
    broker: StandinBroker, cli: Invoke, logged_in: Credential
) -> None:
    result = cli("tokens", "create", "--ttl", "10m")

    assert result.exit_code == 0, result.output
    assert "--ttl" not in result.stderr
    assert json.loads(cli("tokens", "create", "--ttl", "10m", "--json").stdout)["ttl_capped"] is False
