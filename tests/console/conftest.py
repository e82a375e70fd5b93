"""Fixtures of the console tests: replayed states, the console served on a free loopback port, and
headless Chromium driven through selenium."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from console_helpers import CHROMIUM_FLAGS, replayed_state


@pytest.fixture(scope="module")
def shared_state(tmp_path_factory) -> Path:
    """A replayed state the read-only tests of a module share (tests that change a state build their own)."""
    return replayed_state(tmp_path_factory.mktemp("console-state"))


@pytest.fixture
def state(tmp_path) -> Path:
    return replayed_state(tmp_path / "shop")


@pytest.fixture
def serve():
    """serve(console) -> base URL of the console on a free loopback port (uvicorn on a thread)."""
    from rulecrm.console.server import ThreadedServer

    servers = []

    def start(console) -> str:
        server = ThreadedServer(console)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


def _binaries() -> tuple[str, str]:
    chromium = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else None)
    if chromium is None or driver is None:
        pytest.fail("headless Chromium and chromedriver are needed (/usr/bin/chromium, /usr/bin/chromedriver): "
                    "install them with `make servers`", pytrace=False)
    return chromium, driver


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium with a fresh profile; English unless a test asks for another language."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = _binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.add_experimental_option("prefs", {"intl.accept_languages": "en-US,en"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def screenshots(tmp_path) -> Path:
    directory = tmp_path / "screenshots"
    directory.mkdir()
    return directory
