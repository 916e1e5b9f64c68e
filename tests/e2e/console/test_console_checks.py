"""The console's Origin and cookie rules as pure decisions on a request (no server needed)."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from broker.console import security
from broker.errors import Forbidden


def _request(scheme: str, host: str, **headers: str) -> Request:
    raw = [(b"host", host.encode())] + [
        (k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()
    ]
    return Request(
        {"type": "http", "method": "POST", "scheme": scheme, "path": "/console/logout", "headers": raw}
    )


@pytest.mark.parametrize(
    ("scheme", "host", "headers"),
    [
        ("http", "127.0.0.1:8750", {}),
        ("http", "127.0.0.1:8750", {"origin": "http://127.0.0.1:8750"}),
        ("https", "secrets.example.org", {"origin": "https://secrets.example.org"}),
        # TLS ends at a proxy that passes the Host header on.
        ("http", "secrets.example.org", {"origin": "https://secrets.example.org"}),
        # A form posted from a page under Referrer-Policy: no-referrer.
        ("http", "127.0.0.1:8750", {"origin": "null", "sec_fetch_site": "same-origin"}),
    ],
)
def test_own_forms_pass(scheme: str, host: str, headers: dict[str, str]) -> None:
    security.check_origin(_request(scheme, host, **headers))


@pytest.mark.parametrize(
    ("scheme", "host", "headers"),
    [
        ("http", "127.0.0.1:8750", {"origin": "https://evil.example"}),
        ("http", "127.0.0.1:8750", {"origin": "http://127.0.0.1:8751"}),
        ("http", "127.0.0.1:8750", {"origin": "null"}),
        ("http", "127.0.0.1:8750", {"origin": "null", "sec_fetch_site": "cross-site"}),
        ("http", "127.0.0.1:8750", {"sec_fetch_site": "same-site"}),
        # A plain-HTTP page may not post to the HTTPS broker.
        ("https", "secrets.example.org", {"origin": "http://secrets.example.org"}),
    ],
)
def test_forms_from_elsewhere_are_refused(scheme: str, host: str, headers: dict[str, str]) -> None:
    with pytest.raises(Forbidden, match="origin: this form was sent from another site"):
        security.check_origin(_request(scheme, host, **headers))


@pytest.mark.parametrize(
    ("scheme", "host", "secure"),
    [
        ("http", "127.0.0.1:8750", False),
        ("http", "localhost:8750", False),
        ("http", "[::1]:8750", False),
        ("https", "127.0.0.1:8750", True),
        ("http", "secrets.example.org", True),
        ("http", "10.0.0.5:8750", True),
    ],
)
def test_cookies_are_secure_off_loopback_http(scheme: str, host: str, secure: bool) -> None:
    assert security.cookie_secure(_request(scheme, host)) is secure


def test_csrf_tokens_compare_exactly() -> None:
    security.check_csrf("a" * 64, "a" * 64)
    for sent in (None, "", "a" * 63, "b" * 64, "a" * 64 + "a"):
        with pytest.raises(Forbidden, match="csrf"):
            security.check_csrf(sent, "a" * 64)
