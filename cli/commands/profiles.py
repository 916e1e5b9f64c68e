"""`strongroom profiles`: the brokers and identities of the config file, and which one is the default."""

from __future__ import annotations

import click

from cli import credentials, output, profiles
from cli.credentials import DEFAULT_PROFILE
from cli.options import json_option
from cli.session import Session, now


@click.group("profiles")
def profiles_group() -> None:
    """List profiles and pick the default one (profiles live in $XDG_CONFIG_HOME/strongroom/config.toml)."""


@profiles_group.command("list")
@json_option
@click.pass_obj
def list_profiles(session: Session, as_json: bool) -> None:
    """List the profiles of the config file, with the state of each one's cached session."""
    config = session.config
    selected = session.profile_name
    names = sorted({*config.profiles, selected, DEFAULT_PROFILE})
    moment = now()
    rows = []
    for name in names:
        profile = config.profile(name)
        cached = credentials.load(session.cache_path_for(name))
        if cached is None:
            state = "not logged in"
        elif cached.expired(moment):
            state = "expired"
        else:
            age = cached.age(moment)
            left = cached.expires_in - age if age is not None else None
            state = f"logged in as {cached.principal.name}" + (
                f", {output.duration(left)} left" if left is not None else ""
            )
        rows.append(
            {
                "name": name,
                "selected": name == selected,
                "url": profile.url or (cached.url if cached else None),
                "project": profile.project,
                "session": state,
            }
        )
    if as_json:
        output.emit_json({"config": str(config.path), "profiles": rows})
        return
    output.emit_table(
        ("", "NAME", "URL", "PROJECT", "SESSION"),
        [
            (
                "*" if r["selected"] else "",
                str(r["name"]),
                str(r["url"] or "-"),
                str(r["project"] or "-"),
                str(r["session"]),
            )
            for r in rows
        ],
        empty="No profiles.",
    )


@profiles_group.command("use")
@click.argument("name")
@click.pass_obj
def use_profile(session: Session, name: str) -> None:
    """Make NAME the default profile (rewrites only the default_profile line of the config file)."""
    if not profiles.is_profile_name(name):
        raise click.BadParameter(profiles.NAME_RULE, param_hint="'NAME'")
    config = session.config
    if name not in config.profiles and name != DEFAULT_PROFILE:
        raise click.UsageError(
            f"no profile {name} in {config.path}: log in with strongroom --profile {name} login --url URL"
        )
    profiles.set_default(config, name)
    click.echo(f"The default profile is now {name}.")
