"""The batclient page in real headless Chromium: fill the form, submit, read the bars.

Runs against the real server (gunicorn) under an Ingress-style path prefix, so the
page's relative links are exercised the way a cluster user meets them. Leaves a
screenshot in ``artifacts/batclient.png``.
"""

from pathlib import Path

import pytest
from _server_process import running_server
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
PREFIX = "/models/titanic"


@pytest.fixture(scope="module")
def server(trained_bundles, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("batclient")
    with running_server(trained_bundles.titanic, workdir, "--root-path", PREFIX) as running:
        yield running


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    for program in (CHROMIUM, CHROMEDRIVER):
        assert program.exists(), f"{program} missing: apt-get install -y chromium chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--window-size=1100,760",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _wait(driver, condition, timeout=30):
    return WebDriverWait(driver, timeout).until(condition)


def _fill(driver, name, value):
    field = driver.find_element(By.ID, f"input-{name}")
    if field.tag_name == "select":
        Select(field).select_by_visible_text(value)
    else:
        field.clear()
        field.send_keys(str(value))


def test_fill_the_form_submit_and_see_labelled_probability_bars(server, browser):
    browser.get(server.url + PREFIX)  # no trailing slash: the server redirects to the page
    _wait(browser, lambda d: d.find_element(By.ID, "score").is_enabled())
    assert browser.find_element(By.ID, "model-name").text == "titanic"
    labels = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".field label")]
    assert labels == ["pclass", "sex", "age", "sibsp", "parch", "fare", "embarked"]

    for name, value in {
        "pclass": "1st",
        "sex": "female",
        "age": 29,
        "sibsp": 0,
        "parch": 0,
        "fare": 80,
        "embarked": "Cherbourg",
    }.items():
        _fill(browser, name, value)
    browser.find_element(By.ID, "score").click()

    bars = _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#results .result"))
    flags = [bar.find_element(By.CLASS_NAME, "flag").text for bar in bars]
    assert sorted(flags) == ["died", "survived"]
    assert flags[0] == "survived"  # a first-class woman: the top bar
    percents = [float(bar.find_element(By.CLASS_NAME, "percent").text.rstrip("%")) for bar in bars]
    assert sum(percents) == pytest.approx(100, abs=0.2) and percents[0] > 70
    top_bar = browser.find_element(By.CSS_SELECTOR, ".result.top .bar")
    track = browser.find_element(By.CSS_SELECTOR, ".result.top .track")
    # The bar grows to its probability (a short CSS transition) before the screenshot.
    _wait(browser, lambda _: top_bar.size["width"] >= track.size["width"] * percents[0] / 100 - 2)

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "batclient.png"
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000


def test_a_bad_value_is_shown_next_to_its_field(server, browser):
    browser.get(server.url + PREFIX + "/")
    _wait(browser, lambda d: d.find_element(By.ID, "score").is_enabled())
    _fill(browser, "age", 200)
    browser.find_element(By.ID, "score").click()
    error = _wait(browser, lambda d: d.find_element(By.ID, "error").text)
    assert "age" in error and "0.42 to 80" in error
    assert "invalid" in browser.find_element(By.ID, "field-age").get_attribute("class")


def test_swagger_ui_renders_the_spec_from_local_assets(server, browser):
    browser.get(server.url + PREFIX + "/api/docs")
    title = _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".swagger-ui .title"))
    assert "titanic model" in title[0].text
    operations = browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
    assert "/api/predict" in [op.text.replace("\u200b", "") for op in operations]
    requested = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert requested and all(url.startswith(server.url) for url in requested)
