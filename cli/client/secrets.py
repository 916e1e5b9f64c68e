"""Secrets of an environment: values, versions, generation, the resolved view, imports from upstreams."""

from __future__ import annotations

from cli.client.reader import Reader, env_path, secret_path
from cli.client.transport import Transport
from cli.client.types import (
    Generated,
    ImportChange,
    ImportResult,
    Resolved,
    ResolvedValue,
    Secret,
    SecretHistory,
    SecretMeta,
    SecretVersion,
)


class SecretsApi(Transport):
    """Reading and writing secrets; values stay out of repr and errors."""

    def list_secrets(self, *, project: str, environment: str) -> list[SecretMeta]:
        """The secrets of an environment, without values."""
        data = Reader(self._request("GET", f"{env_path(project, environment)}/secrets"), "response")
        return [read_secret_meta(item) for item in data.objects("secrets")]

    def get_secret(
        self, *, project: str, environment: str, name: str, version: int | None = None, reveal: bool = False
    ) -> Secret:
        """Read one secret's value, the current version unless `version`; `reveal`: audited as shown."""
        path = secret_path(project, environment, name)
        if version is not None:
            path += f"?version={int(version)}"
        data = Reader(self._request("GET", path, reveal=reveal), "secret")
        return Secret(
            name=data.text("name"),
            value=data.text("value"),
            version=data.integer("version"),
            sensitive=data.flag("sensitive"),
            environment=data.text("environment"),
            created_at=data.text("created_at"),
        )

    def put_secret(
        self,
        *,
        project: str,
        environment: str,
        name: str,
        value: str,
        sensitive: bool = True,
        cas: int | None = None,
    ) -> SecretMeta:
        """Store a new version of a secret; with `cas`, only if the current version is `cas` (0: none yet)."""
        body = {"value": value, "sensitive": sensitive, "cas": cas}
        path = secret_path(project, environment, name)
        return read_secret_meta(Reader(self._request("PUT", path, body, redact=(value,)), "secret"))

    def delete_secret(self, *, project: str, environment: str, name: str) -> None:
        """Soft-delete a secret's current version."""
        self._request("DELETE", secret_path(project, environment, name))

    def undelete_secret(self, *, project: str, environment: str, name: str) -> SecretMeta:
        """Bring a soft-deleted secret back."""
        path = f"{secret_path(project, environment, name)}/undelete"
        return read_secret_meta(Reader(self._request("POST", path), "secret"))

    def destroy_secret_version(self, *, project: str, environment: str, name: str, version: int) -> None:
        """Erase one version's ciphertext for good."""
        path = f"{secret_path(project, environment, name)}/versions/{int(version)}/destroy"
        self._request("POST", path)

    def secret_history(self, *, project: str, environment: str, name: str) -> SecretHistory:
        """Every version of a secret, without values."""
        data = Reader(self._request("GET", f"{secret_path(project, environment, name)}/versions"), "history")
        return SecretHistory(
            name=data.text("name"),
            current_version=data.integer("current_version"),
            versions=tuple(
                SecretVersion(
                    version=item.integer("version"),
                    created_at=item.text("created_at"),
                    author=item.maybe_text("author"),
                    deleted=item.flag("deleted"),
                    destroyed=item.flag("destroyed"),
                )
                for item in data.objects("versions")
            ),
        )

    def rollback_secret(self, *, project: str, environment: str, name: str, version: int) -> SecretMeta:
        """Store a new version holding the value of an earlier `version`."""
        path = f"{secret_path(project, environment, name)}/rollback"
        return read_secret_meta(Reader(self._request("POST", path, {"version": version}), "secret"))

    def generate_secret(
        self, *, project: str, environment: str, name: str, size: int, encoding: str, rotate: bool
    ) -> Generated:
        """Have the broker generate and store a value unless the secret exists (or `rotate`); never returns it."""
        body = {"bytes": size, "format": encoding, "rotate": rotate}
        path = f"{secret_path(project, environment, name)}/generate"
        data = Reader(self._request("POST", path, body), "generated")
        return Generated(
            generated=data.flag("generated"),
            rotated=data.flag("rotated"),
            secret=read_secret_meta(data.child("secret")),
        )

    def resolved(self, *, project: str, environment: str, reveal: bool = False) -> Resolved:
        """Every value an environment sees, inheritance applied, in one round trip; `reveal`: audited as shown."""
        path = f"{env_path(project, environment)}/resolved"
        data = Reader(self._request("GET", path, reveal=reveal), "resolved")
        values_reader = data.child("values")
        values: dict[str, ResolvedValue] = {}
        for name in values_reader.keys():  # noqa: SIM118 (a Reader, not a dict)
            item = values_reader.child(name)
            values[name] = ResolvedValue(
                value=item.text("value"),
                version=item.integer("version"),
                environment=item.text("environment"),
                sensitive=item.flag("sensitive"),
            )
        return Resolved(project=data.text("project"), environment=data.text("environment"), values=values)

    # --- import from an upstream (issue 7)

    def import_from_backend(
        self,
        *,
        project: str,
        environment: str,
        source: str,
        backend: str | None = None,
        dry_run: bool = False,
        overwrite: bool = False,
    ) -> ImportResult:
        """Copy a Vault or AWS Secrets Manager source into a database environment (or list what would change)."""
        body = {"source": source, "backend": backend, "dry_run": dry_run, "overwrite": overwrite}
        data = Reader(self._request("POST", f"{env_path(project, environment)}/import", body), "import")
        return ImportResult(
            source=data.text("source"),
            backend=data.text("backend"),
            dry_run=data.flag("dry_run"),
            changes=tuple(
                ImportChange(
                    name=item.text("name"),
                    action=item.text("action"),
                    reason=item.maybe_text("reason"),
                    upstream_path=item.maybe_text("upstream_path"),
                    upstream_version=item.maybe_text("upstream_version"),
                )
                for item in data.objects("changes")
            ),
        )


def read_secret_meta(data: Reader) -> SecretMeta:
    """A secret's metadata (never a value)."""
    return SecretMeta(
        name=data.text("name"),
        version=data.integer("version"),
        sensitive=data.flag("sensitive"),
        deleted=data.flag("deleted"),
        created_at=data.text("created_at"),
        updated_at=data.text("updated_at"),
    )
