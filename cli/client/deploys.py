"""Deploys (issue 6; docs/api.md): the plan, the deploy token's bundle, the ledger per host."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from cli.client.reader import Reader, env_path, segment
from cli.client.transport import Transport
from cli.client.types import (
    BundleHost,
    CreatedDeploy,
    DeployBundle,
    DeployHostRecord,
    DeployInfo,
    DeployPlan,
    HostStatus,
    KeyRef,
    LastDeploy,
    PlanBuilder,
    PlanHealthcheck,
    PlanHost,
    PlanRegistry,
    PlanRole,
    PlanSsh,
    Rotated,
)

MAX_HOST_ERROR = 2000  # the broker's limit on a host report's error


class DeploysApi(Transport):
    """Starting, reporting and finishing deploys; the deploy token's calls go through `with_token(token)`."""

    def create_deploy(
        self,
        *,
        project: str,
        environment: str,
        manifest: str,
        version: str,
        ttl_seconds: int = 900,
        hosts: list[str] | None = None,
        kind: str = "deploy",
        via: str = "ssh",
    ) -> CreatedDeploy:
        """Start a deploy: a ledger row, a deploy token for the plan's keys only, and the plan."""
        body: dict[str, Any] = {
            "manifest": manifest,
            "version": version,
            "ttl_seconds": ttl_seconds,
            "hosts": hosts,
            "kind": kind,
            "via": via,
        }
        data = Reader(self._request("POST", f"{env_path(project, environment)}/deploys", body), "deploy")
        token = data.maybe_text("token")
        try:
            deploy = data.child("deploy") if data.maybe_object("deploy") else None
            return CreatedDeploy(
                deploy=_deploy_info(deploy) if deploy is not None else None,
                token=token,
                accessor=data.maybe_text("accessor"),
                expires_at=data.maybe_text("expires_at"),
                uses=data.maybe_integer("uses"),
                keys=_key_refs(data, "keys"),
                plan=_deploy_plan(data.child("plan")),
            )
        except BaseException:
            # A token was minted but the answer cannot be used: end the token before giving up on it.
            if token is not None:
                orphan = self.with_token(token)
                with contextlib.suppress(Exception):
                    orphan._request("POST", "/v1/auth/token/revoke-self", None)
                orphan.close()
            raise

    def deploy_bundle(self, *, deploy_id: str) -> DeployBundle:
        """The env file of every host, the registry password and build secrets (deploy token only)."""
        data = Reader(self._request("POST", f"/v1/deploys/{segment(deploy_id)}/bundle", None), "bundle")
        secrets = data.child("build_secrets")
        return DeployBundle(
            hosts=tuple(
                BundleHost(
                    host=item.text("host"),
                    role=item.text("role"),
                    env_file=item.text("env_file"),
                    env_fingerprint=item.text("env_fingerprint"),
                )
                for item in data.objects("hosts")
            ),
            registry_password=data.maybe_text("registry_password"),
            build_secrets={name: secrets.text(name) for name in secrets.keys()},  # noqa: SIM118 (a Reader)
            keys=_key_refs(data, "keys"),
        )

    def report_deploy_host(
        self,
        *,
        deploy_id: str,
        host: str,
        role: str,
        outcome: str,
        container: str | None = None,
        image_digest: str | None = None,
        env_fingerprint: str | None = None,
        error: str | None = None,
        redactor: Callable[[str], str] | None = None,
    ) -> None:
        """Record what the deploy did on one host in the ledger (deploy token); `error` redacted, then cut."""
        if error is not None:
            # Redact the whole text before cutting it: a cut through a value would leave a prefix no
            # redactor recognises any more.
            error = (redactor(error) if redactor is not None else error)[:MAX_HOST_ERROR]
        body = {
            "host": host,
            "role": role,
            "outcome": outcome,
            "container": container,
            "image_digest": image_digest,
            "env_fingerprint": env_fingerprint,
            "error": error,
        }
        self._request("POST", f"/v1/deploys/{segment(deploy_id)}/hosts", body)

    def finish_deploy(self, *, deploy_id: str, outcome: str) -> DeployInfo:
        """Close the deploy with its outcome; the broker revokes the deploy token (deploy token)."""
        path = f"/v1/deploys/{segment(deploy_id)}/finish"
        return _deploy_info(Reader(self._request("POST", path, {"outcome": outcome}), "deploy"))

    def list_deploys(self, *, project: str, environment: str, limit: int = 20) -> list[DeployInfo]:
        """The environment's deploys, newest first."""
        path = f"{env_path(project, environment)}/deploys?limit={int(limit)}"
        return [
            _deploy_info(item) for item in Reader(self._request("GET", path), "response").objects("deploys")
        ]

    def get_deploy(self, *, deploy_id: str) -> DeployInfo:
        """One deploy with its ledger rows and the key versions it served."""
        return _deploy_info(Reader(self._request("GET", f"/v1/deploys/{segment(deploy_id)}"), "deploy"))

    def deploy_status(self, *, project: str, environment: str, manifest: str) -> list[HostStatus]:
        """Per host of the manifest: the ledger's last deploy against what the broker would compile now."""
        path = f"{env_path(project, environment)}/deploys/status"
        data = Reader(self._request("POST", path, {"manifest": manifest}), "status")
        out = []
        for item in data.objects("hosts"):
            last = item.child("last") if item.maybe_object("last") else None
            out.append(
                HostStatus(
                    host=item.text("host"),
                    role=item.text("role"),
                    last=_last_deploy(last) if last is not None else None,
                    expected_env_fingerprint=item.maybe_text("expected_env_fingerprint"),
                    rotated=tuple(
                        Rotated(
                            name=entry.text("name"),
                            deployed_version=entry.maybe_integer("deployed_version"),
                            current_version=entry.maybe_integer("current_version"),
                        )
                        for entry in item.objects_or_none("rotated")
                    ),
                )
            )
        return out


