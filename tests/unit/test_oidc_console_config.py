"""The OIDC file's console section (browser sign-in to the console): refused at start-up with one sentence
naming the field, and its client secret read from a private file that no repr, log or error shows."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from broker.console.sso import next_page
from broker.errors import Invalid
from broker.oidc import config as oidc_config
from broker.oidc import from_file

SECRET = "CANARY-console-client-secret-7f3a"


def _doc(secret_file: Path) -> dict[str, Any]:
    return {
        "format": "strongroom-oidc/1",
        "console": {
            "name": "corp",
            "label": "Corp SSO",
            "issuer": "https://idp.example.com/realms/corp",
            "client_id": "strongroom-console",
            "client_secret_file": str(secret_file),
            "redirect_url": "https://strongroom.example.com/console/sso/callback",
            "roles": [
                {
                    "name": "auditors",
                    "bound_claims": {"groups": "auditors"},
                    "scopes": [{"project": "*", "environments": "*", "actions": ["audit"]}],
                }
            ],
        },
    }


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "console.secret"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    return path


def _write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "oidc.json"
    path.write_text(json.dumps(doc))
    path.chmod(0o600)
    return path


def test_a_console_section_alone_is_a_valid_file_and_the_secret_is_never_shown(
    tmp_path: Path, secret_file: Path
) -> None:
    loaded = from_file(_write(tmp_path, _doc(secret_file)))
    assert loaded.console is not None and not loaded.config.issuers
    assert loaded.console.config.scopes == ["openid", "email", "profile"]
    assert SECRET not in repr(loaded) and SECRET not in repr(loaded.console.__dict__)
    assert loaded.console._secret.reveal() == SECRET  # the line's newline is not part of it


def test_openid_is_always_asked_for(secret_file: Path) -> None:
    doc = _doc(secret_file)
    doc["console"]["scopes"] = ["email", "groups"]
    parsed = oidc_config.parse(json.dumps(doc), source="oidc.json")
    assert parsed.console is not None and parsed.console.scopes == ["openid", "email", "groups"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.update(redirect_url="https://x.example/console/login"), "console.redirect_url"),
        (lambda c: c.update(redirect_url="http://x.example/console/sso/callback"), "only for a loopback"),
        (lambda c: c.update(redirect_url="https://x.example/console/sso/callback?a=1"), "with no query"),
        (lambda c: c.update(issuer="ftp://idp.example.com"), "console.issuer"),
        (lambda c: c.update(algorithms=["HS256"]), "console.algorithms"),
        (lambda c: c.update(name="Corp SSO"), "console.name"),
        (lambda c: c.update(surprise=1), "console.surprise"),
        (lambda c: c.pop("client_id"), "console.client_id"),
        (lambda c: c.update(roles=[]), "console.roles"),
        (lambda c: c["roles"][0].update(bound_claims={"groups": []}), "at least one value"),
        (lambda c: c["roles"].append(copy.deepcopy(c["roles"][0])), "two roles have the same name"),
        (lambda c: c["roles"][0].update(scopes=[{"project": "*"}]), "console.roles.0.scopes"),
        (lambda c: c.update(scopes=["openid email"]), "is not a scope name"),
    ],
)
def test_a_bad_console_section_is_refused_naming_the_field(
    secret_file: Path, change: Any, message: str
) -> None:
    doc = _doc(secret_file)
    change(doc["console"])
    with pytest.raises(Invalid, match=message.replace(".", r"\.").replace("?", r"\?")) as caught:
        oidc_config.parse(json.dumps(doc), source="oidc.json")
    assert "\n" not in caught.value.message


def test_the_console_cannot_share_a_workload_issuers_name(secret_file: Path) -> None:
    doc = _doc(secret_file)
    doc["issuers"] = {
        "corp": {
            "issuer": "https://idp.example.com",
            "jwks_url": "https://idp.example.com/k",
            "audience": "a",
        }
    }
    with pytest.raises(Invalid, match=r"console\.name: 'corp' is already the name of an issuer"):
        oidc_config.parse(json.dumps(doc), source="oidc.json")


def test_a_file_with_neither_issuers_nor_console_is_refused() -> None:
    with pytest.raises(Invalid, match="issuers: name at least one issuer"):
        oidc_config.parse(json.dumps({"format": "strongroom-oidc/1"}), source="oidc.json")


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [
        (SECRET, 0o644, "console.client_secret_file: .* is readable by others .*chmod 600 it"),
        ("", 0o600, "must hold the client secret alone, on one line"),
        ("two words", 0o600, "must hold the client secret alone, on one line"),
        (None, 0o600, "console.client_secret_file: .* cannot be read"),
    ],
)
def test_the_client_secret_file_must_be_private_and_hold_the_secret_alone(
    tmp_path: Path, content: str | None, mode: int, message: str
) -> None:
    path = tmp_path / "console.secret"
    if content is not None:
        path.write_text(content)
        path.chmod(mode)
    with pytest.raises(Invalid, match=message) as caught:
        from_file(_write(tmp_path, _doc(path)))
    assert caught.value.field == "console.client_secret_file"
    assert SECRET not in caught.value.message


@pytest.mark.parametrize(
    ("asked", "opened"),
    [
        (None, "/console/"),
        ("/console/audit", "/console/audit"),
        ("/console/projects/shop/environments/production", "/console/projects/shop/environments/production"),
        ("https://evil.example/", "/console/"),
        ("//evil.example/console/", "/console/"),
        ("/console//evil.example", "/console/"),
        ("/console/../v1/tokens", "/console/"),
        ("/console/sso/callback", "/console/"),
        ("/console/login", "/console/"),
        ("/console/audit?x=1", "/console/"),
        ("/console/a\\b", "/console/"),
        ("/console/./sso/callback", "/console/"),  # would sign the person out again
        ("/console/./login", "/console/"),
        ("/console/audit/.", "/console/"),
        ("/console/..", "/console/"),
        ("/console/.well-known", "/console/.well-known"),  # a name starting with a dot is no dot segment
    ],
)
def test_after_signing_in_only_a_console_page_is_opened(asked: str | None, opened: str) -> None:
    assert next_page(asked) == opened
