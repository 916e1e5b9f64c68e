"""Users and machine identities (admin): `/v1/identities`."""

from __future__ import annotations

from typing import Any

from cli.client.reader import Reader, segment
from cli.client.tokens import read_scopes
from cli.client.transport import Transport
from cli.client.types import IdentityInfo, IdentitySecret


class IdentitiesApi(Transport):
    """Creating, listing, disabling and rotating identities; a client secret is shown once."""

    def create_identity(
        self,
        *,
        name: str,
        kind: str,
        scopes: list[dict[str, Any]],
        bound_cidrs: list[str],
        client_id: str | None = None,
        token_ttl: int | None = None,
        token_max_ttl: int | None = None,
    ) -> tuple[IdentityInfo, IdentitySecret]:
        """Create an identity; its client secret is in the answer this once (`POST /v1/identities`)."""
        body = {
            "name": name,
            "type": kind,
            "scopes": scopes,
            "bound_cidrs": bound_cidrs,
            "client_id": client_id,
            "token_ttl": token_ttl,
            "token_max_ttl": token_max_ttl,
        }
        data = Reader(self._request("POST", "/v1/identities", body), "identity")
        info = _identity(data)
        return info, IdentitySecret(client_id=info.client_id, client_secret=data.text("client_secret"))

    def list_identities(self, *, include_deleted: bool = False) -> list[IdentityInfo]:
        """Identities, oldest first (`GET /v1/identities`)."""
        query = "?include_deleted=true" if include_deleted else ""
        data = Reader(self._request("GET", f"/v1/identities{query}"), "response")
        return [_identity(item) for item in data.objects("identities")]

    def show_identity(self, *, client_id: str) -> IdentityInfo:
        """One identity (`GET /v1/identities/{client_id}`)."""
        return _identity(Reader(self._request("GET", _identity_path(client_id)), "identity"))

    def disable_identity(self, *, client_id: str) -> IdentityInfo:
        """Disable an identity and revoke its tokens (`POST .../disable`)."""
        return _identity(Reader(self._request("POST", f"{_identity_path(client_id)}/disable"), "identity"))

    def enable_identity(self, *, client_id: str) -> IdentityInfo:
        """Let a disabled identity log in again (`POST .../enable`)."""
        return _identity(Reader(self._request("POST", f"{_identity_path(client_id)}/enable"), "identity"))

    def delete_identity(self, *, client_id: str) -> None:
        """Delete an identity for good (`DELETE /v1/identities/{client_id}`)."""
        self._request("DELETE", _identity_path(client_id))

    def rotate_identity_secret(self, *, client_id: str, grace: int | None) -> IdentitySecret:
        """A new client secret, shown once; the old one works for `grace` seconds (`POST .../rotate-secret`)."""
        path = f"{_identity_path(client_id)}/rotate-secret"
        data = Reader(self._request("POST", path, {"grace": grace}), "rotated")
        return IdentitySecret(
            client_id=data.text("client_id"),
            client_secret=data.text("client_secret"),
            previous_valid_until=data.maybe_text("previous_secret_valid_until"),
        )


def _identity_path(client_id: str) -> str:
    return f"/v1/identities/{segment(client_id)}"


def _identity(data: Reader) -> IdentityInfo:
    return IdentityInfo(
        client_id=data.text("client_id"),
        name=data.text("name"),
        kind=data.text("type"),
        scopes=read_scopes(data),
        token_ttl=data.integer("token_ttl"),
        token_max_ttl=data.integer("token_max_ttl"),
        bound_cidrs=data.texts("bound_cidrs"),
        created_at=data.text("created_at"),
        disabled=data.flag("disabled"),
        deleted=data.maybe_flag("deleted") or False,
        previous_secret_expires_at=data.maybe_text("previous_secret_expires_at"),
    )
