"""E33: a user agent, secret name or path carrying newlines, CR, U+2028, ANSI escapes or a JSON fragment stays
inside its field: still one JSON object per line in the file sink and in exports, values escaped, and
what an auditor reads back is exactly what was sent (after clipping)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from urllib.parse import quote

from tests.integration.audit.conftest import broker, lines

EVIL_AGENTS = [
    "curl/8\r\nX-Injected: yes",
    "\x1b[2J\x1b[31mred\x1b[0m",
    '"},{"outcome":"ok","actor_name":"admin"}',
    "tab\there\x00nul",
]
EVIL_NAMES = ["A\nB", "A\u2028B\u2029C", "A\x1b[31mB", 'A"},{"outcome":"ok', "A\rB", "\u202eEVIL"]


def test_text_fields_cannot_break_the_record_format(db_url: str, tmp_path: Path) -> None:
    audit_file = tmp_path / "audit.jsonl"
    with broker(db_url, tmp_path, audit_file=audit_file) as api:
        sent: dict[str, tuple[str, str]] = {}
        for agent in EVIL_AGENTS:
            r = api.raw("GET", api.url("common", "K"), headers=[("User-Agent", agent)])
            sent[r.request_id] = ("user_agent", agent.replace("\x00", "\\x00"))
        for name in EVIL_NAMES:
            target = f"/v1/projects/microblog/environments/common/secrets/{quote(name, safe='')}"
            r = api.raw("GET", target)
            assert r.status == 400
            sent[r.request_id] = ("secret_name", name)

        raw = audit_file.read_bytes()
        assert raw.isascii() and b"\x1b" not in raw and b"\r" not in raw
        for data in (raw, api.export()):
            records = lines(data)  # raises unless every line is exactly one JSON object
            events = [r.get("event", r) for r in records]
            for request_id, (field, value) in sent.items():
                (event,) = [e for e in events if e.get("request_id") == request_id]
                assert event[field] == value
                assert event["outcome"] in ("invalid", "denied", "ok")

        table = csv.reader(io.StringIO(api.export(format="csv").decode("utf-8")))
        rows = list(table)
        header = rows[0]
        by_id = {row[header.index("request_id")]: row for row in rows[1:]}
        for request_id, (field, value) in sent.items():
            cell = by_id[request_id][header.index(field)]
            assert cell.removeprefix("'") == value  # a leading ' defuses spreadsheet formulas
        assert api.verify().ok