def _key_refs(data: Reader, key: str) -> tuple[KeyRef, ...]:
    return tuple(
        KeyRef(
            environment=item.text("environment"),
            name=item.text("name"),
            version=item.maybe_integer("version"),
            fingerprint=item.maybe_text("fingerprint"),
        )
        for item in data.objects_or_none(key)
    )


def _deploy_info(data: Reader) -> DeployInfo:
    return DeployInfo(
        id=data.ident("id"),
        project=data.text("project"),
        environment=data.text("environment"),
        service=data.text("service"),
        version=data.text("version"),
        kind=data.text("kind"),
        status=data.text("status"),
        started_at=data.text("started_at"),
        finished_at=data.maybe_text("finished_at"),
        by=data.text("by"),
        hosts=tuple(
            DeployHostRecord(
                host=item.text("host"),
                role=item.text("role"),
                outcome=item.text("outcome"),
                container=item.maybe_text("container"),
                image_digest=item.maybe_text("image_digest"),
                env_fingerprint=item.maybe_text("env_fingerprint"),
                error=item.maybe_text("error"),
                at=item.maybe_text("at") or item.maybe_text("created_at"),
            )
            for item in data.objects_or_none("hosts")
        ),
        keys=_key_refs(data, "keys"),
    )


def _last_deploy(data: Reader) -> LastDeploy:
    deploy_key = next(
        (k for k in ("deploy_id", "deploy", "id") if data.maybe_text_or_id(k) is not None), None
    )
    return LastDeploy(
        deploy_id=data.maybe_text_or_id(deploy_key) if deploy_key is not None else None,
        version=data.maybe_text("version"),
        image_digest=data.maybe_text("image_digest"),
        env_fingerprint=data.maybe_text("env_fingerprint"),
        at=data.maybe_text("at"),
        by=data.maybe_text("by"),
        outcome=data.maybe_text("outcome"),
    )


def plan_from_json(data: object) -> DeployPlan:
    """A PlanOut object (as the broker sends it) as a DeployPlan; CliError naming a bad field."""
    return _deploy_plan(Reader(data, "plan"))


def _deploy_plan(data: Reader) -> DeployPlan:
    registry = data.child("registry") if data.maybe_object("registry") else None
    builder = data.child("builder") if data.maybe_object("builder") else None
    health = data.child("healthcheck") if data.maybe_object("healthcheck") else None
    ssh = data.child("ssh") if data.maybe_object("ssh") else None
    host_keys: dict[str, tuple[str, ...]] = {}
    if ssh is not None and ssh.maybe_object("host_keys"):
        pinned = ssh.child("host_keys")
        host_keys = {host: pinned.texts(host) for host in pinned.keys()}  # noqa: SIM118 (a Reader)
    return DeployPlan(
        service=data.text("service"),
        image=data.text("image"),
        version=data.text("version"),
        registry=(
            PlanRegistry(server=registry.maybe_text("server"), username=registry.text("username"))
            if registry is not None
            else None
        ),
        builder=(
            PlanBuilder(
                context=builder.maybe_text("context"),
                dockerfile=builder.maybe_text("dockerfile"),
                target=builder.maybe_text("target"),
                args=builder.text_map("args"),
                secrets=builder.texts("secrets") if builder.maybe_list("secrets") else (),
            )
            if builder is not None
            else None
        ),
        roles=tuple(
            PlanRole(
                name=role.text("name"),
                cmd=role.maybe_text("cmd"),
                options=role.text_map("options"),
                hosts=tuple(
                    PlanHost(
                        host=item.text("host"), tags=item.texts("tags") if item.maybe_list("tags") else ()
                    )
                    for item in role.objects("hosts")
                ),
            )
            for role in data.objects("roles")
        ),
        ssh=PlanSsh(
            user=ssh.maybe_text("user") if ssh is not None else None,
            port=ssh.maybe_integer("port") if ssh is not None else None,
            host_keys=host_keys,
        ),
        healthcheck=(
            PlanHealthcheck(
                path=health.maybe_text("path"),
                port=health.maybe_integer("port"),
                cmd=health.maybe_text("cmd"),
                interval=health.maybe_integer("interval") or 1,
                timeout=health.maybe_integer("timeout") or 30,
            )
            if health is not None
            else None
        ),
        retain_images=data.maybe_integer("retain_images") or 5,
        stop_timeout=data.maybe_integer("stop_timeout") or 10,
        raw=dict(data.raw()),
    )
