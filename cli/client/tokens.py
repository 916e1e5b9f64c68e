"""Logging in and tokens: `/v1/auth/*` and `/v1/tokens`."""

from __future__ import annotations

from typing import Any

from cli.client.reader import Reader
from cli.client.transport import Transport
from cli.client.types import ListedToken, Principal, Scope, Token, TokenInfo


class TokensApi(Transport):
    """Logging in, renewing and revoking, child tokens."""

    def issue_token(self, *, client_id: str, client_secret: str, ttl: int | None = None) -> Token:
        """Exchange a client ID and secret for a token (`POST /v1/auth/token`)."""
        body = {"client_id": client_id, "client_secret": client_secret, "ttl": ttl}
        data = Reader(self._request("POST", "/v1/auth/token", body, redact=(client_secret,)), "token")
        return Token(token=data.text("token"), info=_token_info(data))

    def oidc_login(self, *, role: str, id_token: str) -> Token:
        """Exchange a CI platform's OIDC token for a token with a role's scopes (`POST /v1/auth/oidc`)."""
        body = {"role": role, "jwt": id_token}
        data = Reader(self._request("POST", "/v1/auth/oidc", body, redact=(id_token,)), "token")
        return Token(token=data.text("token"), info=_token_info(data))

    def renew_self(self, *, ttl: int | None = None) -> TokenInfo:
        """Extend this client's token (`POST /v1/auth/token/renew`)."""
        return _token_info(Reader(self._request("POST", "/v1/auth/token/renew", {"ttl": ttl}), "token"))

    def revoke_self(self) -> None:
        """Revoke this client's token and its children (`POST /v1/auth/token/revoke-self`)."""
        self._request("POST", "/v1/auth/token/revoke-self", None)

    def create_token(
        self,
        *,
        scopes: list[dict[str, Any]] | None,
        ttl: int | None,
        num_uses: int | None,
        bound_cidrs: list[str] | None,
    ) -> Token:
        """A child of this client's token, never broader (`POST /v1/tokens`)."""
        body = {"scopes": scopes, "ttl": ttl, "num_uses": num_uses, "bound_cidrs": bound_cidrs}
        data = Reader(self._request("POST", "/v1/tokens", body), "token")
        return Token(token=data.text("token"), info=_token_info(data))

    def list_tokens(self, *, include_inactive: bool = False, limit: int = 200) -> list[ListedToken]:
        """Tokens newest first, without their strings (`GET /v1/tokens`, admin)."""
        query = f"?limit={int(limit)}" + ("&include_inactive=true" if include_inactive else "")
        data = Reader(self._request("GET", f"/v1/tokens{query}"), "response")
        return [
            ListedToken(
                info=_token_info(item), created_at=item.text("created_at"), revoked=item.flag("revoked")
            )
            for item in data.objects("tokens")
        ]

    def revoke_token(self, *, accessor: str) -> None:
        """Revoke a token and its children by accessor (`POST /v1/tokens/revoke`, admin)."""
        self._request("POST", "/v1/tokens/revoke", {"accessor": accessor})


def read_scopes(data: Reader) -> tuple[Scope, ...]:
    """The `scopes` list of a token or an identity."""
    return tuple(
        Scope(
            project=scope.text("project"),
            environments=scope.text("environments"),
            actions=scope.texts("actions"),
            deny=scope.maybe_flag("deny") or False,
            keys=scope.texts("keys") if "keys" in scope.keys() else None,  # noqa: SIM118 (a reader, not a dict)
        )
        for scope in data.objects("scopes")
    )


def _token_info(data: Reader) -> TokenInfo:
    principal = data.child("principal")
    return TokenInfo(
        accessor=data.text("accessor"),
        expires_in=data.integer("expires_in"),
        expires_at=data.text("expires_at"),
        max_expires_at=data.text("max_expires_at"),
        num_uses=data.maybe_integer("num_uses"),
        bound_cidrs=data.texts("bound_cidrs"),
        scopes=read_scopes(data),
        principal=Principal(
            id=principal.text("id"), type=principal.text("type"), name=principal.text("name")
        ),
        uses_remaining=data.maybe_integer("uses_remaining"),
    )
