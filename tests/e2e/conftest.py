"""Real-browser tests: Debian's headless Chromium driven through dash[testing] (selenium)."""

from __future__ import annotations

import os
import shutil

import pytest
from selenium.webdriver.chrome.options import Options

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
os.environ.setdefault("DASH_TEST_CHROMEPATH", CHROMIUM)


def pytest_setup_options():
    """Chrome options for dash[testing]: Debian's Chromium, headless, no background traffic."""
    if not (os.path.exists(CHROMIUM) and shutil.which("chromedriver")):
        pytest.fail(f"Chromium ({CHROMIUM}) and chromedriver are needed: run `make test`, which "
                    "installs Debian's chromium and chromium-driver.")
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-quic",
                "--window-size=1600,1000", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    return options


@pytest.fixture
def app_factory(tmp_path):
    """Build an app on a fresh state folder (and data folder)."""
    from app import create_app
    from pipeline.config import Config

    def make(**overrides):
        cfg = Config(state_dir=tmp_path / "state", data_dir=tmp_path / "data", **overrides)
        (tmp_path / "data").mkdir(exist_ok=True)
        return create_app(cfg)

    return make
