"""AwsKmsKek: a key-encryption key held by AWS KMS (a Kek of broker.crypto.keyring).

- generate(): GenerateDataKey (AES_256): KMS makes the data key and returns it with its wrapping.
- wrap(): Encrypt of a data key made elsewhere (rewrap from another kind of KEK).
- unwrap(): Decrypt.
Every call carries the encryption context {"strongroom-aad": base64url(associated data)}, so KMS itself
binds the wrapped key to its row: a wrapped key copied to another row fails to decrypt (opaque
IntegrityError). Blocking (boto3): the services call it off the event loop. Throttling and outages are
Throttled / Unavailable (503), never a fallback.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from broker.backends import aws_session, guard
from broker.crypto.envelope import check_kek_id
from broker.errors import IntegrityError, Invalid

T = TypeVar("T")
CONTEXT_KEY = "strongroom-aad"


def context(aad: bytes) -> dict[str, str]:
    """The KMS encryption context for our associated data."""
    return {CONTEXT_KEY: base64.urlsafe_b64encode(aad).decode("ascii")}


class AwsKmsKek:
    """A Kek backed by one KMS key (id, ARN or alias)."""

    def __init__(
        self,
        key_id: str,
        *,
        kms_key_id: str,
        region: str,
        endpoint_url: str | None = None,
        allow_networks: tuple[guard.Network, ...] = (),
        timeout: float = 5.0,
        max_attempts: int = 2,
        profile: str | None = None,
        static: tuple[str, str, str | None] | None = None,
        role_arn: str | None = None,
    ) -> None:
        self.key_id: str = check_kek_id(key_id)
        self._kms_key_id = kms_key_id
        self._label = f"aws-kms key {key_id}"
        self._client = aws_session.make_client(
            "kms",
            label=f"keyring keys.{key_id}.endpoint_url",
            region=region,
            endpoint_url=endpoint_url,
            allowed=allow_networks,
            timeout=timeout,
            max_attempts=max_attempts,
            max_pool=8,
            profile=profile,
            static=static,
            role_arn=role_arn,
        )

    def _sdk(self, fn: Callable[..., T], *, decrypting: bool = False, **kwargs: Any) -> T:
        try:
            return fn(**kwargs)
        except aws_session.SDK_ERRORS as exc:
            err = aws_session.translate(exc, label=self._label, where=self._kms_key_id)
            if decrypting and isinstance(err, Invalid):
                raise IntegrityError from None
            raise err from None

    def generate(self, aad: bytes) -> tuple[bytes, bytes]:
        """GenerateDataKey: a fresh 32-byte DEK and its KMS ciphertext blob."""
        resp = self._sdk(
            self._client.generate_data_key,
            KeyId=self._kms_key_id,
            KeySpec="AES_256",
            EncryptionContext=context(aad),
        )
        dek, blob = resp.get("Plaintext"), resp.get("CiphertextBlob")
        if not isinstance(dek, bytes) or not isinstance(blob, bytes):
            raise IntegrityError
        return dek, blob

    def wrap(self, dek: bytes, aad: bytes) -> bytes:
        """Encrypt a DEK made elsewhere."""
        resp = self._sdk(
            self._client.encrypt, KeyId=self._kms_key_id, Plaintext=dek, EncryptionContext=context(aad)
        )
        blob = resp.get("CiphertextBlob")
        if not isinstance(blob, bytes):
            raise IntegrityError
        return blob

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        """Decrypt; a wrong context or a damaged blob is the one opaque IntegrityError."""
        resp = self._sdk(
            self._client.decrypt,
            decrypting=True,
            CiphertextBlob=wrapped,
            KeyId=self._kms_key_id,
            EncryptionContext=context(aad),
        )
        dek = resp.get("Plaintext")
        if not isinstance(dek, bytes):
            raise IntegrityError
        return dek

    def __repr__(self) -> str:
        return f"AwsKmsKek(key_id={self.key_id!r}, kms_key_id={self._kms_key_id!r})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("AwsKmsKek objects hold credentials and cannot be pickled")
