"""The container's health check: GET /up on this container's broker with the image's own Python (no curl).

Reads the same STRONGROOM_HOST, STRONGROOM_PORT and STRONGROOM_TLS_CERT_FILE settings as `serve`, so set
the port and TLS through them (not `serve --port`) when the image's HEALTHCHECK is to follow. Exits 0 when
the broker answers 200, else 1 with one line on stderr. Standard library only.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.request

WILDCARDS = {"", "0.0.0.0", "::"}  # noqa: S104 - addresses serve may bind, mapped to loopback below


def url() -> str:
    """Where this container's broker answers /up."""
    host = os.environ.get("STRONGROOM_HOST", "127.0.0.1")
    if host in WILDCARDS:
        host = "::1" if host == "::" else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if os.environ.get("STRONGROOM_TLS_CERT_FILE") else "http"
    return f"{scheme}://{host}:{os.environ.get('STRONGROOM_PORT', '8750')}/up"


def context() -> ssl.SSLContext | None:
    """For HTTPS: trust exactly the certificate the broker serves (its name is for clients, not loopback)."""
    cert = os.environ.get("STRONGROOM_TLS_CERT_FILE")
    if not cert:
        return None
    ctx = ssl.create_default_context(cafile=cert)
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the served leaf itself is the trust anchor
    ctx.check_hostname = False
    return ctx


def main() -> int:
    """Probe /up once."""
    target = url()
    try:
        with urllib.request.urlopen(target, timeout=4, context=context()) as response:  # noqa: S310 - http(s) only
            if response.status == 200:
                return 0
            print(f"healthcheck: {target}: HTTP {response.status}", file=sys.stderr)
    except (OSError, ValueError) as exc:
        print(f"healthcheck: {target}: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
