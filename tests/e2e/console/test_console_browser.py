"""Journey 5 in a real browser: Debian's chromium, headless, driven by Debian's chromedriver through Selenium,
against a real `strongroom-server serve` process fed by the real CLI. One browser for the module.

The assertions read what a person sees (element text, table rows); a screenshot of each page is saved
under the module's temporary directory (`screenshots/`).
"""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e.conftest import BrokerProcess, start, stop
from tests.e2e.console.browser import Browser, chromium, need_chromium

pytestmark = pytest.mark.e2e

LEAKED = "postgres://app:CANARY-c0nsole-leak@db.internal/app"


def ok(out: object) -> None:
    assert getattr(out, "returncode", 1) == 0, out


@dataclass
class Site(Browser):
    """The browser on the module's broker, where downloads go and the auditor's client secret."""

    broker: BrokerProcess
    downloads: Path
    auditor_secret: str


def _seed(b: BrokerProcess) -> str:
    """An admin, project shop (production), DATABASE_URL read by `secrets get`, `run` and `export`; an
    auditor identity (audit on everything) whose client secret is returned."""
    ok(
        b.cli(
            "login",
            "--url",
            b.url,
            "--client-id",
            "admin",
            "--secret-file",
            str(b.data_dir / "bootstrap-admin.secret"),
        )
    )
    ok(b.cli("projects", "create", "shop"))
    ok(b.cli("envs", "create", "-p", "shop", "production"))
    ok(b.cli("secrets", "set", "-p", "shop", "-e", "production", "DATABASE_URL", input=LEAKED.encode()))
    ok(b.cli("secrets", "get", "-p", "shop", "-e", "production", "DATABASE_URL", "--reveal"))
    ok(b.cli("run", "-p", "shop", "-e", "production", "--", "true"))
    ok(
        b.cli(
            "export",
            "-p",
            "shop",
            "-e",
            "production",
            "--format",
            "dotenv",
            "--out",
            str(b.data_dir / "x.env"),
        )
    )
    made = b.cli(
        "identities", "create", "auditor", "--client-id", "auditor", "--kind", "user", "--scope", "*:*:audit"
    )
    ok(made)
    return made.stdout.strip()


# Named `site`, not `lab`: tests/conftest.py groups every test using a fixture named `lab` with the deploy
# lab's worker, and this module needs no deploy lab.
@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    need_chromium()
    root = tmp_path_factory.mktemp("console")
    shots, downloads = root / "screenshots", root / "downloads"
    shots.mkdir()
    downloads.mkdir()
    # A checkpoint every 5 events, so the chain page has a signed one to show.
    broker = start(
        root / "data",
        root / "home" / ".config",
        root / "broker.log",
        server_env={"STRONGROOM_AUDIT_CHECKPOINT_EVERY": "5"},
    )
    try:
        secret = _seed(broker)
        with chromium(root, downloads) as driver:
            yield Site(broker.url, driver, shots, broker, downloads, secret)
    finally:
        stop(broker)


def _downloaded(site: Site, pattern: str, seconds: float = 30) -> Path:
    """The downloaded file, once the browser has finished writing it (a condition, polled by Selenium)."""
    found: list[Path] = WebDriverWait(site.driver, seconds).until(
        lambda _d: sorted(site.downloads.glob(pattern))
    )
    return found[0]


