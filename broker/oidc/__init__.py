"""OIDC workload identity: the issuers file and the issuers' key sets (verification is broker.domain.oidc)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from broker.oidc.config import OidcFile, load
from broker.oidc.jwks import JwksCache


@dataclass
class Oidc:
    """The loaded OIDC file and the key set cache of its issuers."""

    config: OidcFile
    jwks: JwksCache


def from_file(path: Path) -> Oidc:
    """Load the OIDC file (raises Invalid naming it and the bad key)."""
    config = load(path)
    return Oidc(config=config, jwks=JwksCache(dict(config.issuers)))
