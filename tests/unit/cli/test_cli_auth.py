"""`strongroom login`, `logout`, the token sources and renewal, against the stand-in broker.

The broker is a stand-in (tests/unit/cli/standin_broker.py) used only for CLI unit tests; end-to-end tests
against the real broker live in tests/e2e.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cli_test_support import CLIENT_ID, T0, Invoke, canary
from standin_broker import StandinBroker

from cli import credentials, secret_input
from cli.credentials import Credential
from cli.session import SESSION_EXPIRED


def login_args(broker: StandinBroker, *extra: str) -> list[str]:
    return ["login", "--url", broker.url, "--client-id", CLIENT_ID, *extra]


def test_login_with_secret_file_caches_a_0600_credential_and_says_who_and_when(
    broker: StandinBroker,
    cli: Invoke,
    secret_file: Path,
    client_secret: str,
    cache_file: Path,
    clock: list[float],
) -> None:
    result = cli(*login_args(broker, "--secret-file", str(secret_file)))

    assert result.exit_code == 0, result.output
    assert f"Logged in to {broker.url} as alice (user id-{CLIENT_ID})" in result.stdout
    assert "expires in 15 minutes" in result.stdout
    # The trailing newline of the file is not part of the secret: the stand-in compared it exactly.
    assert broker.calls("POST", "/v1/auth/token")[0].body["client_secret"] == client_secret
    assert stat.S_IMODE(cache_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache_file.parent.stat().st_mode) == 0o700
    stored = json.loads(cache_file.read_text())
    token = next(iter(broker.tokens))
    assert stored["token"] == token
    assert stored["url"] == broker.url
    assert stored["principal"] == {"id": f"id-{CLIENT_ID}", "type": "user", "name": "alice"}
    assert stored["obtained_at"] == T0
    assert stored["expires_in"] == 900
    assert stored["max_expires_in"] == 8 * 3600
    assert client_secret not in result.output
    assert token not in result.output


def test_login_reads_the_secret_from_piped_stdin(
    broker: StandinBroker, cli: Invoke, client_secret: str, cache_file: Path
) -> None:
    result = cli(*login_args(broker), input=client_secret + "\n")

    assert result.exit_code == 0, result.output
    assert cache_file.exists()
    assert client_secret not in result.output


def test_login_prompts_hidden_when_stdin_is_a_terminal(
    broker: StandinBroker, cli: Invoke, client_secret: str, cache_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(secret_input, "stdin_is_terminal", lambda: True)

    result = cli(*login_args(broker), input=client_secret + "\n")

    assert result.exit_code == 0, result.output
    assert "Client secret:" in result.output
    assert client_secret not in result.output  # hidden input is not echoed
    assert cache_file.exists()


def test_login_with_a_wrong_secret_fails_in_one_sentence_without_echoing_it(
    broker: StandinBroker, cli: Invoke, cache_file: Path
) -> None:
    wrong = canary()

    result = cli(*login_args(broker), input=wrong)

    assert result.exit_code == 1
    assert result.stderr == "Error: login failed: the broker refused this client ID and secret\n"
    assert wrong not in result.output
    assert not cache_file.exists()


def test_login_refuses_a_client_secret_on_the_command_line_without_echoing_it(
    broker: StandinBroker, cli: Invoke, client_secret: str
) -> None:
    result = cli(*login_args(broker), client_secret)

    assert result.exit_code == 2
    assert "refusing a client secret on the command line" in result.stderr
    assert client_secret not in result.output
    assert broker.calls() == []


def test_login_asks_for_the_given_ttl_and_reports_what_was_granted(
    broker: StandinBroker, cli: Invoke, secret_file: Path
) -> None:
    result = cli(*login_args(broker, "--secret-file", str(secret_file), "--ttl", "3600"))

    assert result.exit_code == 0, result.output
    assert broker.calls("POST", "/v1/auth/token")[0].body["ttl"] == 3600
    assert "the session expires in 1 hour, at " in result.stdout


def test_login_without_a_url_is_a_usage_error(cli: Invoke, secret_file: Path) -> None:
    result = cli("login", "--client-id", CLIENT_ID, "--secret-file", str(secret_file))

    assert result.exit_code == 2
    assert result.stderr == "Error: no broker URL: pass --url or set STRONGROOM_URL\n"


def test_login_uses_the_global_url_and_its_environment_variable(
    broker: StandinBroker, cli: Invoke, secret_file: Path, cache_file: Path
) -> None:
    result = cli(
        "login",
        "--client-id",
        CLIENT_ID,
        "--secret-file",
        str(secret_file),
        env={"STRONGROOM_URL": broker.url},
    )

    assert result.exit_code == 0, result.output
    assert json.loads(cache_file.read_text())["url"] == broker.url


def test_login_refuses_plain_http_to_a_remote_host_before_sending_anything(
    cli: Invoke, secret_file: Path, cache_file: Path
) -> None:
    result = cli(
        "login",
        "--url",
        "http://broker.example.com",
        "--client-id",
        CLIENT_ID,
        "--secret-file",
        str(secret_file),
    )

    assert result.exit_code == 1
    assert result.stderr.startswith("Error: refusing plain http to broker.example.com:")
    assert not cache_file.exists()


def test_login_replaces_a_0644_cache_file_with_a_0600_one(
    broker: StandinBroker, cli: Invoke, secret_file: Path, cache_file: Path
) -> None:
    cache_file.parent.mkdir(parents=True, mode=0o755)
    cache_file.write_text("{}")
    cache_file.chmod(0o644)
    cache_file.parent.chmod(0o755)

    result = cli(*login_args(broker, "--secret-file", str(secret_file)))

    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(cache_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache_file.parent.stat().st_mode) == 0o700
    assert json.loads(cache_file.read_text())["format"] == 1


def test_a_broker_that_is_down_is_one_sentence(cli: Invoke, secret_file: Path) -> None:
    standin = StandinBroker()
    standin.start()
    url = standin.url
    standin.stop()  # the port is now closed

    result = cli("login", "--url", url, "--client-id", CLIENT_ID, "--secret-file", str(secret_file))

    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: cannot reach the broker at {url}: ")
    assert result.stderr.count("\n") == 1


# --- logout


def test_logout_revokes_the_token_and_deletes_the_cache(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, cache_file: Path
) -> None:
    result = cli("logout")

    assert result.exit_code == 0, result.output
    assert result.stdout == f"Logged out of {broker.url}.\n"
    [revoke] = broker.calls("POST", "/v1/auth/token/revoke-self")
    assert revoke.authorization == f"Bearer {logged_in.token}"
    assert broker.tokens[logged_in.token].revoked
    assert not cache_file.exists()


def test_logout_without_a_session_does_nothing(broker: StandinBroker, cli: Invoke) -> None:
    result = cli("logout")

    assert result.exit_code == 0
    assert result.stdout == "Not logged in; nothing to do.\n"
    assert broker.calls() == []


def test_logout_of_an_already_dead_session_still_succeeds(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, cache_file: Path
) -> None:
    broker.revoke_all()

    result = cli("logout")

    assert result.exit_code == 0, result.output
    assert not cache_file.exists()


def test_logout_that_cannot_revoke_deletes_the_cache_and_says_the_token_lives_on(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, cache_file: Path
) -> None:
    broker.override("POST", "/v1/auth/token/revoke-self", 503, {"detail": "the audit log is unavailable"})

    result = cli("logout")

    assert result.exit_code == 1
    assert result.stderr == (
        "Error: deleted the cached session but could not revoke it, so it stays valid until it expires: "
        "the audit log is unavailable\n"
    )
    assert not cache_file.exists()


# --- where the token comes from


def test_the_cached_token_is_sent_in_the_authorization_header_never_in_the_url(
    broker: StandinBroker, cli: Invoke, logged_in: Credential
) -> None:
    result = cli("projects", "list")

    assert result.exit_code == 0, result.output
    [call] = broker.calls()
    assert call.authorization == f"Bearer {logged_in.token}"
    assert logged_in.token not in call.target


def test_strongroom_token_wins_over_the_cached_session(
    broker: StandinBroker, cli: Invoke, logged_in: Credential
) -> None:
    ci_token = broker.issue(CLIENT_ID)

    result = cli("projects", "list", env={"STRONGROOM_TOKEN": ci_token})

    assert result.exit_code == 0, result.output
    [call] = broker.calls()
    assert call.authorization == f"Bearer {ci_token}"


def test_strongroom_token_with_strongroom_url_needs_no_login(broker: StandinBroker, cli: Invoke) -> None:
    ci_token = broker.issue(CLIENT_ID)

    result = cli("projects", "list", env={"STRONGROOM_TOKEN": ci_token, "STRONGROOM_URL": broker.url})

    assert result.exit_code == 0, result.output
    assert broker.calls()[0].authorization == f"Bearer {ci_token}"


def test_strongroom_token_without_any_url_is_one_sentence(cli: Invoke) -> None:
    result = cli("projects", "list", env={"STRONGROOM_TOKEN": "srt_x"})

    assert result.exit_code == 1
    assert (
        result.stderr
        == "Error: STRONGROOM_TOKEN is set but no broker URL is: pass --url or set STRONGROOM_URL\n"
    )


def test_a_refused_strongroom_token_is_named_as_the_culprit(broker: StandinBroker, cli: Invoke) -> None:
    result = cli("projects", "list", env={"STRONGROOM_TOKEN": "srt_wrong", "STRONGROOM_URL": broker.url})

    assert result.exit_code == 1
    assert "STRONGROOM_TOKEN" in result.stderr
    assert "srt_wrong" not in result.output


def test_a_malformed_strongroom_token_is_refused_without_quoting_it(
    broker: StandinBroker, cli: Invoke
) -> None:
    bad = canary() + "\nX-Injected: 1"

    result = cli("projects", "list", env={"STRONGROOM_TOKEN": bad, "STRONGROOM_URL": broker.url})

    assert result.exit_code == 1
    assert bad.split("\n")[0] not in result.output
    assert broker.calls() == []


def test_without_any_credential_the_cli_says_to_log_in(cli: Invoke) -> None:
    result = cli("projects", "list")

    assert result.exit_code == 1
    assert result.stderr == "Error: not logged in: run strongroom login --url URL --client-id ID\n"


def test_the_cached_token_is_never_sent_to_another_broker(
    broker: StandinBroker, cli: Invoke, logged_in: Credential
) -> None:
    other = StandinBroker()
    other.start()
    try:
        result = cli("--url", other.url, "projects", "list")
    finally:
        other.stop()

    assert result.exit_code == 1
    assert f"the cached session is for {broker.url}, not {other.url}" in result.stderr
    assert other.calls() == []


def test_a_revoked_cached_session_says_to_log_in_again(
    broker: StandinBroker, cli: Invoke, logged_in: Credential
) -> None:
    broker.revoke_all()

    result = cli("projects", "list")

    assert result.exit_code == 1
    assert result.stderr.endswith(": run strongroom login\n")


def test_an_unreadable_cache_file_says_to_log_in_again(cli: Invoke, cache_file: Path) -> None:
    cache_file.parent.mkdir(parents=True)
    cache_file.write_text("not json")

    result = cli("projects", "list")

    assert result.exit_code == 1
    assert result.stderr == f"Error: the session cache {cache_file} is unreadable: run strongroom login\n"


# --- renewal


def test_no_renewal_until_two_thirds_of_the_lifetime_has_passed(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, clock: list[float]
) -> None:
    clock[0] = T0 + 599  # just short of two thirds of 900 s

    result = cli("projects", "list")

    assert result.exit_code == 0, result.output
    assert broker.calls("POST", "/v1/auth/token/renew") == []


def test_renewal_at_two_thirds_of_the_lifetime_updates_the_cache(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, clock: list[float], cache_file: Path
) -> None:
    clock[0] = T0 + 600  # renewed at two thirds at the latest (SECURITY.md I52)
    broker.renew_ttl = 1200

    result = cli("projects", "list")

    assert result.exit_code == 0, result.output
    [renew, listing] = broker.calls()
    assert (renew.method, renew.target) == ("POST", "/v1/auth/token/renew")
    assert renew.authorization == f"Bearer {logged_in.token}"
    assert listing.target == "/v1/projects"
    renewed = credentials.load(cache_file)
    assert renewed is not None
    assert renewed.obtained_at == T0 + 600
    assert renewed.expires_in == 1200
    assert renewed.token == logged_in.token
    assert stat.S_IMODE(cache_file.stat().st_mode) == 0o600


def test_renewal_is_not_repeated_once_the_session_is_fresh_again(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, clock: list[float]
) -> None:
    clock[0] = T0 + 700
    assert cli("projects", "list").exit_code == 0
    clock[0] = T0 + 800

    result = cli("projects", "list")

    assert result.exit_code == 0, result.output
    assert len(broker.calls("POST", "/v1/auth/token/renew")) == 1


def test_renewal_of_an_expired_session_says_it_expired(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, clock: list[float]
) -> None:
    clock[0] = T0 + 901
    broker.revoke_all()  # the broker's view of an expired token: it no longer authenticates

    result = cli("projects", "list")

    assert result.exit_code == 1
    assert result.stderr == f"Error: {SESSION_EXPIRED}\n"
    assert broker.calls("GET") == []


def test_a_renewal_the_broker_cannot_serve_does_not_stop_the_command(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, clock: list[float], cache_file: Path
) -> None:
    clock[0] = T0 + 700
    broker.override("POST", "/v1/auth/token/renew", 503, {"detail": "the database is unavailable"})

    result = cli("projects", "list")

    assert result.exit_code == 0, result.output
    assert "shop" in result.stdout
    assert credentials.load(cache_file) == logged_in  # nothing renewed, nothing rewritten


def test_no_renewal_once_the_session_reached_its_hard_maximum(
    broker: StandinBroker, cli: Invoke, secret_file: Path, clock: list[float], cache_file: Path
) -> None:
    broker.token_ttl = broker.max_ttl = 900
    assert cli(*login_args(broker, "--secret-file", str(secret_file))).exit_code == 0
    clock[0] = T0 + 700

    result = cli("projects", "list")

    assert result.exit_code == 0, result.output
    assert broker.calls("POST", "/v1/auth/token/renew") == []


def test_a_local_clock_hours_off_from_the_broker_does_not_matter(
    broker: StandinBroker, cli: Invoke, secret_file: Path, clock: list[float]
) -> None:
    # The stand-in's expires_at is in 2030; the local clock says T0 (2030 too, but hours apart). Only
    # expires_in and local elapsed time decide.
    clock[0] = T0 - 5 * 3600
    assert cli(*login_args(broker, "--secret-file", str(secret_file))).exit_code == 0
    broker.requests.clear()
    clock[0] = T0 - 5 * 3600 + 100

    result = cli("projects", "list")

    assert result.exit_code == 0, result.output
    assert broker.calls("POST", "/v1/auth/token/renew") == []
