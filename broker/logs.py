"""Log set-up: text for a terminal, or one JSON object per line for a collector (STRONGROOM_LOG_FORMAT).

Standard library only. Nothing here decides what is logged; callers log no values (SECURITY.md), and
the request lines (broker/api/observe.py) carry only the fields named there.
"""

from __future__ import annotations

import json
import logging
import traceback
from datetime import UTC, datetime
from typing import Any

# Attributes every LogRecord has; anything else on a record came from `extra=` and goes into the JSON.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            # The type and frames only: an exception's message may quote input.
            out["exception"] = record.exc_info[0].__name__
            out["traceback"] = "".join(traceback.format_tb(record.exc_info[2]))
        return json.dumps(out, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """The familiar text line, with a request line's fields appended as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The record as text."""
        line = super().format(record)
        extra = [
            f"{k}={v}" for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")
        ]
        return f"{line} {' '.join(extra)}" if extra else line


def config(log_format: str) -> dict[str, Any]:
    """A logging.dictConfig for the broker and uvicorn (given to uvicorn, so every worker applies it)."""
    formatter = "broker.logs.JsonFormatter" if log_format == "json" else "broker.logs.TextFormatter"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": formatter}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}
        },
        "root": {"handlers": ["stderr"], "level": "WARNING"},
        "loggers": {
            "strongroom": {"level": "INFO"},
            # uvicorn's own loggers go through the root handler, in the same format; its access log stays
            # off (the broker's request line replaces it: route template, never the path and query).
            "uvicorn": {"handlers": [], "level": "WARNING", "propagate": True},
            "uvicorn.error": {"handlers": [], "level": "WARNING", "propagate": True},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }
