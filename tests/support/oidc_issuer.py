"""A small OIDC issuer on loopback for the tests: a JWKS endpoint with RS256 and ES256 keys, rotatable.

Tokens are signed with its private keys by joserfc, as a CI platform signs them; the endpoint counts the
fetches so tests can see the broker's cache and its refetch on key rotation.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from joserfc.jwk import ECKey, RSAKey


class LabIssuer:
    """A JWKS endpoint on loopback whose keys can be rotated; it counts the fetches."""

    def __init__(self) -> None:
        self.rsa = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
        self.ec = ECKey.generate_key("P-256", parameters={"kid": "ec-1"})
        self.published = [self.rsa, self.ec]
        self.fetches = 0
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                issuer.fetches += 1
                body = json.dumps({"keys": [k.as_dict(private=False) for k in issuer.published]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/jwks"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
