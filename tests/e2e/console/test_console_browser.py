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
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import need
from tests.e2e.conftest import BrokerProcess, start, stop

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
LEAKED = "postgres://app:CANARY-c0nsole-leak@db.internal/app"


def ok(out: object) -> None:
    assert getattr(out, "returncode", 1) == 0, out


@dataclass
class Lab:
    """The broker, the browser and where screenshots and downloads go."""

    broker: BrokerProcess
    driver: WebDriver
    shots: Path
    downloads: Path
    auditor_secret: str

    def open(self, path: str) -> None:
        self.driver.get(self.broker.url + path)

    def shot(self, name: str) -> None:
        self.driver.save_screenshot(str(self.shots / f"{name}.png"))

    def text(self, css: str) -> str:
        return str(self.driver.find_element(By.CSS_SELECTOR, css).text)

    def rows(self, css: str) -> list[list[str]]:
        found = self.driver.find_elements(By.CSS_SELECTOR, f"{css} tbody tr")
        return [[td.text for td in tr.find_elements(By.TAG_NAME, "td")] for tr in found]

    def fill(self, fields: dict[str, str]) -> None:
        for name, value in fields.items():
            box = self.driver.find_element(By.NAME, name)
            box.clear()
            box.send_keys(value)

    def submit(self, css: str) -> None:
        """Click a button that loads a new page, and wait until the old page is gone (no stale reads)."""
        old = self.driver.find_element(By.TAG_NAME, "html")
        self.driver.find_element(By.CSS_SELECTOR, css).click()
        WebDriverWait(self.driver, 30).until(expected_conditions.staleness_of(old))

    @property
    def html(self) -> str:
        return str(self.driver.page_source)


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


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        need(
            "Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
        )
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
    driver = None
    try:
        secret = _seed(broker)
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in (
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={root / 'profile'}",
            "--window-size=1280,900",
        ):
            options.add_argument(arg)
        options.add_experimental_option(
            "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
        )
        # The driver's path is given: Selenium Manager never runs, nothing is downloaded.
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        yield Lab(broker, driver, shots, downloads, secret)
    finally:
        if driver is not None:
            driver.quit()
        stop(broker)


def _downloaded(lab: Lab, pattern: str, seconds: float = 30) -> Path:
    """The downloaded file, once the browser has finished writing it (a condition, polled by Selenium)."""
    found: list[Path] = WebDriverWait(lab.driver, seconds).until(
        lambda _d: sorted(lab.downloads.glob(pattern))
    )
    return found[0]


