"""Debian's chromium, headless, driven by Debian's chromedriver through Selenium: the console's browser tests'
one way to start a browser and read what a person sees (element text, table rows), with screenshots.

Used by tests/e2e/console/test_console_browser.py and by the drift page's proof, which runs with the deploy
lab (tests/e2e/deploy/test_console_drift.py). The driver's path is given, so Selenium Manager never runs
and nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import need


def _gone(old: WebElement) -> Callable[[WebDriver], bool]:
    """Whether the page holding `old` has been replaced (selenium's staleness_of, plus chromedriver's
    other answer for the same fact: asked about an element while the new document replaces the old one,
    it may report the node as not belonging to the document instead of stale)."""

    def check(_driver: WebDriver) -> bool:
        try:
            old.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            if "does not belong to the document" in str(exc):
                return True
            raise
        return False

    return check


def click_and_leave(driver: WebDriver, css: str) -> None:
    """Click what matches `css` (it loads a new page) and wait until the old page is gone."""
    old = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.CSS_SELECTOR, css).click()
    WebDriverWait(driver, 30).until(_gone(old))


CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def need_chromium() -> None:
    """Skip (fail under CI=true) unless Debian's chromium and its driver are installed."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        need(
            "Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
        )


@contextmanager
def chromium(root: Path, downloads: Path | None = None) -> Iterator[WebDriver]:
    """A headless chromium with its profile under `root` (downloads, when given, land in `downloads`)."""
    need_chromium()
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
    if downloads is not None:
        options.add_experimental_option(
            "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
        )
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@dataclass
class Browser:
    """A browser pointed at one broker, and where its screenshots go."""

    base_url: str
    driver: WebDriver
    shots: Path

    def open(self, path: str) -> None:
        """Load a page of the broker."""
        self.driver.get(self.base_url + path)

    def shot(self, name: str) -> None:
        """Save a screenshot of the page as `name`.png."""
        self.driver.save_screenshot(str(self.shots / f"{name}.png"))

    def text(self, css: str) -> str:
        """The visible text of the first element matching `css`."""
        return str(self.driver.find_element(By.CSS_SELECTOR, css).text)

    def rows(self, css: str) -> list[list[str]]:
        """The visible text of each cell of each body row of the table matching `css`."""
        found = self.driver.find_elements(By.CSS_SELECTOR, f"{css} tbody tr")
        return [[td.text for td in tr.find_elements(By.TAG_NAME, "td")] for tr in found]

    def fill(self, fields: dict[str, str]) -> None:
        """Type into form fields by name (clearing what they held)."""
        for name, value in fields.items():
            box = self.driver.find_element(By.NAME, name)
            box.clear()
            box.send_keys(value)

    def submit(self, css: str) -> None:
        """Click a button that loads a new page, and wait until the old page is gone (no stale reads)."""
        click_and_leave(self.driver, css)

    def sign_in(self, client_id: str, client_secret: str) -> None:
        """Sign in through the console's form."""
        self.open("/console/login")
        self.fill({"client_id": client_id, "client_secret": client_secret})
        self.submit("#sign-in")

    @property
    def html(self) -> str:
        """The page's HTML as the browser holds it."""
        return str(self.driver.page_source)
