"""Sign-in and sign-out in Chromium, as a person on a shared lab server does them."""

from __future__ import annotations

import pytest

from callbacks import auth
from tests.e2e.helpers import until

pytestmark = pytest.mark.browser


def test_sign_in_then_sign_out_with_the_pages_own_button(dash_duo, app_factory, tmp_path):
    users = tmp_path / "users"
    auth.add_user(users, "alice", "alice-password")
    # the page is the sign-in form first: dash_duo's wait for the app is not for it
    dash_duo.start_server(app_factory(users_file=users, secret_key="k" * 32), navigate=False)
    driver = dash_duo.driver
    driver.get(dash_duo.server.url + "/")
    # the app asks who it is first
    until(lambda: "/login" in driver.current_url, timeout=30, what="the sign-in page")
    driver.find_element("css selector", "#user").send_keys("alice")
    driver.find_element("css selector", "#password").send_keys("alice-password")
    driver.find_element("css selector", "form button[type=submit]").click()
    dash_duo.wait_for_contains_text(".signed-in", "Signed in as alice", timeout=60)
    dash_duo.wait_for_contains_text("#segmentation-summary", "labelled regions", timeout=120)
    # the sign-out form carries the page's token: one click signs out, no confirmation
    token = driver.find_element("css selector", "#sign-out-token")
    assert token.get_attribute("type") == "hidden" and token.get_attribute("value")
    driver.find_element("css selector", ".signed-in .sign-out").click()
    until(lambda: "/login" in driver.current_url, timeout=30, what="back to the sign-in page")
    assert "Sign in to the lab's server." in driver.find_element("css selector", "body").text
    # signed out for good: the app asks again
    driver.get(dash_duo.server.url + "/")
    until(lambda: "/login" in driver.current_url, timeout=30, what="the sign-in page again")