def test_an_auditor_answers_journey_5_in_the_browser(site: Site, tmp_path: Path) -> None:
    # Not signed in: the sign-in page, and the session cookie cannot be read by page scripts.
    site.open("/console/audit")
    assert site.text("h1") == "Sign in"
    site.shot("01-sign-in")
    site.fill({"client_id": "auditor", "client_secret": site.auditor_secret})
    site.submit("#sign-in")
    assert site.text("h1") == "Signed in as auditor", site.text("main")
    assert site.text("#name") == "auditor"
    assert site.driver.execute_script("return document.cookie") == ""
    site.shot("02-home")

    # "Who read DATABASE_URL in production in the last 90 days?"
    site.open("/console/audit")
    site.fill({"name": "DATABASE_URL", "environment": "production", "since": "90d"})
    site.submit("#search")
    rows = site.rows("#events")
    site.shot("03-who-read-database-url")
    actions = [r[3] for r in rows]
    assert all(r[4].startswith("shop/production") for r in rows)
    # The write, `secrets get --reveal`, then `run` and `export` (both resolve the environment), newest first.
    assert actions == ["secret.resolve", "secret.resolve", "secret.reveal", "secret.write"], actions
    assert {r[2] for r in rows} == {"admin"} and {r[6] for r in rows} == {"ok"}
    assert all(r[5] == "127.0.0.1" for r in rows)

    # One event, in full.
    read_row = next(r for r in rows if r[3] == "secret.reveal")
    site.open(f"/console/audit/events/{read_row[0]}")
    assert site.text("h1") == f"Event {read_row[0]}"
    pairs = {
        tr.find_element(By.TAG_NAME, "th").text: tr.find_element(By.TAG_NAME, "td").text
        for tr in site.driver.find_elements(By.CSS_SELECTOR, "#record tbody tr")
    }
    assert pairs["action"] == "secret.reveal" and pairs["secret_name"] == "DATABASE_URL"
    assert pairs["actor_name"] == "admin" and pairs["client_kind"] == "cli"
    assert site.rows("#fingerprints")[0][3].startswith("hmac-sha256:")
    site.shot("04-event")

    # "Was this leaked value ever served?"
    site.open("/console/audit/fingerprint")
    assert site.driver.find_element(By.ID, "value").get_attribute("autocomplete") == "off"
    site.fill({"value": LEAKED})
    site.submit("#look-up")
    assert site.text("#verdict").startswith("Yes")
    served = site.rows("#events")
    assert {r[3] for r in served} == {"secret.resolve", "secret.reveal", "secret.write"}
    assert site.driver.find_element(By.ID, "value").get_attribute("value") == ""
    assert LEAKED not in site.html
    site.shot("05-leaked-value")

    # The chain, and an export verified offline with the real CLI.
    site.open("/console/audit/chain")
    assert int(site.text("#head-seq")) > 0
    assert int(site.text("#checkpoint-seq")) >= 5
    assert site.text("#signature") == "valid"
    assert re.fullmatch(r"\d+ min \d+ s", site.text("#checkpoint-age")), site.text("#checkpoint-age")
    public_key = tmp_path / "audit-public.pem"
    public_key.write_text(site.text("#public-key") + "\n")
    site.shot("06-chain")
    # The auditor's own record of when the export was made: checkpoints signed later may reach past it.
    asked_at = datetime.now(UTC).isoformat()
    site.driver.find_element(By.CSS_SELECTOR, "#export").click()  # a download: the page stays
    exported = _downloaded(site, "strongroom-audit-*.jsonl")
    verified = site.broker.cli(
        "audit",
        "verify",
        str(exported),
        "--public-key",
        str(public_key),
        "--checkpoints",
        str(site.broker.data_dir / "audit-checkpoints"),
        "--exported-at",
        asked_at,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert LEAKED not in exported.read_text()

    # An audit-only session sees no operator page.
    site.open("/console/tokens")
    assert site.text("h1") == "Not allowed"
    site.shot("07-operator-page-refused")

    # Each look is on record under the CLI's actions, made by the console's browser.
    listing = site.broker.cli("audit", "list", "--actor", "auditor", "--limit", "100", "--json")
    ok(listing)
    assert LEAKED not in listing.stdout
    looks = {(e["action"], e["route"], e["client_kind"]) for e in json.loads(listing.stdout)["events"]}
    for action, route in (
        ("auth.token", "/console/login"),
        ("audit.list", "/console/audit"),
        ("audit.list", f"/console/audit/events/{read_row[0]}"),
        ("audit.fingerprint", "/console/audit/fingerprint"),
        ("audit.status", "/console/audit/chain"),
        ("audit.export", "/console/audit/export"),
        ("token.list", "/console/tokens"),
    ):
        assert (action, route, "web") in looks, (action, route, sorted(looks))

    # Signing out revokes the session: the console asks to sign in again.
    site.open("/console/")
    site.submit("#logout")
    assert site.text("h1") == "Sign in"
    site.open("/console/audit")
    assert site.text("h1") == "Sign in"
    site.shot("08-signed-out")
    for out in site.broker.outputs[-4:]:
        assert LEAKED not in out
    assert LEAKED not in site.broker.server_output()


def test_an_operator_reveals_a_value_and_revokes_a_token_in_the_browser(site: Site) -> None:
    made = site.broker.cli("tokens", "create", "--scope", "shop:production:read", "--json")
    ok(made)
    ci = json.loads(made.stdout)
    admin_secret = (site.broker.data_dir / "bootstrap-admin.secret").read_text().strip()
    site.open("/console/login")
    site.fill({"client_id": "admin", "client_secret": admin_secret})
    site.submit("#sign-in")
    assert site.text("#name") == "admin"

    # The project's environments as a tree, then the environment's secrets with their values masked.
    site.open("/console/projects")
    assert [r[0] for r in site.rows("#projects")] == ["shop"]
    site.submit("#projects a")
    assert site.text("#tree") == "production"
    site.shot("09-environments")
    site.submit("#tree a")
    (row,) = site.rows("#secrets")
    assert row[:5] == ["DATABASE_URL", "••••••••", "1", "database", "yes"]
    assert LEAKED not in site.html
    site.shot("10-secrets-masked")

    # Revealing is an explicit, audited action.
    site.submit("#reveal-DATABASE_URL")
    assert site.text("#value") == LEAKED
    site.shot("11-revealed")
    listing = site.broker.cli("audit", "list", "--action", "secret.reveal", "--json")
    ok(listing)
    reveals = json.loads(listing.stdout)["events"]
    assert (reveals[0]["route"], reveals[0]["client_kind"], reveals[0]["actor_name"]) == (
        "/console/projects/shop/environments/production/secrets/DATABASE_URL/reveal",
        "web",
        "admin",
    )

    # Identities, with what they may do.
    site.open("/console/identities")
    identities = {r[0]: r for r in site.rows("#identities")}
    assert identities["auditor"][1:4] == ["auditor", "user", "*:*:audit"]
    assert identities["admin"][6] == "active"
    site.shot("12-identities")

    # Revoke the CI token by its accessor; it stops working at once.
    site.open("/console/tokens")
    accessors = [r[0] for r in site.rows("#tokens")]
    assert ci["accessor"] in accessors
    site.shot("13-tokens")
    site.submit(f"#tokens tr[data-accessor='{ci['accessor']}'] button")
    assert ci["accessor"] not in [r[0] for r in site.rows("#tokens")]
    conn = http.client.HTTPConnection("127.0.0.1", site.broker.port, timeout=10)
    conn.request("GET", "/v1/auth/token/self", headers={"Authorization": f"Bearer {ci['token']}"})
    assert conn.getresponse().status == 401
    site.submit("#logout")
    assert site.text("h1") == "Sign in"
