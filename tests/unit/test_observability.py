"""Request ids, log formatting and the observability settings (pure: no server)."""

from __future__ import annotations

import json
import logging

import pytest
from pydantic import ValidationError

from broker.api.observe import client_request_id
from broker.config import Settings
from broker.logs import JsonFormatter, TextFormatter


def scope(*headers: tuple[bytes, bytes]) -> dict[str, object]:
    return {"type": "http", "headers": list(headers)}


@pytest.mark.parametrize(
    "inbound", [b"abc", b"0f9a-12.b:c_d", b"a" * 64, b"Root=1-5759e988-bd862e3fe1be46a994272793"]
)
def test_a_well_formed_inbound_request_id_is_kept_as_the_callers(inbound: bytes) -> None:
    assert client_request_id(scope((b"x-request-id", inbound))) == inbound.decode()


@pytest.mark.parametrize(
    "inbound",
    [
        b"",
        b"a" * 65,
        b"has space",
        b'quo"te',
        b"-leading",
        b"caf\xc3\xa9",
        b"line\nbreak",
        b"semi;colon",
    ],
)
def test_a_malformed_inbound_request_id_is_dropped(inbound: bytes) -> None:
    assert client_request_id(scope((b"x-request-id", inbound))) is None


def test_without_a_request_id_there_is_none_of_the_callers() -> None:
    assert client_request_id(scope()) is None


def record(msg: str, *, exc: BaseException | None = None, **extra: object) -> logging.LogRecord:
    info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    rec = logging.LogRecord("strongroom.request", logging.INFO, __file__, 1, msg, (), info)
    rec.__dict__.update(extra)
    return rec


def test_json_lines_carry_the_record_fields_and_never_an_exception_message(canary: str) -> None:
    try:
        raise ValueError(f"input was {canary}")
    except ValueError as exc:
        line = JsonFormatter().format(record("GET /up 200", exc=exc, request_id="r1", status=200))
    assert "\n" not in line
    out = json.loads(line)
    assert out["message"] == "GET /up 200" and out["request_id"] == "r1" and out["status"] == 200
    assert out["logger"] == "strongroom.request" and out["level"] == "info"
    assert out["exception"] == "ValueError" and "test_observability.py" in out["traceback"]
    assert canary not in line


def test_text_lines_append_the_fields() -> None:
    line = TextFormatter().format(record("GET /up 200", request_id="r1", status=200))
    assert line.endswith("strongroom.request: GET /up 200 request_id=r1 status=200")


def test_request_lines_default_on_with_json_only() -> None:
    assert Settings(log_format="json").logs_requests is True
    assert Settings().logs_requests is False
    assert Settings(log_format="json", access_log=False).logs_requests is False
    assert Settings(access_log=True).logs_requests is True


def test_metrics_port_must_differ_from_the_api_port() -> None:
    with pytest.raises(ValidationError, match="STRONGROOM_METRICS_PORT"):
        Settings(port=9000, metrics_port=9000)
    with pytest.raises(ValidationError):
        Settings(log_format="xml")  # type: ignore[arg-type]
