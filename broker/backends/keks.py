"""Typed entries of the keyring document for remote key-encryption keys, and the KEKs they make.

    {"type": "aws-kms", "key_id": "arn:aws:kms:eu-west-1:111122223333:key/...", "region": "eu-west-1",
     "endpoint_url": null, "profile": null, "role_arn": null, "credentials": null, "allow_networks": []}
    {"type": "vault-transit", "address": "https://vault.internal:8200", "mount": "transit",
     "key": "strongroom", "auth": {"method": "token", "token_file": "/run/secrets/vault-token"},
     "namespace": null, "allow_networks": []}

A local key stays what it was (the base64 string), or {"type": "local", "key": "<base64>"}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from broker.backends import guard
from broker.backends.config import (
    AllowNetworks,
    AwsRegion,
    AwsStaticCredentials,
    VaultAppRoleAuth,
    VaultTokenAuth,
    read_secret_file,
)
from broker.backends.vault_http import token_and_approle
from broker.crypto.keyring import Kek
from broker.documents import refusal


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    allow_networks: AllowNetworks = Field(default_factory=list)
    timeout: float = Field(default=5.0, gt=0, le=120)


class AwsKmsEntry(_Entry):
    """A KMS key."""

    type: Literal["aws-kms"]
    key_id: str = Field(min_length=1, max_length=2048)
    region: AwsRegion
    endpoint_url: str | None = None
    profile: str | None = None
    role_arn: str | None = None
    credentials: AwsStaticCredentials | None = None
    max_attempts: int = Field(default=2, ge=1, le=10)


class VaultTransitEntry(_Entry):
    """A derived transit key."""

    type: Literal["vault-transit"]
    address: str = Field(max_length=512)
    mount: str = "transit"
    key: str = Field(min_length=1, max_length=256)
    auth: Annotated[VaultTokenAuth | VaultAppRoleAuth, Field(discriminator="method")]
    namespace: str | None = None
    ca_file: Path | None = None


_ENTRY: TypeAdapter[AwsKmsEntry | VaultTransitEntry] = TypeAdapter(
    Annotated[AwsKmsEntry | VaultTransitEntry, Field(discriminator="type")]
)


def remote_kek(kid: str, value: dict[str, Any], *, source: str) -> Kek:
    """Build the KEK of one typed keyring entry; errors name `keys.<id>.<field>`."""
    try:
        entry = _ENTRY.validate_python(value)
    except ValidationError as exc:
        tags = ("aws-kms", "vault-transit")
        raise refusal(exc, source=source, field="keys", under=f"keys.{kid}", tags=tags) from None
    where = f"{source}: keys.{kid}"
    nets = guard.networks(entry.allow_networks, field=f"keys.{kid}.allow_networks")
    if isinstance(entry, AwsKmsEntry):
        from broker.backends.kek_aws import AwsKmsKek

        static = None
        if entry.credentials is not None:
            c = entry.credentials
            secret = c.secret_access_key
            if secret is None:
                secret = read_secret_file(c.secret_access_key_file, what=f"{where}.credentials")
            static = (c.access_key_id, secret, c.session_token)
        return AwsKmsKek(
            kid,
            kms_key_id=entry.key_id,
            region=entry.region,
            endpoint_url=entry.endpoint_url,
            allow_networks=nets,
            timeout=entry.timeout,
            max_attempts=entry.max_attempts,
            profile=entry.profile,
            static=static,
            role_arn=entry.role_arn,
        )
    from broker.backends.kek_vault import VaultTransitKek

    token, approle = token_and_approle(entry.auth, where=where)
    return VaultTransitKek(
        kid,
        address=entry.address,
        key=entry.key,
        mount=entry.mount,
        token=token,
        approle=approle,
        namespace=entry.namespace,
        allow_networks=nets,
        timeout=entry.timeout,
        ca_file=entry.ca_file,
    )
