"""E31 for the audit surfaces: canary values written, read, resolved, rolled back, looked up by fingerprint
(including a never-stored candidate) and failing sinks never appear in any log record (SQL parameters
included), audit row, file-sink line, export, status or error body; only their fingerprints do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import broker.repositories.audit as audit_repo
from tests.integration.audit.conftest import broker
from tests.integration.secrets.test_canaries import CLIENT_LOGGERS, all_loggers_at_debug


def test_canaries_stay_out_of_the_audit_trail(
    db_url: str,
    tmp_path: Path,
    canary: str,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stored, candidate = canary, "NEVER" + canary
    audit_file = tmp_path / "audit.jsonl"
    all_loggers_at_debug(caplog)
    with broker(db_url, tmp_path, audit_file=audit_file) as api:
        texts: list[str] = []
        assert api.put("common", "DB_PASSWORD", stored).status_code == 200
        assert api.put("common", "DB_PASSWORD", "second").status_code == 200
        assert stored in api.get("common", "DB_PASSWORD", version=1).text
        assert (
            api.client.post(
                f"{api.url('common', 'DB_PASSWORD')}/rollback", json={"version": 1}, headers=api.h
            ).status_code
            == 200
        )
        assert stored in api.client.get(f"{api.env_url('production')}/resolved", headers=api.h).text
        for value in (stored, candidate):
            r = api.client.post("/v1/audit/fingerprint", json={"value": value}, headers=api.h)
            assert r.status_code == 200
            texts.append(r.text)
        r = api.client.post(
            "/v1/audit/fingerprint", json={"value": candidate, "oops": candidate}, headers=api.h
        )
        assert r.status_code == 400
        texts.append(r.text)
        with monkeypatch.context() as m:

            def down(*_a: Any, **_k: Any) -> None:
                raise RuntimeError(f"insert failed near {candidate}")  # a driver error quoting input

            m.setattr(audit_repo, "append", down)
            assert stored in api.get("common", "DB_PASSWORD", version=1).text  # the file sink recorded it
        for params in ({}, {"format": "csv"}):
            texts.append(api.export(**params).decode())
        texts.append(api.client.get("/v1/audit/events", params={"limit": 500}, headers=api.h).text)
        texts.append(api.client.get("/v1/audit/status", headers=api.h).text)
        texts.append(json.dumps([{k: str(v) for k, v in e.items()} for e in api.all_audit()]))
        texts.append(audit_file.read_text())
        for text in texts:
            assert stored not in text and candidate not in text, text[:300]
        assert "hmac-sha256:" in audit_file.read_text()
    records = [r for r in caplog.records if r.name.split(".")[0] not in CLIENT_LOGGERS]
    assert any(r.name.startswith("sqlalchemy.engine") for r in records)
    for record in records:
        rendered = f"{record.name} {record.getMessage()} {record.exc_text or ''}"
        assert stored not in rendered and candidate not in rendered, rendered[:300]
    out, err = capfd.readouterr()
    assert stored not in out + err and candidate not in out + err
