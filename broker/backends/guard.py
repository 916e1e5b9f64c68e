"""K57 and D27: fixed upstreams. Addresses, prefixes and ARNs are checked here, before any upstream call.

- An upstream address comes from the backends file only. Its host must not resolve to a private,
  loopback, link-local (cloud metadata: 169.254.169.254), shared or otherwise non-global address unless
  that address is inside one of the upstream's `allow_networks`. The check runs when the broker starts
  and again on every new connection (the SDKs' connection classes are wrapped), so a name that later
  resolves to a metadata address is refused too.
- Paths are segments of `[A-Za-z0-9_.@+=-]`, never `.` or `..`, never empty: joined with `/` under the
  configured prefix they cannot leave it; `inside()` checks every full path again before it is used.
- An AWS ARN must name the configured partition, region and account and a secret under the prefix.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

from broker.errors import Forbidden, Invalid

SEGMENT = re.compile(r"[A-Za-z0-9_.@+=-]{1,255}")
REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")
ACCOUNT = re.compile(r"\d{12}")
ARN = re.compile(
    r"arn:(?P<partition>aws[a-z-]*):secretsmanager:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):secret:(?P<name>.+)"
)
MAX_PATH = 1024

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(items: Iterable[str], *, field: str) -> tuple[Network, ...]:
    """Parse allow-listed networks (CIDRs or addresses)."""
    out: list[Network] = []
    for item in items:
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise Invalid(f"{field}: {item!r} is not an IP network", field=field) from None
    return tuple(out)


def check_ip(ip: str, allowed: Sequence[Network], *, where: str) -> None:
    """Refuse a non-global address (private, loopback, link-local/metadata, shared) unless allow-listed."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if any(addr in net for net in allowed):
        return
    if not addr.is_global or addr.is_multicast:
        raise Forbidden(
            f"{where}: upstream address {addr} is private, loopback, link-local or reserved; "
            "refused unless listed in allow_networks"
        )


def check_address(url: str, allowed: Sequence[Network], *, where: str) -> tuple[str, str, int]:
    """Check an upstream base URL; returns (scheme, host, port). Resolves the host and checks every address."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise Invalid(f"{where}: not a valid URL", field=where) from None
    if parts.scheme not in ("https", "http"):
        raise Invalid(f"{where}: must be an https:// (or http://) URL", field=where)
    if parts.username is not None or parts.password is not None:
        raise Invalid(f"{where}: must not carry a user name or password", field=where)
    if parts.query or parts.fragment or parts.path not in ("", "/"):
        raise Invalid(f"{where}: must be scheme://host[:port] with no path, query or fragment", field=where)
    host = parts.hostname
    if not host:
        raise Invalid(f"{where}: has no host", field=where)
    port = port or (443 if parts.scheme == "https" else 80)
    for ip in resolve(host, port, where=where):
        check_ip(ip, allowed, where=where)
    return parts.scheme, host, port


def resolve(host: str, port: int, *, where: str) -> list[str]:
    """Every address a host name resolves to (an IP literal resolves to itself)."""
    try:
        return [ipaddress.ip_address(host).compressed]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise Invalid(f"{where}: cannot resolve upstream host {host}", field=where) from None
    return sorted({str(info[4][0]) for info in infos})


def check_segments(path: str, *, field: str, allow_empty: bool = False) -> str:
    """A relative path of safe segments; returns it unchanged or raises Invalid naming the field."""
    if path == "" and allow_empty:
        return path
    if len(path) > MAX_PATH:
        raise Invalid(f"{field}: longer than {MAX_PATH} characters", field=field)
    for seg in path.split("/"):
        if seg in (".", "..") or SEGMENT.fullmatch(seg) is None:
            raise Invalid(
                f"{field}: must be segments of letters, digits and _.@+=- joined by '/', "
                "with no empty, '.' or '..' segment",
                field=field,
            )
    return path


def join(*parts: str) -> str:
    """Join non-empty path parts with '/'."""
    return "/".join(p for p in parts if p)


def inside(prefix: str, rel: str, *, where: str) -> str:
    """The full upstream path of `rel` under `prefix`; Forbidden if it would leave the prefix."""
    try:
        check_segments(rel, field="path")
    except Invalid:
        raise Forbidden(f"{where}: path {rel[:200]!r} is outside the mapped prefix; refused") from None
    return join(prefix, rel)


def strip_prefix(prefix: str, full: str, *, where: str) -> str:
    """`full` relative to `prefix`; Forbidden if it is not under it."""
    if not prefix:
        rel = full
    elif full == prefix:
        rel = ""
    elif full.startswith(prefix + "/"):
        rel = full[len(prefix) + 1 :]
    else:
        raise Forbidden(f"{where}: {full[:200]!r} is outside the mapped prefix {prefix!r}; refused")
    if rel:
        try:
            check_segments(rel, field="path")
        except Invalid:
            raise Forbidden(
                f"{where}: {full[:200]!r} is outside the mapped prefix {prefix!r}; refused"
            ) from None
    return rel


def secret_name_from_arn(arn: str, *, partition: str, region: str, account: str | None, where: str) -> str:
    """The secret name of a Secrets Manager ARN of this upstream's account and region, else Forbidden."""
    m = ARN.fullmatch(arn)
    if m is None:
        raise Forbidden(f"{where}: not a Secrets Manager secret ARN; refused")
    if account is None or m["account"] != account:
        raise Forbidden(f"{where}: the ARN names account {m['account']}, not this backend's account; refused")
    if m["region"] != region or m["partition"] != partition:
        raise Forbidden(f"{where}: the ARN names another region or partition; refused")
    name = m["name"]
    # A full ARN ends with `-` and six random characters that are not part of the name.
    if re.search(r"-[A-Za-z0-9]{6}$", name):
        name = name[:-7]
    return name


def guard_connections(pool_classes: dict[str, Any], allowed: Sequence[Network], where: str) -> dict[str, Any]:
    """Subclass urllib3 connection pools so every new connection checks the peer address it reached."""
    out: dict[str, Any] = {}
    for scheme, pool_cls in pool_classes.items():
        base_conn = pool_cls.ConnectionCls

        class GuardedConnection(base_conn):  # type: ignore[misc, valid-type]
            def _new_conn(self) -> socket.socket:
                sock: socket.socket = super()._new_conn()
                try:
                    check_ip(str(sock.getpeername()[0]), allowed, where=where)
                except Forbidden:
                    sock.close()
                    raise
                return sock

        out[scheme] = type(f"Guarded{pool_cls.__name__}", (pool_cls,), {"ConnectionCls": GuardedConnection})
    return out
