"""`strongroom tokens`: short-lived, scoped, use-limited, CIDR-bound tokens for CI; listed and revoked by admins.

A created token is a child of your session's token: never broader in scope, lifetime or networks, revoked
with it (so `strongroom logout` ends it too), and printed once. For a credential that outlives a session,
create a machine identity instead.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import Any

import click

from cli import output
from cli.client import ListedToken, Scope, TokenInfo
from cli.options import json_option
from cli.session import Session

ACTIONS = ("read", "write", "admin", "audit")
MAX_TTL_SECONDS = 31 * 86400
TTL_SLACK_SECONDS = 5
_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_SLUG_OR_STAR = re.compile(r"\*|[a-z0-9][a-z0-9-]{0,63}")
_GLOB = re.compile(r"[a-z0-9*?\[\]!-]{1,64}")
SCOPE_FORMAT = (
    "PROJECT[:ENVIRONMENTS]:ACTIONS[:KEYS], e.g. microblog:production:read, 'microblog:*:read,write' "
    "or microblog:production:read:DB_PASSWORD,API_KEY (only those secrets)"
)
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_duration(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """Click callback: `900`, `90s`, `15m`, `8h`, `1d2h` as seconds (at most 31 days)."""
    if value is None:
        return None
    text = value.strip().lower()
    if text.isdigit():
        seconds = int(text)
    else:
        match = _DURATION.fullmatch(text)
        if not text or match is None:
            raise click.BadParameter("must be seconds or a duration such as 90s, 15m, 8h or 1d", ctx, param)
        days, hours, minutes, secs = (int(group or 0) for group in match.groups())
        seconds = ((days * 24 + hours) * 60 + minutes) * 60 + secs
    if not 1 <= seconds <= MAX_TTL_SECONDS:
        raise click.BadParameter("must be between 1 second and 31 days", ctx, param)
    return seconds


def parse_scope(text: str, *, deny: bool) -> dict[str, Any]:
    """`PROJECT[:ENVIRONMENTS]:ACTIONS` as a scope object; raises click.BadParameter naming the rule."""
    parts = text.split(":")
    if len(parts) == 2:
        parts.insert(1, "*")
    keys: list[str] | None = None
    if len(parts) == 4:
        keys = [k.strip() for k in parts.pop().split(",") if k.strip()]
        if not keys or not all(_KEY.fullmatch(k) for k in keys):
            raise click.BadParameter(f"{text!r}: the keys must be secret names separated by commas")
    if len(parts) != 3:
        raise click.BadParameter(f"{text!r} is not {SCOPE_FORMAT}")
    project, environments, actions_text = (part.strip() for part in parts)
    if not _SLUG_OR_STAR.fullmatch(project):
        raise click.BadParameter(f"{text!r}: the project must be a project slug or *")
    if not _GLOB.fullmatch(environments):
        raise click.BadParameter(f"{text!r}: the environments must be a slug or a glob such as prod*")
    actions = [a for a in re.split(r"[,+]", actions_text) if a]
    unknown = [a for a in actions if a not in ACTIONS]
    if not actions or unknown:
        raise click.BadParameter(f"{text!r}: the actions must be among {', '.join(ACTIONS)}")
    out: dict[str, Any] = {"project": project, "environments": environments, "actions": actions, "deny": deny}
    if keys is not None:
        out["keys"] = keys
    return out


def scope_values(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[dict[str, Any]]:
    """Click callback: each `--scope` (or `--deny`, by the parameter's name) as a scope object."""
    try:
        return [parse_scope(value, deny=param.name == "denies") for value in values]
    except click.BadParameter as exc:
        exc.ctx, exc.param = ctx, param
        raise


def describe_scopes(scopes: tuple[Scope, ...]) -> str:
    """`read,write microblog/*; deny write microblog/prod*`."""
    if not scopes:
        return "-"
    return "; ".join(
        f"{'deny ' if s.deny else ''}{','.join(s.actions)} {s.project}/{s.environments}"
        + (f" keys {','.join(s.keys)}" if s.keys is not None else "")
        for s in scopes
    )


def describe_uses(info: TokenInfo) -> str:
    """`3/5` (remaining of the limit), or `-` for no limit."""
    if info.num_uses is None:
        return "-"
    remaining = "?" if info.uses_remaining is None else str(info.uses_remaining)
    return f"{remaining}/{info.num_uses}"


def _info_json(info: TokenInfo) -> dict[str, Any]:
    data = asdict(info)
    data["max_expires_in"] = info.max_expires_in
    return data


@click.group()
def tokens() -> None:
    """Create tokens for CI (printed once); list and revoke tokens (admins)."""


@tokens.command("create")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    callback=scope_values,
    metavar="SCOPE",
    help=f"Grant {SCOPE_FORMAT} (repeatable; default: all of your session's scopes).",
)
@click.option("--deny", "denies", multiple=True, callback=scope_values, metavar="SCOPE", help="Refuse SCOPE.")
@click.option(
    "--ttl",
    callback=parse_duration,
    metavar="DURATION",
    help="Lifetime, e.g. 15m or 3600 (default: the broker's); capped at your session's remaining life, "
    "and the output says so when it is.",
)
@click.option("--uses", type=click.IntRange(1, 1_000_000), metavar="N", help="Valid for N requests only.")
@click.option(
    "--cidr",
    "cidrs",
    multiple=True,
    metavar="CIDR",
    help="Accept it only from this network, e.g. 10.0.0.0/8 (repeatable).",
)
@json_option
@click.pass_obj
def create_token(
    session: Session,
    *,
    scopes: list[dict[str, Any]],
    denies: list[dict[str, Any]],
    ttl: int | None,
    uses: int | None,
    cidrs: tuple[str, ...],
    as_json: bool,
) -> None:
    """Create a scoped, short-lived token from your session and print it once (the token alone on stdout)."""
    if denies and not scopes:
        raise click.UsageError("--deny narrows --scope grants: give at least one --scope too")
    token = session.client().create_token(
        scopes=[*scopes, *denies] or None, ttl=ttl, num_uses=uses, bound_cidrs=list(cidrs) or None
    )
    info = token.info
    # The broker caps a child at its parent's remaining life; say so rather than let --ttl 99h look granted.
    # The slack absorbs the seconds between issue and answer (expires_in counts down from the answer).
    capped = ttl is not None and info.expires_in < ttl - TTL_SLACK_SECONDS
    if as_json:
        output.emit_json(
            {"token": token.token, **_info_json(info), "requested_ttl": ttl, "ttl_capped": capped}
        )
        return
    limits = [f"expires in {output.duration(info.expires_in)}"]
    if info.num_uses is not None:
        limits.append(f"{info.num_uses} use{'' if info.num_uses == 1 else 's'}")
    if info.bound_cidrs:
        limits.append(f"only from {', '.join(info.bound_cidrs)}")
    click.echo(
        f"Created token {info.accessor} for {output.clean(info.principal.name)}: "
        f"{output.clean(describe_scopes(info.scopes))}; {'; '.join(limits)}. It ends with your session. "
        "The token is shown once, on stdout:",
        err=True,
    )
    if capped:
        click.echo(
            f"--ttl asked for {output.duration(ttl or 0)}, but the maximum is your session's remaining life, "
            f"{output.duration(info.expires_in)}: a token never outlives the session it is created from. "
            "For a longer-lived credential create a machine identity (strongroom identities create).",
            err=True,
        )
    click.echo(token.token)


