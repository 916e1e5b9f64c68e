"""Session time (SECURITY.md I50, I52): only the broker's expires_in and local deltas count, clocks may be off.

The broker is a stand-in (tests/unit/cli/standin_broker.py) used only for CLI unit tests; end-to-end tests
against the real broker live in tests/e2e (test_cli_journeys.py has a skewed clock against a real broker).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_test_support import CLIENT_ID, T0, Invoke
from standin_broker import StandinBroker

from cli import credentials, session
from cli.client import Principal
from cli.credentials import Credential, Instant

HOUR = 3600.0


@pytest.fixture
def clocks(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Wall and boot clocks the test moves: {"wall": float, "boot_id": str, "boot": float}."""
    state: dict[str, object] = {"wall": T0, "boot_id": "boot-1", "boot": 5000.0}
    monkeypatch.setattr(session, "wall_clock", lambda: state["wall"])
    monkeypatch.setattr(session, "boot_clock", lambda: (state["boot_id"], state["boot"]))
    return state


def login(cli: Invoke, broker: StandinBroker, secret_file: Path) -> None:
    result = cli("login", "--url", broker.url, "--client-id", CLIENT_ID, "--secret-file", str(secret_file))
    assert result.exit_code == 0, result.output
    broker.requests.clear()


def advance(clocks: dict[str, object], *, wall: float, boot: float) -> None:
    clocks["wall"] = float(clocks["wall"]) + wall  # type: ignore[arg-type]
    clocks["boot"] = float(clocks["boot"]) + boot  # type: ignore[arg-type]


@pytest.mark.parametrize("skew", [-HOUR, HOUR, -10 * HOUR])
def test_a_client_clock_hours_off_works_and_renews_on_time(
    broker: StandinBroker, cli: Invoke, secret_file: Path, clocks: dict[str, object], skew: float
) -> None:
    clocks["wall"] = T0 + skew  # the stand-in's own times are in 2030; the client's are hours away
    login(cli, broker, secret_file)

    advance(clocks, wall=500, boot=500)
    assert cli("projects", "list").exit_code == 0
    assert broker.calls("POST", "/v1/auth/token/renew") == []

    advance(clocks, wall=100, boot=100)  # 600 s of 900: two thirds
    assert cli("projects", "list").exit_code == 0
    assert len(broker.calls("POST", "/v1/auth/token/renew")) == 1


def test_an_expired_session_is_never_sent(
    broker: StandinBroker, cli: Invoke, secret_file: Path, clocks: dict[str, object]
) -> None:
    login(cli, broker, secret_file)
    advance(clocks, wall=900, boot=900)

    for args in (("projects", "list"), ("run", "-p", "shop", "-e", "production", "--", "true")):
        result = cli(*args)
        assert result.exit_code == 1
        assert result.stderr == "Error: your session expired: run strongroom login\n"
    assert broker.calls() == []


def test_a_wall_clock_set_back_cannot_make_an_expired_token_look_fresh(
    broker: StandinBroker, cli: Invoke, secret_file: Path, clocks: dict[str, object]
) -> None:
    login(cli, broker, secret_file)
    advance(clocks, wall=-2 * HOUR, boot=901)  # someone set the clock back; the boot clock kept counting

    result = cli("projects", "list")

    assert result.exit_code == 1
    assert "your session expired" in result.stderr
    assert broker.calls() == []


def test_a_wall_clock_jumping_forward_does_not_end_a_fresh_session(
    broker: StandinBroker, cli: Invoke, secret_file: Path, clocks: dict[str, object]
) -> None:
    login(cli, broker, secret_file)
    advance(clocks, wall=3 * HOUR, boot=10)  # NTP fixed a slow clock; only 10 s really passed

    result = cli("projects", "list")

    assert result.exit_code == 0, result.output
    assert broker.calls("POST", "/v1/auth/token/renew") == []


