"""`strongroom deploy --via kamal`: for teams staying on Kamal, Kamal deploys with a short-lived token.

The broker opens a deploy (kind deploy, via kamal) and mints the deploy token; the Kamal files are
compiled as `strongroom compile --target kamal` writes them (names only: `.kamal/secrets.<env>` calls
`strongroom kamal fetch`); `kamal deploy -d ENV --version V` runs with the deploy token as its
STRONGROOM_TOKEN, so the fetch Kamal runs can read this deploy's keys and nothing else, and only until the
deploy is finished. Kamal does its own build, push and SSH; the ledger gets the deploy's outcome.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cli.deploy import process
from cli.errors import CliError

if TYPE_CHECKING:
    from cli.client import BrokerClient

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
    if created.deploy is None or created.token is None:
        raise CliError("the broker answered the deploy without a deploy token; nothing was started")
    deploy_id = created.deploy.id
    deploy_client = client.with_token(created.token)
    outcome = "failed"
    try:
        for item in compiled.files:
            path = Path(manifest_dir).joinpath(*safe_relative(item.path).parts)
            mode = 0o600 if item.holds_values else (item.mode & 0o644) | 0o600
            write_private(path, item.content, mode=mode)
            say(f"Wrote {path} (names only)")
        argv = kamal_argv(found, environment=environment, version=version, hosts=hosts)
        say(f"Running {' '.join(argv[1:])} with deploy {deploy_id}'s token ({len(created.keys)} keys)")
        done = process.stream(
            argv,
            env={
                "STRONGROOM_TOKEN": created.token,
                "STRONGROOM_URL": client.url,
                "STRONGROOM_PROJECT": project,
            },
            cwd=manifest_dir,
            timeout=KAMAL_TIMEOUT,
            on_stdout=say,
            on_stderr=say,
        )
        outcome = "succeeded" if done.ok else "failed"
        return done.returncode
    finally:
        try:
            deploy_client.finish_deploy(deploy_id=deploy_id, outcome=outcome)
        except CliError as exc:
            say(f"warning: could not finish deploy {deploy_id} ({exc.message}); revoking its token")
            try:
                deploy_client.revoke_self()
            except CliError as again:
                say(f"warning: could not revoke it either ({again.message}); it lives until its TTL ends")
        deploy_client.close()
