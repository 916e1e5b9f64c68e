"""What every command shares: which profile, which broker, which credential, and keeping the session alive.

The profile comes from --profile, else STRONGROOM_PROFILE, else the config file's `default_profile`, else
`default` (see cli/profiles.py). The broker URL comes from --url or STRONGROOM_URL when set, else from the
profile. The token comes from STRONGROOM_TOKEN when set (it wins: CI sets it deliberately), else from the
profile's cache written by `strongroom login`. A token never comes from the command line.

A cached token is renewed once two thirds of its lifetime have passed, and never sent once its lifetime (as
granted by the broker, measured on the local clocks from just before it was granted) has run out.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from cli import credentials, profiles
from cli.client import TIMEOUT_SECONDS, BrokerClient, BrokerError, Progress, parse_broker_url
from cli.credentials import DEFAULT_PROFILE, Credential, Instant
from cli.errors import CliError

TOKEN_ENVVAR = "STRONGROOM_TOKEN"  # noqa: S105 (a variable name, not a token)
SESSION_EXPIRED = "your session expired: run strongroom login"
SESSION_REFUSED = "the broker refused your session (it expired or was revoked): run strongroom login"
ENV_TOKEN_REFUSED = f"the broker refused the token in {TOKEN_ENVVAR} (it is wrong, expired or revoked)"
_BOOT_ID = "/proc/sys/kernel/random/boot_id"


def wall_clock() -> float:
    """Local wall time in seconds; a seam tests replace to move time."""
    return time.time()


def boot_clock() -> tuple[str, float] | None:
    """This boot's id and its CLOCK_BOOTTIME seconds (monotonic, counting suspend), or None off Linux."""
    clock_id = getattr(time, "CLOCK_BOOTTIME", None)
    if clock_id is None:
        return None
    try:
        with open(_BOOT_ID, "rb") as file:
            boot_id = file.read(64).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return (boot_id, time.clock_gettime(clock_id)) if boot_id else None


def now() -> Instant:
    """The local clocks, read together."""
    boot = boot_clock()
    return Instant(wall_clock(), *(boot if boot is not None else (None, None)))