def test_after_a_reboot_the_wall_clock_decides(
    broker: StandinBroker, cli: Invoke, secret_file: Path, clocks: dict[str, object]
) -> None:
    login(cli, broker, secret_file)
    clocks["boot_id"], clocks["boot"] = "boot-2", 30.0
    advance(clocks, wall=950, boot=0)

    result = cli("projects", "list")

    assert result.exit_code == 1
    assert "your session expired" in result.stderr


def test_after_a_reboot_with_the_wall_clock_behind_the_age_is_unknown_so_it_renews(
    broker: StandinBroker, cli: Invoke, secret_file: Path, clocks: dict[str, object]
) -> None:
    login(cli, broker, secret_file)
    clocks["boot_id"], clocks["boot"] = "boot-2", 30.0
    advance(clocks, wall=-HOUR, boot=0)

    result = cli("projects", "list")

    assert result.exit_code == 0, result.output
    assert [c.target for c in broker.calls()] == ["/v1/auth/token/renew", "/v1/projects"]


def test_a_renewal_racing_expiry_ends_in_one_deterministic_sentence(
    broker: StandinBroker, cli: Invoke, secret_file: Path, clocks: dict[str, object]
) -> None:
    login(cli, broker, secret_file)
    advance(clocks, wall=899, boot=899)  # one second left locally; the broker already expired it
    broker.revoke_all()

    result = cli("projects", "list")

    assert result.exit_code == 1
    assert result.stderr == "Error: your session expired: run strongroom login\n"
    assert [c.target for c in broker.calls()] == ["/v1/auth/token/renew"]


def test_run_neither_renews_nor_sends_an_expired_token(
    broker: StandinBroker,
    cli: Invoke,
    secret_file: Path,
    clocks: dict[str, object],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    execs: list[str] = []
    monkeypatch.setattr(os, "execvpe", lambda file, args, env: execs.append(file))
    login(cli, broker, secret_file)
    advance(clocks, wall=800, boot=800)

    result = cli("run", "-p", "shop", "-e", "production", "--", "true")

    assert result.exit_code == 0, result.output
    assert [c.target for c in broker.calls()] == ["/v1/projects/shop/environments/production/resolved"]
    assert execs == ["true"]


def credential(**kw: object) -> Credential:
    base: dict[str, object] = {
        "url": "https://broker.example",
        "token": "srt_x",
        "accessor": "sra_x",
        "principal": Principal(id="p1", type="user", name="alice"),
        "obtained_at": 1000.0,
        "expires_in": 900,
        "max_expires_in": 28800,
        "boot_id": "b",
        "obtained_boot": 50.0,
    }
    base.update(kw)
    return Credential(**base)  # type: ignore[arg-type]


def test_age_prefers_the_boot_clock_of_the_same_boot() -> None:
    c = credential()
    assert c.age(Instant(1000.0 - HOUR, "b", 150.0)) == 100.0
    assert c.age(Instant(1100.0, "other", 1.0)) == 100.0
    assert c.age(Instant(900.0, "other", 1.0)) is None
    assert c.age(Instant(1100.0)) == 100.0
    assert c.expired(Instant(0.0, "b", 950.0))
    assert not c.expired(Instant(900.0, "other", 1.0))  # unknown is not "certainly expired"
    assert c.needs_renewal(Instant(900.0, "other", 1.0))


def test_the_boot_clock_round_trips_through_the_cache(tmp_path: Path) -> None:
    path = tmp_path / "strongroom" / "credentials.json"
    original = credential(client_id="alice-laptop")

    credentials.save(path, original)

    assert credentials.load(path) == original


def test_the_real_boot_clock_reads_this_machines_boot() -> None:
    boot = session.boot_clock()
    if boot is None:
        pytest.skip("no CLOCK_BOOTTIME here")
    boot_id, seconds = boot
    assert boot_id and seconds > 0
    assert session.now().boot_id == boot_id
