"""`strongroom deploy --via kamal`: for teams staying on Kamal, Kamal deploys with a short-lived token.

The broker opens a deploy (kind deploy, via kamal) and mints the deploy token; the Kamal files are
compiled as `strongroom compile --target kamal` writes them (names only: `.kamal/secrets.<env>` calls
`strongroom kamal fetch`); `kamal deploy -d ENV --version V` runs with the deploy token as its
STRONGROOM_TOKEN, so the fetch Kamal runs can read this deploy's keys and nothing else, and only until the
deploy is finished. Kamal does its own build, push and SSH.

Before Kamal runs, the bundle is fetched once with the deploy token: it records in the ledger which key
versions this deploy served, and seeds the redactor every line Kamal prints passes through (Kamal echoes
commands that hold secrets). Afterwards each host of the plan is reported (deployed or failed by Kamal's
exit status: Kamal does not say which container runs where), then the deploy is finished.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cli.deploy import process
from cli.deploy.redact import Redactor
from cli.errors import CliError

if TYPE_CHECKING:
    from cli.client import BrokerClient, DeployPlan

KAMAL_ENVVAR = "STRONGROOM_KAMAL"
KAMAL_TIMEOUT = 3600.0
NOT_INSTALLED = 127


def kamal_argv(kamal: str, *, environment: str, version: str, hosts: list[str] | None = None) -> list[str]:
    """`kamal deploy` for the environment's destination files and the version (and only `hosts`)."""
    argv = [kamal, "deploy", "-d", environment, "--version", version]
    return [*argv, "--hosts", ",".join(hosts)] if hosts else argv


def deploy_with_kamal(
    client: BrokerClient,
    *,
    project: str,
    environment: str,
    manifest: str,
    manifest_dir: str,
    version: str,
    ttl_seconds: int,
    say: Callable[[str], None],
    hosts: list[str] | None = None,
    kamal: str | None = None,
) -> int:
    """Run the deploy through Kamal; the exit status (127, having done nothing, when kamal is not installed)."""
    import os

    found = shutil.which(kamal or os.environ.get(KAMAL_ENVVAR) or "kamal")
    if found is None:
        say(
            "skipped: kamal is not installed (not on PATH), so nothing was deployed and no token was "
            "minted; install Kamal 2 or deploy with Strongroom's own driver (drop --via kamal)"
        )
        return NOT_INSTALLED
    from cli.commands.compile import safe_relative
    from cli.files import write_private

    compiled = client.compile(project=project, environment=environment, manifest=manifest, targets=["kamal"])
    created = client.create_deploy(
        project=project,
        environment=environment,
        manifest=manifest,
        version=version,
        ttl_seconds=ttl_seconds,
        hosts=hosts,
        via="kamal",
    )
    if created.token is None:
        raise CliError("the broker answered the deploy without a deploy token; nothing was started")
    deploy_id = created.deploy.id if created.deploy is not None else ""
    deploy_client = client.with_token(created.token)
    redactor = Redactor()
    outcome = "failed"
    ran: process.Completed | None = None
    fingerprints: dict[tuple[str, str], str] = {}
    # From here on the deploy token exists: every path finishes the deploy or revokes the token.
    try:
        if created.deploy is None:
            raise CliError("the broker answered the deploy without a deploy record; nothing was started")
        bundle = deploy_client.deploy_bundle(deploy_id=deploy_id)
        for served in bundle.hosts:
            redactor.add_env_file(served.env_file)
            fingerprints[(served.host, served.role)] = served.env_fingerprint
        if bundle.registry_password is not None:
            redactor.add(bundle.registry_password)
        redactor.add(*bundle.build_secrets.values())
        for item in compiled.files:
            path = Path(manifest_dir).joinpath(*safe_relative(item.path).parts)
            mode = 0o600 if item.holds_values else (item.mode & 0o644) | 0o600
            write_private(path, item.content, mode=mode)
            say(f"Wrote {path} (names only)")
        argv = kamal_argv(found, environment=environment, version=version, hosts=hosts)
        say(f"Running {' '.join(argv[1:])} with deploy {deploy_id}'s token ({len(created.keys)} keys)")
        ran = process.stream(
            argv,
            env={
                "STRONGROOM_TOKEN": created.token,
                "STRONGROOM_URL": client.url,
                "STRONGROOM_PROJECT": project,
            },
            redactor=redactor,
            cwd=manifest_dir,
            timeout=KAMAL_TIMEOUT,
            on_stdout=say,
            on_stderr=say,
        )
        outcome = "succeeded" if ran.ok else "failed"
        return ran.returncode
    finally:
        try:
            _report_hosts(deploy_client, deploy_id, created.plan, ran, fingerprints, redactor, say)
        finally:
            _finish(deploy_client, deploy_id, outcome, say)


def _report_hosts(
    deploy_client: BrokerClient,
    deploy_id: str,
    plan: DeployPlan,
    ran: process.Completed | None,
    fingerprints: dict[tuple[str, str], str],
    redactor: Redactor,
    say: Callable[[str], None],
) -> None:
    """One ledger row per (host, role) of the plan, from Kamal's exit status (skipped if it never ran)."""
    if not deploy_id:
        return
    for role in plan.roles:
        for entry in role.hosts:
            if ran is None:
                outcome, error, fingerprint = "skipped", None, None
            elif ran.ok:
                outcome, error, fingerprint = "deployed", None, fingerprints.get((entry.host, role.name))
            else:
                tail = [line for line in (ran.stderr + ran.stdout).splitlines() if line.strip()][-5:]
                error = f"kamal deploy exited {ran.returncode}: " + " | ".join(tail)
                outcome, fingerprint = "failed", None
            try:
                deploy_client.report_deploy_host(
                    deploy_id=deploy_id,
                    host=entry.host,
                    role=role.name,
                    outcome=outcome,
                    env_fingerprint=fingerprint,
                    error=error,
                    redactor=redactor,
                )
            except Exception as exc:  # the ledger row is lost, the deploy must still be finished
                message = exc.message if isinstance(exc, CliError) else type(exc).__name__
                say(
                    f"warning: could not record {entry.host} ({role.name}) in the ledger: {redactor(message)}"
                )


def _finish(deploy_client: BrokerClient, deploy_id: str, outcome: str, say: Callable[[str], None]) -> None:
    """Finish the deploy, else revoke its token, else say the TTL is left; never raises."""
    try:
        try:
            if not deploy_id:
                raise CliError("no deploy record")
            deploy_client.finish_deploy(deploy_id=deploy_id, outcome=outcome)
            return
        except Exception as exc:
            message = exc.message if isinstance(exc, CliError) else type(exc).__name__
            say(f"warning: could not finish deploy {deploy_id} ({message}); revoking its token")
        try:
            deploy_client.revoke_self()
        except Exception as again:
            message = again.message if isinstance(again, CliError) else type(again).__name__
            say(f"warning: could not revoke it either ({message}); it lives until its TTL ends")
    finally:
        deploy_client.close()
