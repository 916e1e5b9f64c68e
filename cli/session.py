"""What every command shares: which broker, which credential, and keeping the cached session alive.

The token comes from STRONGROOM_TOKEN when set (it wins: CI sets it deliberately), else from the cache
written by `strongroom login`. A token never comes from the command line.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from cli import credentials
from cli.client import BrokerClient, BrokerError, parse_broker_url
from cli.credentials import Credential
from cli.errors import CliError

TOKEN_ENVVAR = "STRONGROOM_TOKEN"  # noqa: S105 (a variable name, not a token)
SESSION_EXPIRED = "your session expired: run strongroom login"
SESSION_REFUSED = "the broker refused your session (it expired or was revoked): run strongroom login"
ENV_TOKEN_REFUSED = f"the broker refused the token in {TOKEN_ENVVAR} (it is wrong, expired or revoked)"


def wall_clock() -> float:
    """Local wall time in seconds; the one seam tests replace to move time."""
    return time.time()


class Session:
    """The global options of one invocation, and the credential they lead to."""

    def __init__(
        self, *, url: str | None, insecure: bool, ca_file: str | None, environ: Mapping[str, str]
    ) -> None:
        self._url = url or None
        self._insecure = insecure
        self._ca_file = ca_file or None
        self._environ = environ

    @property
    def cache_path(self) -> Path:
        """Where the session credential is cached."""
        return credentials.cache_path(self._environ)

    def _client(self, url: str, *, token: str | None, unauthorized_message: str | None) -> BrokerClient:
        return BrokerClient(
            url,
            token=token,
            insecure=self._insecure,
            ca_file=self._ca_file,
            unauthorized_message=unauthorized_message,
        )

    def client(self, *, renew: bool = True) -> BrokerClient:
        """An authenticated client; renews a cached session past two thirds of its lifetime if `renew`."""
        env_token = self._environ.get(TOKEN_ENVVAR, "")
        if env_token:
            url = self._url
            if url is None:
                cached = credentials.load(self.cache_path)
                url = cached.url if cached is not None else None
            if url is None:
                raise CliError(
                    f"{TOKEN_ENVVAR} is set but no broker URL is: pass --url or set STRONGROOM_URL"
                )
            # A token handed in by the environment is the caller's to manage: it is never renewed here.
            return self._client(url, token=env_token, unauthorized_message=ENV_TOKEN_REFUSED)
        credential = credentials.load(self.cache_path)
        if credential is None:
            raise CliError("not logged in: run strongroom login --url URL --client-id ID")
        if self._url is not None:
            wanted = parse_broker_url(self._url).text
            if wanted != credential.url:
                # Never send a cached token to a broker other than the one that issued it.
                raise CliError(
                    f"the cached session is for {credential.url}, not {wanted}: "
                    f"run strongroom login --url {wanted}"
                )
        client = self._client(credential.url, token=credential.token, unauthorized_message=SESSION_REFUSED)
        if renew and credential.needs_renewal(wall_clock()):
            self._renew(client, credential)
        return client

    def _renew(self, client: BrokerClient, credential: Credential) -> None:
        started = wall_clock()
        try:
            info = client.renew_self()
        except BrokerError as exc:
            if exc.status == 401:
                raise CliError(SESSION_EXPIRED) from None
            # Renewal is opportunistic: the token is still good for the request the user asked for.
            return
        credentials.save(self.cache_path, credential.renewed(info, obtained_at=started))

    def login(self, *, url: str | None, client_id: str, client_secret: str, ttl: int | None) -> Credential:
        """Exchange a client ID and secret for a token and cache it."""
        broker_url = url or self._url
        if broker_url is None:
            raise CliError("no broker URL: pass --url or set STRONGROOM_URL", exit_code=2)
        client = self._client(
            broker_url,
            token=None,
            unauthorized_message="login failed: the broker refused this client ID and secret",
        )
        started = wall_clock()
        try:
            token = client.issue_token(client_id=client_id, client_secret=client_secret, ttl=ttl)
        finally:
            client.close()
        credential = Credential.from_token(url=client.url, token=token, obtained_at=started)
        credentials.save(self.cache_path, credential)
        return credential

    def logout(self) -> Credential | None:
        """Revoke the cached session at the broker and delete it; return what was logged out, if anything."""
        credential = credentials.load(self.cache_path)
        if credential is None:
            return None
        failure: CliError | None = None
        try:
            client = self._client(credential.url, token=credential.token, unauthorized_message=None)
            client.revoke_self()
            client.close()
        except BrokerError as exc:
            if exc.status != 401:  # a 401 means it is already unusable, which is what logging out wants
                failure = exc
        except CliError as exc:
            failure = exc
        finally:
            # The local copy goes whatever the broker said: the user asked for it to be gone.
            credentials.delete(self.cache_path)
        if failure is not None:
            raise CliError(
                f"deleted the cached session but could not revoke it, so it stays valid until it expires: "
                f"{failure.message}"
            )
        return credential