class Session:
    """The global options of one invocation, and the profile and credential they lead to."""

    def __init__(
        self,
        *,
        url: str | None,
        insecure: bool,
        ca_file: str | None,
        environ: Mapping[str, str],
        profile: str | None = None,
        progress: Progress | None = None,
    ) -> None:
        self._url = url or None
        self._insecure = insecure
        self._ca_file = ca_file or None
        self._environ = environ
        self._profile_given = profile or None
        self._progress = progress
        self._config: profiles.Config | None = None

    # --- the profile

    @property
    def config(self) -> profiles.Config:
        """The config file (read once, on first use)."""
        if self._config is None:
            self._config = profiles.load(self._environ)
        return self._config

    @property
    def profile_name(self) -> str:
        """The selected profile's name."""
        return profiles.selected(self._profile_given, self.config)

    @property
    def profile(self) -> profiles.Profile:
        """The selected profile's settings (empty if the config file does not mention it)."""
        return self.config.profile(self.profile_name)

    @property
    def cache_path(self) -> Path:
        """Where the selected profile's session is cached."""
        return credentials.cache_path(self._environ, self.profile_name)

    def cache_path_for(self, profile: str) -> Path:
        """Where the session of any profile is cached."""
        return credentials.cache_path(self._environ, profile)

    @property
    def default_project(self) -> str | None:
        """The profile's default project, if it has one."""
        return self.profile.project

    def _hint(self, command: str) -> str:
        name = self.profile_name
        return (
            f"strongroom --profile {name} {command}" if name != DEFAULT_PROFILE else f"strongroom {command}"
        )

    # --- clients

    def _client(
        self,
        url: str,
        *,
        token: str | None,
        unauthorized_message: str | None,
        progress: bool = True,
        timeout: float = TIMEOUT_SECONDS,
    ) -> BrokerClient:
        profile = self.profile
        return BrokerClient(
            url,
            token=token,
            insecure=self._insecure or profile.insecure,
            ca_file=self._ca_file or profile.ca_file,
            unauthorized_message=unauthorized_message,
            progress=self._progress if progress else None,
            timeout=timeout,
        )

    def client(
        self, *, renew: bool = True, progress: bool = True, timeout: float = TIMEOUT_SECONDS
    ) -> BrokerClient:
        """An authenticated client; renews a cached session past two thirds of its lifetime if `renew`."""
        env_token = self._environ.get(TOKEN_ENVVAR, "")
        if env_token:
            url = self._url or self.profile.url
            if url is None:
                cached = credentials.load(self.cache_path)
                url = cached.url if cached is not None else None
            if url is None:
                raise CliError(
                    f"{TOKEN_ENVVAR} is set but no broker URL is: pass --url or set STRONGROOM_URL"
                )
            # A token handed in by the environment is the caller's to manage: it is never renewed here.
            return self._client(
                url,
                token=env_token,
                unauthorized_message=ENV_TOKEN_REFUSED,
                progress=progress,
                timeout=timeout,
            )
        credential = credentials.load(self.cache_path)
        if credential is None:
            raise CliError(f"not logged in: run {self._hint('login --url URL --client-id ID')}")
        wanted = self._url or self.profile.url
        if wanted is not None:
            wanted = parse_broker_url(wanted).text
            if wanted != credential.url:
                # Never send a cached token to a broker other than the one that issued it.
                raise CliError(
                    f"the cached session is for {credential.url}, not {wanted}: "
                    f"run {self._hint(f'login --url {wanted}')}"
                )
        moment = now()
        if credential.expired(moment):
            # Never trusted past the lifetime the broker granted: it would only be refused, or worse, used late.
            raise CliError(f"your session expired: run {self._hint('login')}")
        client = self._client(
            credential.url,
            token=credential.token,
            unauthorized_message=f"the broker refused your session (it expired or was revoked): "
            f"run {self._hint('login')}",
            progress=progress,
            timeout=timeout,
        )
        if renew and credential.needs_renewal(moment):
            self._renew(client, credential, moment)
        return client

    def _renew(self, client: BrokerClient, credential: Credential, started: Instant) -> None:
        try:
            info = client.renew_self()
        except BrokerError as exc:
            if exc.status == 401:
                raise CliError(f"your session expired: run {self._hint('login')}") from None
            # Renewal is opportunistic: the token is still good for the request the user asked for.
            return
        credentials.save(self.cache_path, credential.renewed(info, obtained=started))

    # --- login and logout

    def login_target(self, *, url: str | None, client_id: str | None) -> tuple[str, str]:
        """The broker URL and client ID to log in with: given, else the profile's, else the last session's."""
        profile = self.profile
        try:
            last = credentials.load(self.cache_path)
        except CliError:
            last = None  # a damaged cache is what logging in again replaces
        broker_url = url or self._url or profile.url or (last.url if last is not None else None)
        if broker_url is None:
            raise CliError("no broker URL: pass --url or set STRONGROOM_URL", exit_code=2)
        wanted = parse_broker_url(broker_url).text
        if profile.url is not None and parse_broker_url(profile.url).text != wanted:
            raise CliError(
                f"profile {profile.name} is for {parse_broker_url(profile.url).text}, not {wanted}: "
                f"pick another --profile or edit {self.config.path}",
                exit_code=2,
            )
        client_id = client_id or profile.client_id or (last.client_id if last is not None else None)
        if client_id is None:
            raise CliError("no client ID: pass --client-id", exit_code=2)
        return wanted, client_id

    def login(self, *, url: str, client_id: str, client_secret: str, ttl: int | None) -> Credential:
        """Exchange a client ID and secret for a token, cache it, and record the profile if it is new."""
        client = self._client(
            url,
            token=None,
            unauthorized_message="login failed: the broker refused this client ID and secret",
        )
        started = now()
        try:
            token = client.issue_token(client_id=client_id, client_secret=client_secret, ttl=ttl)
        finally:
            client.close()
        credential = Credential.from_token(url=client.url, token=token, obtained=started, client_id=client_id)
        credentials.save(self.cache_path, credential)
        config = self.config
        if (
            self.profile_name not in config.profiles
            and config.private_dir
            and (config.exists or self.profile_name != DEFAULT_PROFILE)
        ):
            # A new named profile is recorded in the config file; the default one only if the file exists
            # already (without one, commands skip parsing TOML). A file named by STRONGROOM_CONFIG is
            # someone else's to edit.
            profiles.add_profile(
                self.config, profiles.Profile(name=self.profile_name, url=client.url, client_id=client_id)
            )
        return credential

    def login_oidc(self, *, url: str, role: str, id_token: str) -> Credential:
        """Exchange a CI platform's OIDC token for a token with the role's scopes and cache it (no profile is
        recorded: there is no client id to remember)."""
        client = self._client(
            url,
            token=None,
            unauthorized_message=f"login failed: the broker refused this ID token for role {role}",
        )
        started = now()
        try:
            token = client.oidc_login(role=role, id_token=id_token)
        finally:
            client.close()
        credential = Credential.from_token(url=client.url, token=token, obtained=started)
        credentials.save(self.cache_path, credential)
        return credential

    @property
    def environ(self) -> Mapping[str, str]:
        """The environment the CLI was started with."""
        return self._environ

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
