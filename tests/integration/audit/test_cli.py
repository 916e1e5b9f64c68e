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
        conn = http.client.HTTPConnection("127.0.0.1", broker.port, timeout=10)
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
