"""boto3 clients bound to configured endpoints only, shared by the Secrets Manager backend and the KMS KEK.

- The region and endpoint come from the broker's configuration; AWS_ENDPOINT_URL and the shared config
  file's endpoint settings are ignored (`ignore_configured_endpoint_urls`), environment proxies are off
  (`proxies={}`), botocore never follows redirects, and every new connection checks the address it
  reached (guard). Credentials: static keys from the configuration, a named profile, or the default
  credential chain; optionally a role assumed on top (refreshed before it expires).
- `translate()` turns every botocore/boto3 error into a BrokerError naming the upstream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import botocore.parsers

from broker.backends import guard
from broker.errors import BrokerError, Conflict, Forbidden, Invalid, NotFound, Throttled, Unavailable

# What an SDK call can raise: its own errors, and plain ones from its response parsers on a malformed body.
SDK_ERRORS = (
    botocore.exceptions.BotoCoreError,
    botocore.exceptions.ClientError,
    botocore.parsers.ResponseParserError,
    AttributeError,
    TypeError,
    ValueError,
    KeyError,
)

THROTTLING = {
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
}
AUTH = {
    "AccessDeniedException",
    "AccessDenied",
    "ExpiredTokenException",
    "ExpiredToken",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "InvalidClientTokenId",
    "IncompleteSignature",
    "MissingAuthenticationToken",
}


def make_client(
    service: str,
    *,
    label: str,
    region: str,
    endpoint_url: str | None,
    allowed: Sequence[guard.Network],
    timeout: float,
    max_attempts: int,
    max_pool: int,
    profile: str | None = None,
    static: tuple[str, str, str | None] | None = None,
    role_arn: str | None = None,
) -> Any:
    """A boto3 client for `service`, confined as the module docstring says."""
    if endpoint_url is not None:
        guard.check_address(endpoint_url, allowed, where=label)
    if static is not None:
        session = boto3.session.Session(
            aws_access_key_id=static[0], aws_secret_access_key=static[1], aws_session_token=static[2]
        )
    else:
        session = boto3.session.Session(profile_name=profile)
    config = botocore.config.Config(
        region_name=region,
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"total_max_attempts": max_attempts, "mode": "standard"},
        max_pool_connections=max_pool,
        proxies={},
        ignore_configured_endpoint_urls=True,
        user_agent_extra="strongroom",
    )
    if role_arn is not None:
        session = _assume(session, role_arn, region=region, endpoint_url=endpoint_url, config=config)
    client = session.client(service, region_name=region, endpoint_url=endpoint_url, config=config)
    _guard(client, allowed, label)
    return client


def _assume(session: Any, role_arn: str, *, region: str, endpoint_url: str | None, config: Any) -> Any:
    from botocore.credentials import DeferredRefreshableCredentials
    from botocore.session import Session as CoreSession

    sts = session.client("sts", region_name=region, endpoint_url=endpoint_url, config=config)

    def refresh() -> dict[str, Any]:
        creds = sts.assume_role(RoleArn=role_arn, RoleSessionName="strongroom-broker")["Credentials"]
        return {
            "access_key": creds["AccessKeyId"],
            "secret_key": creds["SecretAccessKey"],
            "token": creds["SessionToken"],
            "expiry_time": creds["Expiration"].isoformat(),
        }

    core = CoreSession()
    core._credentials = DeferredRefreshableCredentials(refresh_using=refresh, method="assume-role")
    return boto3.session.Session(botocore_session=core)


def _guard(client: Any, allowed: Sequence[guard.Network], label: str) -> None:
    http = getattr(getattr(client, "_endpoint", None), "http_session", None)
    classes = getattr(http, "_pool_classes_by_scheme", None)
    manager = getattr(http, "_manager", None)
    if isinstance(classes, dict) and manager is not None:
        guarded = guard.guard_connections(classes, allowed, label)
        http._pool_classes_by_scheme = guarded  # type: ignore[union-attr]
        manager.pool_classes_by_scheme = guarded


def translate(exc: Exception, *, label: str, where: str) -> BrokerError:
    """A BrokerError for any error boto3 raised; never echoes a value."""
    if isinstance(exc, BrokerError):
        return exc
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {}) or {}
        code = str(err.get("Code", ""))
        message = str(err.get("Message", ""))
        status = int((exc.response.get("ResponseMetadata", {}) or {}).get("HTTPStatusCode", 0) or 0)
        if 300 <= status < 400:
            return Unavailable(
                f"{label}: {where}: the upstream answered with a redirect; redirects are never followed"
            )
        if code in ("ResourceNotFoundException", "NotFoundException"):
            return NotFound(f"{where}: no such secret upstream")
        if code in THROTTLING:
            return Throttled(f"{label}: {where}: the upstream is throttling requests")
        if code in AUTH:
            return Forbidden(
                f"{label}: {where}: the upstream refused the broker's credentials "
                "(access denied, or the credentials expired)"
            )
        if code == "InvalidRequestException" and ("deletion" in message or "deleted" in message):
            return NotFound(f"{where}: is deleted upstream (undelete it to read)")
        if code == "ResourceExistsException":
            return Conflict(f"{where}: changed concurrently upstream; read it and retry")
        if code in ("InvalidCiphertextException", "IncorrectKeyException"):
            return Invalid(f"{label}: {where}: the upstream refused the ciphertext")
        if status >= 500 or code in (
            "InternalServiceError",
            "InternalServiceErrorException",
            "KMSInternalException",
        ):
            return Unavailable(f"{label}: {where}: the upstream answered {status or code}")
        return Unavailable(f"{label}: {where}: the upstream refused the request ({code[:60] or status})")
    if isinstance(exc, botocore.exceptions.HTTPClientError):
        inner = exc.kwargs.get("error")
        if isinstance(inner, BrokerError):
            return inner
    if isinstance(exc, botocore.exceptions.ReadTimeoutError | botocore.exceptions.ConnectTimeoutError):
        return Unavailable(f"{label}: {where}: the upstream did not answer in time")
    if isinstance(
        exc, botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectionClosedError
    ):
        return Unavailable(f"{label}: {where}: cannot connect to the upstream")
    if isinstance(exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError):
        return Unavailable(f"{label}: no AWS credentials are configured for this upstream")
    if isinstance(
        exc, (botocore.parsers.ResponseParserError, AttributeError, TypeError, ValueError, KeyError)
    ):
        # botocore's parsers fail this way on a body of the wrong JSON shape.
        return Unavailable(f"{label}: {where}: the upstream answered with a malformed response")
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return Unavailable(f"{label}: {where}: the request to the upstream failed ({type(exc).__name__})")
    return Unavailable(f"{label}: {where}: the request to the upstream failed")
