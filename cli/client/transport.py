"""The connection to the broker: URL rules, TLS, one kept-alive http.client connection, errors as sentences.

HTTPS is verified against the system CA store, or only against the CA file the user configured
(STRONGROOM_CA_FILE / --ca-file); plain HTTP is allowed to loopback hosts only, unless the user passes
--insecure. Redirects are never followed (http.client follows none), so the token is only ever sent to the
URL the user gave. Tokens and secret values travel in headers and JSON bodies, never in a path or query.
There are no retries: a request that failed may have been carried out, and the user decides what next.

Every non-2xx answer becomes a `BrokerError` carrying the broker's problem-JSON `detail` sentence; anything
the CLI itself sent as a secret is masked out of that sentence before anyone sees it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit

from cli import __version__
from cli.errors import CliError

if TYPE_CHECKING:
    import http.client
    import ssl

MAX_RESPONSE_BYTES = 16 * 1024 * 1024
TIMEOUT_SECONDS = 30.0
MASK = "********"
# A kept-alive connection idle longer than this is not reused: uvicorn closes idle ones after 5 s.
IDLE_REUSE_SECONDS = 4.0
REVEAL_HEADER = "X-Strongroom-Reveal"

# Shows that a request is in progress (the CLI passes one that draws on a terminal after a second).
Progress = Callable[[str], AbstractContextManager[None]]

_TOKEN_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F))


class BrokerError(CliError):
    """The broker answered with an error status; `status` is the HTTP status, the message its detail."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# --- URL rules ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    """A parsed broker URL in canonical text form (lower-case scheme and host, no trailing slash)."""

    scheme: str
    host: str
    port: int | None
    base_path: str
    text: str


def parse_broker_url(url: str) -> BrokerUrl:
    """Parse and canonicalise a broker URL, or raise CliError saying what is wrong with it."""
    # The messages never quote the URL: a mistaken one may carry a password or a token.
    try:
        parts = urlsplit(url.strip())
        if parts.username is not None or parts.password is not None:
            raise CliError("the broker URL must not carry a user name or password")
        port = parts.port
    except ValueError:
        raise CliError("the broker URL is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise CliError("the broker URL must start with https:// (or http:// for a loopback host)")
    if not parts.hostname:
        raise CliError("the broker URL has no host")
    if parts.query or parts.fragment:
        raise CliError("the broker URL must not have a query or fragment")
    host = parts.hostname.lower()
    shown_host = f"[{host}]" if ":" in host else host
    base_path = parts.path.rstrip("/")
    text = f"{scheme}://{shown_host}{f':{port}' if port is not None else ''}{base_path}"
    return BrokerUrl(scheme=scheme, host=host, port=port, base_path=base_path, text=text)


def is_loopback(host: str) -> bool:
    """Whether a host name or address is this machine's loopback interface."""
    if host in ("localhost", "localhost."):
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- the connection ----------------------------------------------------------------------------------


