"""Where the checkpoint signing key and the checkpoint directory come from (configuration, never the DB)."""

from __future__ import annotations

from pathlib import Path

from broker.audit.checkpoint import CheckpointError, Signer, generate_private_pem
from broker.config import Settings
from broker.errors import Invalid
from broker.files import create_private, loose_mode

DEV_KEY_NAME = "dev-audit-signing-key.pem"


def signing_key_path(settings: Settings) -> Path:
    """The configured signing key file, or the development one in the data directory."""
    return settings.audit_signing_key_file or settings.data_dir / DEV_KEY_NAME


def checkpoint_dir(settings: Settings) -> Path:
    """The checkpoint directory sink (the data directory's `audit-checkpoints` by default)."""
    return settings.audit_checkpoint_dir or settings.data_dir / "audit-checkpoints"


def load_signer(settings: Settings) -> tuple[Signer, bool]:
    """The checkpoint signer and whether a development key was just created.

    Production needs STRONGROOM_AUDIT_SIGNING_KEY_FILE; elsewhere a development key is created in the
    data directory (0600), with a warning, like the development keyring.
    """
    configured = settings.audit_signing_key_file
    if configured is None and settings.production:
        raise Invalid(
            "production: set STRONGROOM_AUDIT_SIGNING_KEY_FILE to an Ed25519 key kept off the database "
            "host's data volume (strongroom-server audit keygen --out FILE)",
            field="audit_signing_key_file",
        )
    path = signing_key_path(settings)
    created = False
    if not path.exists():
        if configured is not None:
            raise Invalid(f"audit signing key file {path} does not exist", field="audit_signing_key_file")
        created = create_private(path, generate_private_pem())
    if (loose := loose_mode(path, "audit signing key file")) is not None:
        raise Invalid(loose, field="audit_signing_key_file")
    try:
        return Signer.from_pem(path.read_bytes()), created
    except CheckpointError as exc:
        raise Invalid(f"audit signing key file {path}: {exc}", field="audit_signing_key_file") from None
