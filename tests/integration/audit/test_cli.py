"""Journey 5 with the real CLI against a real broker on the embedded default (the dev checkpoint key is made
in the data directory): `strongroom audit list` (escape sequences shown, never run), `fingerprint` (the
value from stdin, never argv), `export --format csv` then an offline `verify`; the dev audit key warning."""

from __future__ import annotations

import http.client
import json
import stat
from pathlib import Path

from tests.e2e.conftest import BrokerProcess, start, stop
from tests.integration.secrets.conftest import random_value


def login(broker: BrokerProcess) -> None:
    secret_file = broker.data_dir / "bootstrap-admin.secret"
    out = broker.cli("login", "--url", broker.url, "--client-id", "admin", "--secret-file", str(secret_file))
    assert out.returncode == 0, out.stderr


def test_auditor_journey_with_the_cli(tmp_path: Path) -> None:
    broker = start(tmp_path / "data", tmp_path / "home" / ".config", tmp_path / "broker.log")
    try:
        log = broker.server_output()
        assert "DEVELOPMENT AUDIT SIGNING KEY" in log
        key = tmp_path / "data" / "dev-audit-signing-key.pem"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.read_text() not in log
        login(broker)
        value = random_value()
        assert broker.cli("projects", "create", "microblog").returncode == 0
        assert broker.cli("envs", "create", "-p", "microblog", "production").returncode == 0
        out = broker.cli(
            "secrets", "set", "-p", "microblog", "-e", "production", "DATABASE_URL", input=value.encode()
        )
        assert out.returncode == 0, out.stderr
        assert (
            broker.cli("secrets", "get", "-p", "microblog", "-e", "production", "DATABASE_URL").returncode
            == 0
        )
        # a request whose user agent tries to paint the auditor's terminal
        conn = http.client.HTTPConnection("127.0.0.1", broker.port, timeout=60)
        conn.putrequest("GET", "/v1/nope%C2%9B2J")  # U+009B in the path too
        conn.putheader(
            "User-Agent", "evil\x9b2Jagent"
        )  # 0x9b: CSI, the 8-bit escape (ESC itself is refused by the HTTP parser)
        conn.endheaders()
        assert conn.getresponse().status == 404
        conn.close()

        out = broker.cli("audit", "list", "--name", "DATABASE_URL", "--action", "secret.*")
        assert out.returncode == 0, out.stderr
        table = out.stdout.splitlines()
        assert table[0].split() == [
            "SEQ",
            "TIME",
            "(UTC)",
            "ACTOR",
            "ACTION",
            "RESOURCE",
            "OUTCOME",
            "SOURCE",
            "CLIENT",
        ]
        assert any("secret.reveal" in row or "secret.read" in row for row in table)
        assert any("microblog/production/DATABASE_URL@v1" in row for row in table)
        assert value not in out.stdout
        out = broker.cli("audit", "list", "--action", "request.unrouted", "--json")
        (evil,) = json.loads(out.stdout)["events"]
        assert evil["user_agent"] == "evil\x9b2Jagent"
        out = broker.cli("audit", "list", "--action", "request.unrouted")
        assert "\x9b" not in out.stdout and "/v1/nope\\x9b2J" in out.stdout

        out = broker.cli("audit", "fingerprint", input=value.encode())
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("fingerprint: hmac-sha256:")
        assert out.stdout.count("microblog/production/DATABASE_URL@v1") == 2  # written, then read
        assert value not in out.stdout + out.stderr

        export = tmp_path / "audit.csv"
        out = broker.cli("audit", "export", "--format", "csv", "--out", str(export))
        assert out.returncode == 0, out.stderr
        assert (tmp_path / "audit.csv.checkpoints.jsonl").exists()
        public = tmp_path / "public.pem"
        pems = list((tmp_path / "data" / "audit-checkpoints").glob("public-key-*.pem"))
        public.write_bytes(pems[0].read_bytes())
        out = broker.cli("audit", "verify", str(export), "--public-key", str(public))
        assert out.returncode == 0 and out.stdout.startswith("ok: "), out.stdout + out.stderr
        export.write_text(export.read_text().replace("production", "staging", 1))
        out = broker.cli("audit", "verify", str(export), "--public-key", str(public))
        assert out.returncode == 1 and "FAILED at seq" in out.stdout
        refused = broker.cli("audit", "export", "--out", str(export))
        assert refused.returncode == 1 and "refusing to overwrite" in refused.stderr
        assert all(value not in text for text in broker.outputs)
    finally:
        stop(broker)
    assert value not in broker.server_output()


def test_audit_list_by_name_answers_every_cli_route(tmp_path: Path) -> None:
    """Catalogue 60 with the real CLI: DATABASE_URL read by `secrets get` (and `--reveal`), `run`, `export`,
    `compile` and `kamal fetch`; `strongroom audit list --name DATABASE_URL` shows each, and no read of
    another key (the HTTP side, with deploy bundles and both databases, is test_key_answer.py)."""
    broker = start(tmp_path / "data", tmp_path / "home" / ".config", tmp_path / "broker.log")
    try:
        login(broker)
        where = ["-p", "microblog", "-e", "production"]
        assert broker.cli("projects", "create", "microblog").returncode == 0
        assert broker.cli("envs", "create", "-p", "microblog", "production").returncode == 0
        for name in ("DATABASE_URL", "OTHER"):
            out = broker.cli("secrets", "set", *where, name, input=random_value().encode())
            assert out.returncode == 0, out.stderr
        manifest = tmp_path / "strongroom.yml"
        manifest.write_text(
            "project: microblog\nservice: microblog\nimage: acme/microblog\nroles:\n  web:\n    hosts: [web1]\n"
            "env:\n  secret: [DATABASE_URL]\n"
        )
        for args in (
            ("secrets", "get", *where, "DATABASE_URL"),
            ("secrets", "get", *where, "DATABASE_URL", "--reveal"),
            ("run", *where, "--", "true"),
            ("export", *where, "--format", "dotenv", "--out", str(tmp_path / "app.env")),
            ("compile", *where, "-t", "dotenv", "-f", str(manifest), "-o", str(tmp_path / "out")),
            ("kamal", "fetch", "--dotenv", "3.2", *where, "DATABASE_URL"),
            ("secrets", "get", *where, "OTHER"),
            ("kamal", "fetch", "--dotenv", "3.2", *where, "OTHER"),
        ):
            out = broker.cli(*args)
            assert out.returncode == 0, (args, out.stderr)
        out = broker.cli("audit", "list", "--name", "DATABASE_URL", "--all", "--json")
        assert out.returncode == 0, out.stderr
        events = json.loads(out.stdout)["events"]
        assert sorted(e["action"] for e in events) == sorted(
            [
                "secret.write",
                "secret.read",
                "secret.reveal",
                "secret.resolve",  # run
                "secret.resolve",  # export
                "compile",
                "secret.read_many",  # kamal fetch
            ]
        ), [(e["action"], e.get("secret_name")) for e in events]
        table = broker.cli("audit", "list", "--name", "DATABASE_URL").stdout
        assert "compile" in table and "secret.read_many" in table and "OTHER" not in table
    finally:
        stop(broker)