class Transport:
    """A connection to one broker, optionally authenticated by one token; the API areas build on it."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        insecure: bool = False,
        ca_file: str | None = None,
        unauthorized_message: str | None = None,
        timeout: float = TIMEOUT_SECONDS,
        progress: Progress | None = None,
    ) -> None:
        self._url = parse_broker_url(url)
        if self._url.scheme == "http" and not insecure and not is_loopback(self._url.host):
            raise CliError(
                f"refusing plain http to {self._url.host}: the token and secrets would cross the network "
                "unencrypted; use https, or pass --insecure if you really mean it"
            )
        if token is not None and (not token or not set(token) <= _TOKEN_CHARS):
            # http.client would refuse it too, but its error message quotes the whole header value.
            raise CliError("the token has characters a broker token never has (is it truncated or quoted?)")
        target = self._url.base_path
        if not target.isascii() or not target.isprintable() or " " in target:
            # http.client would refuse it at the first request, quoting the URL back.
            raise CliError("the broker URL's path has characters that a request line cannot carry")
        self._token = token
        self._insecure = insecure
        self._ca_file = ca_file
        self._unauthorized_message = unauthorized_message
        self._timeout = timeout
        self._progress = progress
        self._connection: http.client.HTTPConnection | None = None
        self._last_used = 0.0

    @property
    def url(self) -> str:
        """The canonical broker URL this client talks to."""
        return self._url.text

    def close(self) -> None:
        """Close the connection, if one is open."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def with_token(self, token: str, *, unauthorized_message: str | None = None) -> Self:
        """A client for the same broker, TLS settings and progress, authenticated by `token` instead."""
        return type(self)(
            self._url.text,
            token=token,
            insecure=self._insecure,
            ca_file=self._ca_file,
            unauthorized_message=unauthorized_message,
            timeout=self._timeout,
            progress=self._progress,
        )

    def _headers(self, accept: str) -> dict[str, str]:
        headers = {"Accept": accept, "User-Agent": f"strongroom-cli/{__version__}"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _tls_context(self) -> ssl.SSLContext:
        import ssl

        try:
            # With a CA file the system store is deliberately not loaded: the user pinned a private CA.
            return ssl.create_default_context(cafile=self._ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise CliError(f"cannot load the CA file {self._ca_file}: {_reason(exc)}") from None

    def _connect(self) -> http.client.HTTPConnection:
        import time

        if self._connection is not None:
            if time.monotonic() - self._last_used < IDLE_REUSE_SECONDS:
                return self._connection
            # Servers drop idle keep-alive connections (uvicorn after 5 s); a request sent on one that
            # is being closed fails with nothing processed, so a connection idle that long is replaced.
            self.close()
        # Imported here, not at module level: `strongroom --help` and friends never need it.
        import http.client

        if self._url.scheme == "https":
            self._connection = http.client.HTTPSConnection(
                self._url.host, self._url.port, timeout=self._timeout, context=self._tls_context()
            )
        else:
            self._connection = http.client.HTTPConnection(
                self._url.host, self._url.port, timeout=self._timeout
            )
        return self._connection

    def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        redact: tuple[str, ...] = (),
        reveal: bool = False,
    ) -> Any:
        """Send one request and return the decoded JSON answer (None for 204), or raise a CliError."""
        headers = self._headers("application/json")
        if reveal:
            headers[REVEAL_HEADER] = "1"
        payload = None
        if body is not None:
            payload = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self._progress is None:
            response, raw = self._exchange(method, path, payload, headers, read_all=True)
        else:
            with self._progress("waiting for the broker"):
                response, raw = self._exchange(method, path, payload, headers, read_all=True)
        if len(raw) > MAX_RESPONSE_BYTES:
            self.close()
            raise CliError("the broker's response is larger than 16 MiB; refusing to read it")
        if 200 <= response.status < 300:
            if response.status == 204:
                return None
            try:
                return json.loads(raw)
            except ValueError:
                raise CliError(
                    f"the broker answered {method} {path} with something that is not JSON"
                ) from None
        raise self._http_error(response, raw, redact)

    def _stream(self, path: str, *, accept: str, write: Callable[[bytes], object]) -> None:
        """GET `path` and hand the body to `write` chunk by chunk (for answers too large to hold)."""
        import http.client

        response, _ = self._exchange("GET", path, None, self._headers(accept), read_all=False)
        try:
            if not 200 <= response.status < 300:
                raise self._http_error(response, response.read(MAX_RESPONSE_BYTES + 1), ())
            while chunk := response.read(65536):
                write(chunk)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise self._network_error(exc) from None
        finally:
            if response.status >= 300 or not response.isclosed():
                # A body left unread would poison the kept-alive connection for the next request.
                self.close()

    def _exchange(
        self, method: str, path: str, payload: bytes | None, headers: dict[str, str], *, read_all: bool
    ) -> tuple[http.client.HTTPResponse, bytes]:
        import http.client
        import time

        connection = self._connect()
        try:
            connection.request(method, self._url.base_path + path, body=payload, headers=headers)
            response = connection.getresponse()
            raw = response.read(MAX_RESPONSE_BYTES + 1) if read_all else b""
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise self._network_error(exc) from None
        self._last_used = time.monotonic()
        return response, raw

    def _http_error(
        self, response: http.client.HTTPResponse, raw: bytes, redact: tuple[str, ...]
    ) -> BrokerError:
        status = response.status
        if status == 401 and self._unauthorized_message is not None:
            return BrokerError(status, self._unauthorized_message)
        detail = _problem_detail(raw)
        if detail is None:
            detail = f"the broker answered HTTP {status} {response.reason}".rstrip()
        for secret in redact:
            # Defence in depth: the broker should never echo a value, but if it does the user must not see it.
            if secret:
                detail = detail.replace(secret, MASK)
        if status == 429:
            retry_after = response.getheader("Retry-After", "") or ""
            if retry_after.isdigit():
                detail = f"{detail.rstrip('.')}; try again in {retry_after} seconds"
        return BrokerError(status, detail)

    def _network_error(self, exc: BaseException) -> CliError:
        if self._url.scheme == "https":
            import ssl

            if isinstance(exc, ssl.SSLCertVerificationError):
                return CliError(
                    f"cannot verify the TLS certificate of {self._url.host} ({exc.verify_message}); "
                    "if it is signed by a private CA, set STRONGROOM_CA_FILE to that CA's certificate"
                )
        if isinstance(exc, TimeoutError):
            return CliError(f"the broker at {self.url} did not answer within {self._timeout:g} seconds")
        return CliError(f"cannot reach the broker at {self.url}: {_reason(exc)}")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    text = str(exc)
    return text if text else type(exc).__name__


def _problem_detail(raw: bytes) -> str | None:
    try:
        problem = json.loads(raw)
    except ValueError:
        return None
    if isinstance(problem, dict):
        detail = problem.get("detail")
        if isinstance(detail, str) and detail.strip():
            return detail.strip()
    return None
