"""`strongroom tokens create --scope PROJECT:ENVS:ACTIONS:KEYS`: key-restricted scopes from the command line."""

from __future__ import annotations

import click
import pytest

from cli.client import Scope
from cli.commands.tokens import describe_scopes, parse_scope


def test_a_fourth_part_lists_the_keys() -> None:
    assert parse_scope("shop:production:read:DB_PASSWORD, API_KEY", deny=False) == {
        "project": "shop",
        "environments": "production",
        "actions": ["read"],
        "deny": False,
        "keys": ["DB_PASSWORD", "API_KEY"],
    }
    assert "keys" not in parse_scope("shop:production:read", deny=False)


@pytest.mark.parametrize("text", ["shop:production:read:", "shop:production:read:bad-name", "a:b:read:K:L"])
def test_bad_keys_are_refused(text: str) -> None:
    with pytest.raises(click.BadParameter):
        parse_scope(text, deny=False)


def test_keys_are_described() -> None:
    scopes = (
        Scope("shop", "production", ("read",), keys=("A", "B")),
        Scope("shop", "*", ("read",)),
    )
    assert describe_scopes(scopes) == "read shop/production keys A,B; read shop/*"
