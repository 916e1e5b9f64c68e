"""`strongroom kamal fetch` as the generated `.kamal/secrets` runs it, against the CLI stand-in broker."""

from __future__ import annotations

import pytest
from cli_test_support import Invoke, canary
from standin_broker import StandinBroker

from broker.renderers import kamal as kamal_renderer
from cli.commands.kamal import DOTENV_ORDER_NAME
from cli.credentials import Credential

VALUES = "/v1/projects/shop/environments/production/values"
FETCH = ("kamal", "fetch", "-p", "shop", "-e", "production", "DB_PASSWORD")


def test_the_order_name_is_the_one_the_generated_file_sets() -> None:
    assert DOTENV_ORDER_NAME in kamal_renderer.RESERVED
    assert (
        f"\n{DOTENV_ORDER_NAME}=3.1\n" in kamal_renderer._secrets_file("shop", "production", ["K"]).decode()
    )


@pytest.mark.parametrize("dotenv", ["3.2", "3.1"])
def test_an_exported_order_name_is_refused_before_anything_is_fetched(
    logged_in: Credential, broker: StandinBroker, cli: Invoke, dotenv: str
) -> None:
    """dotenv 3.1.0-3.1.4 would take the exported value over the file's own detection of the order."""
    secret = "pa$1" + canary()
    broker.put("shop", "production", "DB_PASSWORD", secret)
    result = cli(*FETCH, "--dotenv", dotenv, env={DOTENV_ORDER_NAME: "3.2"})
    assert result.exit_code == 1
    assert f"{DOTENV_ORDER_NAME} is set in the environment Kamal runs in" in result.stderr
    assert "unset it" in result.stderr and secret not in result.output
    assert not broker.calls("POST", VALUES)  # nothing was read


def test_plain_json_is_not_read_by_dotenv_and_does_not_ask(
    logged_in: Credential, broker: StandinBroker, cli: Invoke
) -> None:
    cli(*FETCH, "--json", env={DOTENV_ORDER_NAME: "3.2"})
    assert broker.calls("POST", VALUES)  # it went on to read (the stand-in has no such route)
