"""The live view in a real browser: Playwright drives Chromium whose fake camera and microphone play
a test clip (a face talking, then a stretch of blank frames, then the face again, looped). The
display must update, the video weight must drop to 0 within two updates of the face leaving the
window's newest frames, and come back. Screenshots are kept in $ARTIFACTS_DIR (default: artifacts/)."""
from __future__ import annotations

import os
import shutil
import time
import wave
from pathlib import Path

import cv2
import demo_support
import numpy as np
import pytest
from demo_support import TALK, artifacts_dir

predictor = demo_support.predictor  # fixture
app_url = demo_support.app_url  # fixture: the app at its defaults

CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (uses Debian's chromium)")
if not os.path.exists(CHROMIUM):
    pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)", allow_module_level=True)

FPS = 5  # of the fake camera file
STRETCHES = (("face", 6.0), ("blank", 6.0), ("face", 6.0))  # seconds; the file loops


def write_fake_devices(folder: Path) -> tuple[Path, Path]:
    """TALK as Chromium's fake camera (.y4m, the face looped through the face stretches, grey frames in
    the blank one) and fake microphone (.wav, TALK's speech looped over the whole length)."""
    from armer.extractors import load_media

    media = load_media(TALK, fps=FPS, max_frames=10_000)
    grey = np.full_like(media.frames[0], 128)
    frames, shown = [], 0
    for kind, seconds in STRETCHES:
        for _ in range(int(seconds * FPS)):
            frames.append(media.frames[shown % len(media.frames)] if kind == "face" else grey)
            shown += kind == "face"
    h, w = frames[0].shape[:2]
    video = folder / "camera.y4m"
    with open(video, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{FPS}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            f.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes())
    n = int(len(frames) / FPS * 16_000)
    speech = np.tile(media.audio, n // media.audio.size + 1)[:n]
    audio = folder / "microphone.wav"
    with wave.open(str(audio), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(16_000)
        f.writeframes((np.clip(speech, -1, 1) * 32767).astype(np.int16).tobytes())
    return video, audio


def snapshot(page) -> dict | None:
    """The live status on the page: update number, frames and faces in the window, per-modality state and weight."""
    return page.evaluate("""() => {
        const s = document.querySelector('#live-status');
        if (!s || !s.dataset.update) return null;
        const m = {};
        for (const li of s.querySelectorAll('li')) m[li.dataset.modality] = [li.dataset.state, +li.dataset.weight];
        return {update: +s.dataset.update, frames: +s.dataset.frames, faces: +s.dataset.faces, modalities: m};
    }""")


def start_microphone(page) -> None:
    """Record with the microphone until the server hears it: a recording that never reaches the server
    (now and then the first one after the page loads) is stopped and started again, as a person would."""
    microphone = page.locator("#live-microphone")
    heard = ("() => { const li = document.querySelector('#live-status li[data-modality=\"audio\"]');"
             " return li && li.dataset.state !== 'no microphone stream'; }")
    for _ in range(3):
        microphone.get_by_role("button", name="Record").click()
        try:
            microphone.get_by_role("button", name="Stop").wait_for(timeout=10_000)
            page.wait_for_function(heard, timeout=20_000)
            return
        except sync_api.TimeoutError:
            if microphone.get_by_role("button", name="Stop").count():
                microphone.get_by_role("button", name="Stop").click()
    pytest.fail("the server never heard the microphone after three recordings")


def test_live_view_follows_a_face_that_leaves_and_comes_back(app_url, tmp_path):
    video, audio = write_fake_devices(tmp_path)
    out = artifacts_dir()
    args = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={video}",
            f"--use-file-for-fake-audio-capture={audio}"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        context = browser.new_context(permissions=["camera", "microphone"], viewport={"width": 1400, "height": 1500})
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(app_url)
        page.get_by_role("tab", name="Live").click()
        page.locator("#live-camera").get_by_text("Click to Access Webcam").click()
        page.locator("#live-camera").get_by_role("button", name="capture photo").click()
        start_microphone(page)

        seen: list[dict] = []
        shots = {}
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            now = snapshot(page)
            if now and now["modalities"]["audio"][0] != "live" and not seen:
                now = None  # from the first update with the microphone's audio on: it goes on without the face
            if now and (not seen or now["update"] != seen[-1]["update"]):
                seen.append(now)
                weight = now["modalities"]["video"][1]
                phase = ("face" if not shots else "no_face" if len(shots) == 1 else "back")
                if (phase == "face" and weight > 0) or (phase == "no_face" and weight == 0) or \
                        (phase == "back" and weight > 0):
                    shots[phase] = out / f"live_{len(shots) + 1}_{phase}.png"
                    page.screenshot(path=str(shots[phase]), full_page=True)
                if len(shots) == 3:
                    break
            time.sleep(0.2)
        browser.close()

    trace = [(s["update"], s["frames"], s["faces"], *s["modalities"]["video"]) for s in seen]
    assert len(seen) >= 3, f"the live display updated {len(seen)} times in 150 s: {trace}"
    assert len(shots) == 3, f"the video weight did not go face -> 0 -> back: {trace}"
    # the face leaves: from the first update whose window holds a blank frame, within two updates
    with_face = next(i for i, s in enumerate(seen) if s["modalities"]["video"][1] > 0)
    gone = next(i for i, s in enumerate(seen) if i > with_face and s["modalities"]["video"][1] == 0)
    # the first update whose window holds a blank frame: the one after the last window of faces only
    blank = 1 + max(i for i, s in enumerate(seen[:gone]) if 0 < s["frames"] == s["faces"])
    assert gone - blank <= 1, f"video weight 0 only {gone - blank + 1} updates after the face left: {trace}"
    assert seen[gone]["modalities"]["video"][0] == "no face in view", trace
    assert seen[gone]["modalities"]["audio"][1] > 0, f"audio must go on without the face: {seen[gone]}"
    back = next(i for i, s in enumerate(seen) if i > gone and s["modalities"]["video"][1] > 0)
    assert seen[back]["modalities"]["video"][0] == "live", trace


def test_live_view_without_camera_access_goes_on_with_the_microphone(app_url, tmp_path):
    """Camera access denied (only the microphone is granted): the page says there is no camera stream,
    the audio is fused, nothing crashes."""
    _, audio = write_fake_devices(tmp_path)
    args = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={audio}"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        context = browser.new_context(permissions=["microphone"], viewport={"width": 1400, "height": 1500})
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(app_url)
        page.get_by_role("tab", name="Live").click()
        page.locator("#live-camera").get_by_text("Click to Access Webcam").click()
        start_microphone(page)
        page.wait_for_function("() => document.querySelector('#live-status li[data-modality=\"audio\"]')"
                               "?.dataset.state === 'live'", timeout=90_000)
        now = snapshot(page)
        page.screenshot(path=str(artifacts_dir() / "live_4_camera_denied.png"), full_page=True)
        browser.close()
    assert now["modalities"]["video"] == ["no camera stream", 0.0]
    assert now["modalities"]["audio"][1] > 0