@tokens.command("list")
@click.option("--all", "include_inactive", is_flag=True, help="Include expired and revoked tokens.")
@click.option(
    "--limit", type=click.IntRange(1, 1000), default=200, show_default=True, help="At most this many."
)
@json_option
@click.pass_obj
def list_tokens(session: Session, include_inactive: bool, limit: int, as_json: bool) -> None:
    """List tokens by accessor, newest first (admins); never the tokens themselves."""
    items = session.client().list_tokens(include_inactive=include_inactive, limit=limit)
    if as_json:
        output.emit_json(
            [{**_info_json(t.info), "created_at": t.created_at, "revoked": t.revoked} for t in items]
        )
        return
    output.emit_table(
        ("ACCESSOR", "PRINCIPAL", "SCOPES", "EXPIRES", "USES", "CIDRS", "CREATED"),
        [_row(t) for t in items],
        empty="No tokens." if include_inactive else "No live tokens (--all shows expired and revoked ones).",
    )


def _row(item: ListedToken) -> tuple[str, ...]:
    info = item.info
    if item.revoked:
        expires = "revoked"
    elif info.expires_in <= 0:
        expires = "expired"
    else:
        expires = f"in {output.duration(info.expires_in)}"
    return (
        info.accessor,
        f"{info.principal.name} ({info.principal.type})",
        describe_scopes(info.scopes),
        expires,
        describe_uses(info),
        ",".join(info.bound_cidrs) or "-",
        item.created_at,
    )


@tokens.command("revoke")
@click.argument("accessor")
@json_option
@click.pass_obj
def revoke_token(session: Session, accessor: str, as_json: bool) -> None:
    """Revoke the token with ACCESSOR (sra_...) and every token created from it (admins)."""
    if accessor.startswith("srt_"):
        # Never echoed: it is a credential, and one typed on a command line should be treated as leaked.
        raise click.UsageError(
            "that is a token, not its accessor (sra_...): find the accessor with strongroom tokens list, "
            "and treat a token typed on a command line as leaked"
        )
    if not accessor.startswith("sra_") or not accessor.isprintable() or len(accessor) > 128:
        raise click.UsageError("an accessor looks like sra_... (see strongroom tokens list)")
    session.client().revoke_token(accessor=accessor)
    if as_json:
        output.emit_json({"accessor": accessor, "revoked": True})
        return
    click.echo(f"Revoked {accessor} and every token created from it.")
