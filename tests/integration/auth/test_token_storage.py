"""C15: tokens are `srt_` + 256 random bits in base64url; the database keeps only 32-byte HMACs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from pathlib import Path

from sqlalchemy import text

from tests.integration.auth.conftest import ALL_ACTIONS, Broker, as_text, scope

TOKEN = re.compile(r"srt_([A-Za-z0-9_-]{43})")


def _raw(b64: str) -> bytes:
    return base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))


def _issue_many(broker: Broker) -> tuple[list[str], list[str]]:
    """Tokens from exchanges and child tokens, and the client secrets of new identities."""
    tokens = [broker.admin.token]
    secrets = [broker.admin.client_secret]
    for i in range(4):
        login = broker.login([scope("*", ALL_ACTIONS)], name=f"svc-{i}")
        tokens.append(login.token)
        secrets.append(login.client_secret)
        tokens.append(broker.child_token(login.token, num_uses=3)["token"])
    tokens.append(broker.child_token(broker.admin.token)["token"])
    return tokens, secrets


def test_token_format_and_entropy(broker: Broker) -> None:
    tokens, secrets = _issue_many(broker)
    assert len(set(tokens)) == len(tokens)
    for tok in tokens:
        m = TOKEN.fullmatch(tok)
        assert m, tok[:4]
        raw = _raw(m.group(1))
        assert len(raw) * 8 >= 256
        # Canonical base64url of the raw bytes (no padding, no alphabet tricks).
        assert base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == m.group(1)
    # 10 tokens x 32 bytes: a constant or counter-based generator would repeat bytes across tokens.
    chunks = {_raw(t[4:])[i : i + 8] for t in tokens for i in range(0, 32, 8)}
    assert len(chunks) == 4 * len(tokens)
    for sec in secrets:
        assert sec.startswith("srs_") and len(_raw(sec[4:])) >= 32
    # Accessors are different random values, not derived from the token text.
    body = broker.admin.body
    assert body["accessor"].startswith("sra_") and body["accessor"][4:] != body["token"][4:]


def _needles(tokens: list[str], secrets: list[str]) -> list[bytes]:
    out: list[bytes] = []
    for value in tokens + secrets:
        out += [value.encode(), value[4:].encode(), _raw(value[4:])]
    return out


def test_database_holds_only_hmacs(broker: Broker) -> None:
    tokens, secrets = _issue_many(broker)
    # The audit leak guard (run at teardown) knows every one of them.
    assert set(tokens) | set(secrets) <= broker.sensitive.secrets()
    dump = broker.dump()
    assert {"tokens", "principals", "audit_events"} <= set(dump)
    needles = _needles(tokens, secrets)
    for table, rows in dump.items():
        for row in rows:
            for col, cell in row.items():
                blob = as_text(cell)
                for needle in needles:
                    assert needle not in blob, f"{table}.{col} holds an issued credential"

    key = broker.rt.keys.hmac_key
    stored = {bytes(r["token_hash"]) for r in dump["tokens"]}
    assert len(dump["tokens"]) == len(tokens)
    assert all(len(h) == 32 for h in stored)
    for tok in tokens:
        expected = hmac.new(key, b"token\x00" + tok.encode(), hashlib.sha256).digest()
        assert expected in stored
        # Keyed, not a bare hash an attacker with the DB could check guesses against.
        assert hashlib.sha256(tok.encode()).digest() not in stored
    secret_hashes = {bytes(r["secret_hash"]) for r in dump["principals"]}
    assert all(len(h) == 32 for h in secret_hashes)
    for sec in secrets:
        assert hmac.new(key, b"client-secret\x00" + sec.encode(), hashlib.sha256).digest() in secret_hashes
        assert hashlib.sha256(sec.encode()).digest() not in secret_hashes
    # No other binary column holds anything shaped like a credential hash of ours.
    for row in dump["tokens"]:
        assert not any(isinstance(v, str) and TOKEN.search(v) for v in row.values())


def _raw_files(broker: Broker) -> list[Path]:
    url = broker.rt.settings.resolved_database_url
    if url.startswith("sqlite"):
        db = Path(url.split("///", 1)[1])
        files = [p for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists()]
        assert db in files and Path(f"{db}-wal") in files
        return files

    async def where() -> tuple[str, int]:
        async with broker.rt.engine.connect() as conn:
            await conn.execute(text("CHECKPOINT"))
            datadir = (await conn.execute(text("SELECT current_setting('data_directory')"))).scalar_one()
            oid = (
                await conn.execute(text("SELECT oid FROM pg_database WHERE datname = current_database()"))
            ).scalar_one()
            return str(datadir), int(oid)

    datadir, oid = broker.run(where)
    base = Path(datadir) / "base" / str(oid)
    return [Path(root) / f for root, _, names in os.walk(base) for f in names]


def test_raw_database_files_hold_no_credential(broker: Broker) -> None:
    """Grep the database's own files: SQLite db + WAL, or the PostgreSQL database directory."""
    tokens, secrets = _issue_many(broker)
    needles = _needles(tokens, secrets)
    files = _raw_files(broker)
    assert files
    total = 0
    hashes_found = 0
    key = broker.rt.keys.hmac_key
    token_hash = hmac.new(key, b"token\x00" + tokens[1].encode(), hashlib.sha256).digest()
    for path in files:
        data = path.read_bytes()
        total += len(data)
        hashes_found += data.count(token_hash)
        for needle in needles:
            assert needle not in data, f"{path.name} holds an issued credential"
    # The search is meaningful: the files we read do hold the stored HMAC of a token we issued.
    assert hashes_found >= 1, "the token HMAC was not found in the raw files; are we reading the right ones?"
    assert total > 0