def test_an_auditor_answers_journey_5_in_the_browser(lab: Lab, tmp_path: Path) -> None:
    # Not signed in: the sign-in page, and the session cookie cannot be read by page scripts.
    lab.open("/console/audit")
    assert lab.text("h1") == "Sign in"
    lab.shot("01-sign-in")
    lab.fill({"client_id": "auditor", "client_secret": lab.auditor_secret})
    lab.submit("#sign-in")
    assert lab.text("h1") == "Signed in as auditor", lab.text("main")
    assert lab.text("#name") == "auditor"
    assert lab.driver.execute_script("return document.cookie") == ""
    lab.shot("02-home")

    # "Who read DATABASE_URL in production in the last 90 days?"
    lab.open("/console/audit")
    lab.fill({"name": "DATABASE_URL", "environment": "production", "since": "90d"})
    lab.submit("#search")
    rows = lab.rows("#events")
    lab.shot("03-who-read-database-url")
    actions = [r[3] for r in rows]
    assert all(r[4].startswith("shop/production") for r in rows)
    # The write, `secrets get --reveal`, then `run` and `export` (both resolve the environment), newest first.
    assert actions == ["secret.resolve", "secret.resolve", "secret.reveal", "secret.write"], actions
    assert {r[2] for r in rows} == {"admin"} and {r[6] for r in rows} == {"ok"}
    assert all(r[5] == "127.0.0.1" for r in rows)

    # One event, in full.
    read_row = next(r for r in rows if r[3] == "secret.reveal")
    lab.open(f"/console/audit/events/{read_row[0]}")
    assert lab.text("h1") == f"Event {read_row[0]}"
    pairs = {
        tr.find_element(By.TAG_NAME, "th").text: tr.find_element(By.TAG_NAME, "td").text
        for tr in lab.driver.find_elements(By.CSS_SELECTOR, "#record tbody tr")
    }
    assert pairs["action"] == "secret.reveal" and pairs["secret_name"] == "DATABASE_URL"
    assert pairs["actor_name"] == "admin" and pairs["client_kind"] == "cli"
    assert lab.rows("#fingerprints")[0][3].startswith("hmac-sha256:")
    lab.shot("04-event")

    # "Was this leaked value ever served?"
    lab.open("/console/audit/fingerprint")
    assert lab.driver.find_element(By.ID, "value").get_attribute("autocomplete") == "off"
    lab.fill({"value": LEAKED})
    lab.submit("#look-up")
    assert lab.text("#verdict").startswith("Yes")
    served = lab.rows("#events")
    assert {r[3] for r in served} == {"secret.resolve", "secret.reveal", "secret.write"}
    assert lab.driver.find_element(By.ID, "value").get_attribute("value") == ""
    assert LEAKED not in lab.html
    lab.shot("05-leaked-value")

    # The chain, and an export verified offline with the real CLI.
    lab.open("/console/audit/chain")
    assert int(lab.text("#head-seq")) > 0
    assert int(lab.text("#checkpoint-seq")) >= 5
    assert lab.text("#signature") == "valid"
    assert re.fullmatch(r"\d+ min \d+ s", lab.text("#checkpoint-age")), lab.text("#checkpoint-age")
    public_key = tmp_path / "audit-public.pem"
    public_key.write_text(lab.text("#public-key") + "\n")
    lab.shot("06-chain")
    # The auditor's own record of when the export was made: checkpoints signed later may reach past it.
    asked_at = datetime.now(UTC).isoformat()
    lab.driver.find_element(By.CSS_SELECTOR, "#export").click()  # a download: the page stays
    exported = _downloaded(lab, "strongroom-audit-*.jsonl")
    verified = lab.broker.cli(
        "audit",
        "verify",
        str(exported),
        "--public-key",
        str(public_key),
        "--checkpoints",
        str(lab.broker.data_dir / "audit-checkpoints"),
        "--exported-at",
        asked_at,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert LEAKED not in exported.read_text()

    # An audit-only session sees no operator page.
    lab.open("/console/tokens")
    assert lab.text("h1") == "Not allowed"
    lab.shot("07-operator-page-refused")

    # Each look is on record under the CLI's actions, made by the console's browser.
    listing = lab.broker.cli("audit", "list", "--actor", "auditor", "--limit", "100", "--json")
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
    lab.open("/console/")
    lab.submit("#logout")
    assert lab.text("h1") == "Sign in"
    lab.open("/console/audit")
    assert lab.text("h1") == "Sign in"
    lab.shot("08-signed-out")
    for out in lab.broker.outputs[-4:]:
        assert LEAKED not in out
    assert LEAKED not in lab.broker.server_output()


def test_an_operator_reveals_a_value_and_revokes_a_token_in_the_browser(lab: Lab) -> None:
    made = lab.broker.cli("tokens", "create", "--scope", "shop:production:read", "--json")
    ok(made)
    ci = json.loads(made.stdout)
    admin_secret = (lab.broker.data_dir / "bootstrap-admin.secret").read_text().strip()
    lab.open("/console/login")
    lab.fill({"client_id": "admin", "client_secret": admin_secret})
    lab.submit("#sign-in")
    assert lab.text("#name") == "admin"

    # The project's environments as a tree, then the environment's secrets with their values masked.
    lab.open("/console/projects")
    assert [r[0] for r in lab.rows("#projects")] == ["shop"]
    lab.submit("#projects a")
    assert lab.text("#tree") == "production"
    lab.shot("09-environments")
    lab.submit("#tree a")
    (row,) = lab.rows("#secrets")
    assert row[:5] == ["DATABASE_URL", "••••••••", "1", "database", "yes"]
    assert LEAKED not in lab.html
    lab.shot("10-secrets-masked")

    # Revealing is an explicit, audited action.
    lab.submit("#reveal-DATABASE_URL")
    assert lab.text("#value") == LEAKED
    lab.shot("11-revealed")
    listing = lab.broker.cli("audit", "list", "--action", "secret.reveal", "--json")
    ok(listing)
    reveals = json.loads(listing.stdout)["events"]
    assert (reveals[0]["route"], reveals[0]["client_kind"], reveals[0]["actor_name"]) == (
        "/console/projects/shop/environments/production/secrets/DATABASE_URL/reveal",
        "web",
        "admin",
    )

    # Identities, with what they may do.
    lab.open("/console/identities")
    identities = {r[0]: r for r in lab.rows("#identities")}
    assert identities["auditor"][1:4] == ["auditor", "user", "*:*:audit"]
    assert identities["admin"][6] == "active"
    lab.shot("12-identities")

    # Revoke the CI token by its accessor; it stops working at once.
    lab.open("/console/tokens")
    accessors = [r[0] for r in lab.rows("#tokens")]
    assert ci["accessor"] in accessors
    lab.shot("13-tokens")
    lab.submit(f"#tokens tr[data-accessor='{ci['accessor']}'] button")
    assert ci["accessor"] not in [r[0] for r in lab.rows("#tokens")]
    conn = http.client.HTTPConnection("127.0.0.1", lab.broker.port, timeout=10)
    conn.request("GET", "/v1/auth/token/self", headers={"Authorization": f"Bearer {ci['token']}"})
    assert conn.getresponse().status == 401
    lab.submit("#logout")
    assert lab.text("h1") == "Sign in"
