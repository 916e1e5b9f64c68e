"""uvicorn's httptools protocol with a bound on request heads: 431 past it, without reading the rest.

httptools hands a header to the server only once it is complete, so a bound checked per header alone would
let a client make the server buffer any amount first. The head's bytes are counted as they arrive instead,
fed to the parser in pieces that never cross the bound, and one header is checked when the parser gives it.
"""

from __future__ import annotations

import json
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from broker.config import get_settings

# After the 431, what a client still sending is allowed to push before the connection is closed: enough
# for the response to reach a client that reads only once its write fails, far less than a huge header.
DRAIN_BYTES = 1024 * 1024
DRAIN_SECONDS = 5.0


def too_large(detail: str) -> bytes:
    """The whole 431 response, problem JSON as elsewhere in the API; the connection closes after it."""
    body = json.dumps(
        {"type": "about:blank", "title": "Request Header Fields Too Large", "status": 431, "detail": detail}
    ).encode()
    return (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
        b"content-type: application/problem+json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n"
        b"connection: close\r\n\r\n" + body
    )


class _HeaderTooLarge(Exception):
    pass


class BoundedHttpTools(HttpToolsProtocol):
    """One HTTP/1.1 connection, its request heads bounded by STRONGROOM_MAX_HEADER_BYTES (one header)
    and STRONGROOM_MAX_REQUEST_HEAD_BYTES (request line and every header)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self.max_header = settings.max_header_bytes
        self.max_head = settings.max_request_head_bytes
        self._head = 0  # bytes of the current request's head received so far
        self._awaiting_head = True
        self._drained: int | None = None  # bytes dropped after a 431 (None: no 431 sent)

    def on_header(self, name: bytes, value: bytes) -> None:
        """A complete header from the parser: refused past the one-header bound."""
        if len(name) + len(value) > self.max_header:
            raise _HeaderTooLarge()
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        """The head ended within the bound: the rest is body."""
        self._awaiting_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """The next bytes start a new request head (keep-alive, pipelining)."""
        super().on_message_complete()
        self._awaiting_head, self._head = True, 0

    def data_received(self, data: bytes) -> None:
        """Feed the parser, never past the head bound while the head is incomplete."""
        if self._drained is not None:
            self._drained += len(data)
            if self._drained > DRAIN_BYTES:
                self.transport.close()
            return
        while data and self._awaiting_head and not self.transport.is_closing():
            allowance = self.max_head + 1 - self._head
            piece, data = data[:allowance], data[allowance:]
            self._head += len(piece)
            if not self._feed(piece):
                return
            if self._awaiting_head and self._head > self.max_head:
                self._refuse(f"request head: larger than {self.max_head} bytes")
                return
        if data and not self.transport.is_closing():
            self._feed(data)

    def _feed(self, data: bytes) -> bool:
        """uvicorn's data_received for one piece, with the one-header refusal; False once answered."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _HeaderTooLarge):
                self._refuse(f"header: one header larger than {self.max_header} bytes")
            else:
                self.send_400_response("Invalid HTTP request received.")
            return False
        except httptools.HttpParserError:
            self.send_400_response("Invalid HTTP request received.")
            return False
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return False
        return True

    def _refuse(self, detail: str) -> None:
        """Answer 431 and close; drop what the client still sends for a little while so that it gets the
        answer rather than a reset."""
        self._drained = 0
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # a response is under way on this connection: no room for a 431
            return
        self.transport.write(too_large(detail))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(DRAIN_SECONDS, self.transport.close)
