"""OIDC: the issuers file, the issuers' key sets and the console's provider (verification is broker.domain.oidc)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from broker.errors import Invalid
from broker.files import loose_mode
from broker.oidc.config import OidcFile, load
from broker.oidc.jwks import JwksCache
from broker.oidc.sso import ClientSecret, ConsoleProvider


@dataclass
class Oidc:
    """The loaded OIDC file, the key set cache of its issuers and the console's provider (if any)."""

    config: OidcFile
    jwks: JwksCache
    console: ConsoleProvider | None = None


def _client_secret(path: Path) -> ClientSecret:
    field = "console.client_secret_file"
    try:
        loose = loose_mode(path, f"{field}:")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise Invalid(f"{field}: {path} cannot be read", field=field) from None
    if loose is not None:
        raise Invalid(loose, field=field)
    value = text.strip()
    if not value or len(value) > 4096 or any(c.isspace() for c in value):
        raise Invalid(f"{field}: {path} must hold the client secret alone, on one line", field=field)
    return ClientSecret(value)


def from_file(path: Path) -> Oidc:
    """Load the OIDC file and the console's client secret (raises Invalid naming the file or the bad key)."""
    config = load(path)
    console = None
    if config.console is not None:
        console = ConsoleProvider(config.console, _client_secret(config.console.client_secret_file))
    return Oidc(config=config, jwks=JwksCache(dict(config.issuers)), console=console)
