"""The broker's error tree: sentences for humans, no HTTP status codes (those live in api/errors.py)."""

from __future__ import annotations


class BrokerError(Exception):
    """Base of every error the broker raises on purpose; the message is safe to show to a client."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class Invalid(BrokerError):
    """The input breaks a rule; the message names the field and the rule."""


class NotFound(BrokerError):
    """The named thing does not exist (or the caller may not know that it does)."""


class Conflict(BrokerError):
    """The request conflicts with the current state (stale check-and-set version, non-empty parent)."""


class Unauthenticated(BrokerError):
    """No valid credential; every cause gives the same message."""

    def __init__(self) -> None:
        super().__init__("authentication failed: the token or credential is missing, invalid or expired")


class Forbidden(BrokerError):
    """The credential is valid but its scopes do not grant the action."""


class RateLimited(BrokerError):
    """Too many failed attempts for this principal or source address."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(BrokerError):
    """A dependency (database, audit sink, key source) cannot serve the request now; retry later."""


class Throttled(Unavailable):
    """An upstream (Vault, AWS) is throttling the broker; the client may retry after `retry_after` seconds."""

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class KeyUnavailable(Unavailable):
    """Stored data is wrapped by a KEK this process does not hold (not damage: a rotation not yet picked
    up, or a key retired while still in use)."""

    def __init__(self, key_id: str) -> None:
        super().__init__(
            f"stored data is wrapped by key {key_id}, which this broker's keyring does not hold; "
            "add the key to the keyring file (or restore it) and retry"
        )
        self.key_id = key_id


class IntegrityError(BrokerError):
    """Stored ciphertext failed authentication; deliberately says nothing about which check failed."""

    def __init__(self) -> None:
        super().__init__("stored data failed its integrity check")
