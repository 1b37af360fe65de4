"""The demo in a real browser (Playwright driving Debian's Chromium): upload a clip, read the top
emotion, untick a modality, see its weight go to zero and the others change. Screenshots are kept
in $ARTIFACTS_DIR (default: artifacts/, gitignored)."""
from __future__ import annotations

import os
import shutil

import demo_support
import pytest
from demo_support import TALK, artifacts_dir

app_url = demo_support.app_url  # fixture
predictor = demo_support.predictor  # fixture

CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (uses Debian's chromium)")
if not os.path.exists(CHROMIUM):
    pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)", allow_module_level=True)

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def weights(page) -> dict[str, float]:
    rows = page.locator("#weights-chart .row.weight")
    return {rows.nth(i).get_attribute("data-modality"): float(rows.nth(i).get_attribute("data-weight"))
            for i in range(rows.count())}


@pytest.fixture(scope="module")
def page(app_url):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.set_default_timeout(90_000)
        page.goto(app_url)
        yield page
        browser.close()


def test_upload_read_emotion_untick_and_watch_the_weights(page, predictor):
    out = artifacts_dir()
    expected = predictor.predict(video=TALK)
    page.wait_for_selector("#video-input")
    assert "fer2013-cnn" in page.locator("#header").inner_text()
    page.locator("#video-input input[type=file]").set_input_files(str(TALK))
    page.wait_for_selector("#video-input video", state="attached")
    page.locator("#analyse").click()
    page.wait_for_selector('#weights-chart .row.weight[data-modality="audio"]')
    top = page.locator("#emotion [data-testid='label-output-value']").inner_text().strip()
    page.screenshot(path=str(out / "demo_1_result.png"), full_page=True)
    assert top == expected.top
    before = weights(page)
    assert before == pytest.approx(expected.weights, abs=1e-5) and all(w > 0 for w in before.values())

    page.locator("#use-audio input[type=checkbox]").uncheck()
    page.wait_for_function(
        "() => document.querySelector('#weights-chart .row.weight[data-modality=\"audio\"]')"
        "?.getAttribute('data-weight') === '0.000000'")
    after = weights(page)
    page.screenshot(path=str(out / "demo_2_audio_off.png"), full_page=True)
    assert after["audio"] == 0.0
    assert after["text"] != pytest.approx(before["text"], abs=1e-4)
    assert after["video"] != pytest.approx(before["video"], abs=1e-4)
    assert after["text"] + after["video"] == pytest.approx(1.0, abs=1e-5)
    previous = page.locator('#weights-chart .row.weight[data-modality="text"]').get_attribute("data-previous-weight")
    assert float(previous) == pytest.approx(before["text"], abs=1e-5)  # before/after is visible
    assert "audio switched off" in page.locator("#status").inner_text()


def test_bad_input_shows_a_message_in_the_page(page, tmp_path):
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00\x01not a video" * 200)
    page.locator("#video-input button[aria-label='Clear']").first.click() if page.locator(
        "#video-input button[aria-label='Clear']").count() else None
    page.locator("#video-input input[type=file]").set_input_files(str(bad))
    page.locator("#analyse").click()
    toast = page.get_by_text("cannot be decoded", exact=False).first
    toast.wait_for()
    page.screenshot(path=str(artifacts_dir() / "demo_3_bad_input.png"), full_page=True)
    assert "corrupt.mp4" in toast.inner_text()
