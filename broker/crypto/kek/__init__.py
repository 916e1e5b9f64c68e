"""Key encryption keys: each is "just an Aead" behind the Kek protocol of broker.crypto.keyring."""

from broker.crypto.kek.local import LocalKek

__all__ = ["LocalKek"]
