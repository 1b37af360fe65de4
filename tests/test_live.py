"""armer.predict.live: windows of a live stream featurized and fused as clips are, with missing
streams, skipped windows, shared per-frame work, the viewer registry and ``--live`` in the CLI."""
from __future__ import annotations

import importlib
import json
import math
import threading
import time

import demo_support
import numpy as np
import pytest
from armer.extractors.base import SAMPLE_RATE
from armer.extractors.faces import crop_faces
from demo_support import TALK

import armer.predict.live as live_module
from armer.constants import MODALITIES
from armer.predict.live import LIVE, LiveConfig, LiveStream, LiveStreams, replay
from armer.predict.predictor import InferenceError

predictor = demo_support.predictor  # fixture
featurize_module = importlib.import_module("armer.extractors.featurize")  # the package's `featurize` is the function

TEXT = "What a lovely day."
GREY = np.full((288, 288, 3), 128, np.uint8)  # no face in it
NO_AUDIO = {"audio": False}  # the Whisper encoder costs ~1 s per window: off where audio is not the point


@pytest.fixture(scope="module")
def talk():
    """TALK decoded once at 2 fps: (audio, [(time, frame), ...])."""
    demo_support.require_media_tools()
    from armer.extractors import load_media

    media = load_media(TALK, fps=2.0, max_frames=10_000)
    assert media.audio is not None and len(media.frames) >= 8
    return media.audio, list(zip(media.frame_times, media.frames))


def face_frame(talk, t: float) -> np.ndarray:
    """A frame of TALK showing the face, for any time (the clip is cycled)."""
    frames = talk[1]
    return frames[round(t * 2) % len(frames)][1]


def feed(stream: LiveStream, talk, upto: float, start: float = 0.0, audio: bool = True,
         frame=face_frame) -> None:
    """TALK's audio in 1 s chunks and a frame every 0.5 s, for the times in (start, upto]."""
    t = start
    while t < upto - 1e-9:
        t = round(t + 0.5, 3)
        if audio and t == int(t):
            stream.add_audio(talk[0][int((t - 1) * SAMPLE_RATE):int(t * SAMPLE_RATE)], t)
        stream.add_frame(frame(talk, t), t)


# --- the same features as a clip -------------------------------------------------------------------

def test_a_window_fuses_the_features_its_samples_and_face_crops_give(predictor, talk):
    """A window's result is the ensemble on its last `window` s of audio, the typed text and its face crops only."""
    audio, frames = talk
    grey_at = 2.5  # one frame without a face inside the window (not among the newest)
    stream = LiveStream(predictor, LiveConfig(window=3.0, interval=1.0))
    for t in (0.8, 1.6, 2.4, 3.2, 4.0):  # chunks not aligned with the window: the buffer holds 3.2 s
        stream.add_audio(audio[round((t - 0.8) * SAMPLE_RATE):round(t * SAMPLE_RATE)], t)
    for ft, frame in frames:
        if ft <= 4.0:
            stream.add_frame(GREY if ft == grey_at else frame, ft)
    u = stream.update(4.0, transcript=f"  {TEXT} ", transcribe=False)

    in_window = [(GREY if ft == grey_at else f) for ft, f in frames if 1.0 < ft <= 4.0]
    crops = []
    for frame in in_window:
        found, share = crop_faces([frame])
        if share > 0:
            crops.append(found[0])
    assert len(crops) == len(in_window) - 1 == 5
    ext = predictor.extractors
    feats = {"audio": ext["audio"].extract(audio[1 * SAMPLE_RATE:4 * SAMPLE_RATE]), "text": ext["text"].extract(TEXT),
             "video": ext["video"].extract(crops)}
    direct = predictor.fuse(feats)

    assert u.states == {m: LIVE for m in MODALITIES} and u.message == ""
    assert (u.frames, u.faces) == (6, 5) and u.window == (1.0, 4.0)
    p = u.prediction
    assert list(p.probabilities) == list(direct["probabilities"])
    np.testing.assert_allclose(list(p.probabilities.values()), list(direct["probabilities"].values()), atol=1e-5)
    np.testing.assert_allclose([p.weights[m] for m in MODALITIES], [direct["weights"][m] for m in MODALITIES],
                               atol=1e-5)
    assert p.transcript == TEXT and p.top == max(direct["probabilities"], key=direct["probabilities"].get)


# --- missing streams -------------------------------------------------------------------------------

def test_a_hidden_face_zeroes_the_video_and_its_return_restores_it(predictor, talk):
    """Grey frames make the video "no face in view" (weight exactly 0) within two updates; the face back, > 0 again."""
    hidden = (3.0, 5.0)  # frames at 3.0 .. 5.0 show no face
    stream = LiveStream(predictor, LiveConfig(window=4.0, interval=1.0))

    def frame(talk, t):
        return GREY if hidden[0] <= t <= hidden[1] else face_frame(talk, t)

    updates = {}
    for t in range(1, 9):
        feed(stream, talk, t, start=t - 1, audio=False, frame=frame)
        updates[t] = stream.update(float(t), use=NO_AUDIO, transcript=TEXT)
    for t in (1, 2):
        assert updates[t].states["video"] == LIVE and updates[t].prediction.weights["video"] > 0
    # the first grey frame enters the window at t=3: by t=4 the face is gone
    gone = [t for t in (3, 4) if updates[t].states["video"] == "no face in view"]
    assert gone, {t: updates[t].states for t in (3, 4)}
    for t in range(gone[0], 6):
        u = updates[t]
        assert u.states["video"] == "no face in view", (t, u.states)
        assert u.prediction.weights["video"] == 0.0 and not u.prediction.used["video"]
        assert u.states["text"] == LIVE and u.prediction.weights["text"] == pytest.approx(1.0, abs=1e-6)
        assert u.faces < u.frames
    # the face is back at 5.5: live again within two updates
    back = [t for t in (6, 7) if updates[t].states["video"] == LIVE]
    assert back, {t: updates[t].states for t in (6, 7)}
    for t in range(back[0], 9):
        assert updates[t].states["video"] == LIVE and updates[t].prediction.weights["video"] > 0
        assert sum(updates[t].prediction.weights.values()) == pytest.approx(1.0, abs=1e-5)
    # a window showing the face in only some of its frames fuses only those (faces < frames)
    assert updates[8].faces < updates[8].frames


@pytest.mark.parametrize("level", [0.0, 10 ** (-60 / 20)])  # zeros, and noise at -60 dBFS RMS
def test_silence_leaves_the_audio_and_text_out_and_fuses_the_video(predictor, talk, level):
    """A window below -50 dBFS is "silence": audio weight 0, nothing to transcribe, the video alone fused."""
    rng = np.random.default_rng(0)
    stream = LiveStream(predictor, LiveConfig(window=4.0, interval=1.0))
    for t in (1.0, 2.0, 3.0, 4.0):
        stream.add_audio((level * rng.standard_normal(SAMPLE_RATE)).astype(np.float32), t)
    feed(stream, talk, 4.0, audio=False)
    u = stream.update(4.0, transcribe=True)
    assert u.states["audio"] == "silence"
    assert u.states["text"].startswith("nothing to transcribe") and "silence" in u.states["text"]
    assert u.states["video"] == LIVE
    p = u.prediction
    assert p.weights["audio"] == 0.0 and p.weights["text"] == 0.0 and p.weights["video"] == pytest.approx(1.0)
    assert "audio features" not in p.timings and "transcribe" not in p.timings


def test_quiet_speech_above_the_threshold_is_not_silence(predictor, talk):
    """The silence threshold is a level: TALK's speech scaled to -40 dBFS RMS is still fused as audio."""
    audio = talk[0][:3 * SAMPLE_RATE]
    quiet = (audio * (10 ** (-40 / 20) / np.sqrt(np.mean(np.square(audio, dtype=np.float64))))).astype(np.float32)
    stream = LiveStream(predictor, LiveConfig(window=3.0, interval=1.0))
    stream.add_audio(quiet, 3.0)
    u = stream.update(3.0, transcript=TEXT, transcribe=False)
    assert u.states["audio"] == LIVE and u.prediction.weights["audio"] > 0
    assert u.states["video"] == "no camera stream" and u.prediction.weights["video"] == 0.0


def test_a_microphone_that_stops_goes_stale_while_the_camera_goes_on(predictor, talk):
    """Audio until t=3: live at t=6 (stale_after 3 s), "microphone stopped" with weight 0 after; video goes on."""
    stream = LiveStream(predictor, LiveConfig(window=4.0, interval=1.0, audio_every=1, stale_after=3.0))
    feed(stream, talk, 3.0)
    first = stream.update(3.0, transcript=TEXT)
    assert first.states["audio"] == LIVE and first.prediction.weights["audio"] > 0
    feed(stream, talk, 6.0, start=3.0, audio=False)
    still = stream.update(6.0, transcript=TEXT)  # the chunks that arrived after t=2 only
    assert still.states["audio"] == LIVE and still.prediction.weights["audio"] > 0
    feed(stream, talk, 7.0, start=6.0, audio=False)
    stale = stream.update(7.0, transcript=TEXT)
    assert stale.states["audio"].startswith("microphone stopped") and "4 s ago" in stale.states["audio"]
    assert stale.prediction.weights["audio"] == 0.0 and not stale.prediction.used["audio"]
    assert stale.states["video"] == LIVE and stale.prediction.weights["video"] > 0
    assert stale.states["text"] == LIVE and stale.prediction.weights["text"] > 0


def test_a_camera_that_stops_goes_stale(predictor, talk):
    """Frames until t=2, an update at t=5.5: the camera state says it stopped and the video weight is 0."""
    stream = LiveStream(predictor, LiveConfig(window=4.0, interval=1.0, stale_after=3.0))
    feed(stream, talk, 2.0, audio=False)
    assert stream.update(5.0, use=NO_AUDIO, transcript=TEXT).states["video"] == LIVE  # 3 s: not yet
    u = stream.update(5.5, use=NO_AUDIO, transcript=TEXT)
    assert u.states["video"].startswith("camera stopped") and u.prediction.weights["video"] == 0.0
    assert u.prediction.weights["text"] == pytest.approx(1.0, abs=1e-6)


def test_streams_never_started_are_named_and_no_input_waits(predictor, talk):
    """No camera / no microphone are states, not errors; with nothing to fuse the update waits for input."""
    only_frames = LiveStream(predictor, LiveConfig())
    feed(only_frames, talk, 2.0, audio=False)
    u = only_frames.update(2.0, transcript=TEXT)
    assert u.states["audio"] == "no microphone stream" and u.states["video"] == LIVE
    assert u.prediction.weights["audio"] == 0.0 and u.prediction.weights["video"] > 0

    only_silence = LiveStream(predictor, LiveConfig())
    only_silence.add_audio(np.zeros(2 * SAMPLE_RATE, np.float32), 2.0)
    u = only_silence.update(2.0)
    assert u.states["video"] == "no camera stream" and u.states["audio"] == "silence"
    assert u.prediction is None and u.message.startswith("waiting for input")

    empty = LiveStream(predictor, LiveConfig())
    u = empty.update(1.0)
    assert u.prediction is None and u.message.startswith("waiting for input")
    assert u.states["audio"] == "no microphone stream" and u.states["video"] == "no camera stream"
    assert (u.frames, u.faces) == (0, 0)
    payload = u.to_json()
    json.dumps(payload)
    assert payload["weights"] == dict.fromkeys(MODALITIES, 0.0) and payload["top"] is None


# --- one update at a time --------------------------------------------------------------------------

def slow_predict(predictor, monkeypatch, seconds: float) -> threading.Event:
    """Make ``predictor.predict_sources`` sleep ``seconds`` first; the event is set once one has started."""
    real = predictor.predict_sources
    started = threading.Event()

    def slow(*args, **kwargs):
        started.set()
        time.sleep(seconds)
        return real(*args, **kwargs)

    monkeypatch.setattr(predictor, "predict_sources", slow)
    return started


def test_an_update_asked_for_while_one_runs_is_skipped_not_queued(predictor, talk, monkeypatch):
    """A concurrent update returns None at once and the next result reports the skipped window."""
    started = slow_predict(predictor, monkeypatch, 0.6)
    stream = LiveStream(predictor, LiveConfig(window=4.0, interval=1.0))
    feed(stream, talk, 1.0, audio=False)
    results = {}
    worker = threading.Thread(target=lambda: results.setdefault(1, stream.update(1.0, use=NO_AUDIO, transcript=TEXT)))
    worker.start()
    assert started.wait(10)
    begin = time.perf_counter()
    assert stream.update(2.0, use=NO_AUDIO, transcript=TEXT) is None
    assert time.perf_counter() - begin < 0.2  # not queued behind the running update
    worker.join(10)
    assert results[1].prediction is not None and results[1].skipped == 0
    feed(stream, talk, 3.0, start=1.0, audio=False)
    after = stream.update(3.0, use=NO_AUDIO, transcript=TEXT)
    assert after.skipped == 1 and stream.skipped == 1 and after.prediction is not None  # the t=2 window, once


def test_realtime_replay_skips_windows_and_keeps_the_lag_bounded(predictor, monkeypatch):
    """Updates slower than the interval: realtime replay skips windows and the lag stays bounded."""
    interval, sleep = 0.25, 0.375
    slow_predict(predictor, monkeypatch, sleep)
    updates = list(replay(predictor, str(TALK), LiveConfig(window=1.0, interval=interval), use=NO_AUDIO,
                          transcript=TEXT, realtime=True))
    ticks = math.floor(4.224 / interval)
    assert 2 <= len(updates) < ticks
    assert sum(u.skipped for u in updates) > 0
    # every window up to the last result is either computed or reported skipped, once
    assert sum(u.skipped for u in updates) + len(updates) == round(updates[-1].t / interval)
    lags = [u.lag_s for u in updates]
    assert max(lags) < sleep + 3 * interval, lags  # computing every window would lag ~0.15 s more each time
    assert lags[-1] < lags[0] + interval, lags
    assert all(u.prediction is not None for u in updates)
    assert [u.t for u in updates] == sorted(u.t for u in updates)


def test_each_skipped_window_is_counted_once(predictor, talk):
    """A window both skip()ped and lying in the gap between two updates is counted once; a bare gap counts too."""
    stream = LiveStream(predictor, LiveConfig(window=4.0, interval=1.0))
    feed(stream, talk, 6.0, audio=False)
    assert stream.update(1.0, use=NO_AUDIO, transcript=TEXT).skipped == 0
    stream.skip()  # the window at t=2 was not computed (as replay(realtime=True) and a busy update do)
    assert stream.update(3.0, use=NO_AUDIO, transcript=TEXT).skipped == 1
    assert stream.update(6.0, use=NO_AUDIO, transcript=TEXT).skipped == 2  # t=4 and t=5 never asked for
    assert stream.update(7.0, use=NO_AUDIO, transcript=TEXT).skipped == 0
    assert stream.skipped == 3


# --- shared work -----------------------------------------------------------------------------------

def test_faces_are_detected_once_per_kept_frame_across_overlapping_windows(predictor, talk, monkeypatch):
    """Overlapping windows share face detection: one crop_faces call per kept frame, none in featurize."""
    calls = []

    def counting(frames, *args, **kwargs):
        calls.append(len(frames))
        return crop_faces(frames, *args, **kwargs)

    monkeypatch.setattr(live_module, "crop_faces", counting)
    monkeypatch.setattr(featurize_module, "crop_faces", counting)
    stream = LiveStream(predictor, LiveConfig(window=4.0, interval=1.0, fps=2.0))
    kept = 0
    for t in range(1, 6):
        for i in range(1, 5):  # 4 frames a second offered: half are kept at 2 fps
            ft = t - 1 + i * 0.25
            kept += stream.add_frame(face_frame(talk, ft), ft)
        u = stream.update(float(t), use=NO_AUDIO, transcript=TEXT)
        assert u.states["video"] == LIVE and u.faces == u.frames
    assert kept == 10
    assert sum(calls) == len(calls) == kept, calls  # not 2 + 4 + 6 + 8 + 8 (once per frame per window)


def test_audio_every_reuses_the_audio_features_between_refreshes(predictor, talk):
    """With audio_every=2 the second update reuses the first one's audio features, though new audio came."""
    audio = talk[0] * 0.9  # content no other test has encoded (the predictor's caches are shared)
    stream = LiveStream(predictor, LiveConfig(window=2.0, interval=1.0, audio_every=2, transcribe=False))
    stream.add_audio(audio[:2 * SAMPLE_RATE], 2.0)
    first = stream.update(2.0)
    stream.add_audio(audio[2 * SAMPLE_RATE:3 * SAMPLE_RATE], 3.0)
    second = stream.update(3.0)
    assert first.states["audio"] == second.states["audio"] == LIVE
    assert "audio features" not in first.prediction.cached and "audio features" in first.prediction.timings
    assert "audio features" in second.prediction.cached and "audio features" not in second.prediction.timings
    assert second.prediction.probabilities == first.prediction.probabilities  # the same features fused
    for u in (first, second):  # transcription off and nothing typed: the text is missing, no speech recognised
        assert u.states["text"] == "transcription off (type a transcript)" and u.prediction.weights["text"] == 0.0
        assert "transcribe" not in u.prediction.timings and u.prediction.transcript is None

    assert (first.audio_age_s, second.audio_age_s) == (0.0, 1.0)


def test_background_audio_never_makes_an_update_wait_for_the_encoder(predictor, talk):
    """audio_in_background: the first update encodes inline; later ones fuse the newest window encoded while
    the next is encoded beside them (from the cache), and pick it up once it is done."""
    audio = talk[0] * 0.8  # content no other test has encoded
    stream = LiveStream(predictor, LiveConfig(window=2.0, interval=1.0, audio_every=1, transcribe=False,
                                              audio_in_background=True))
    stream.add_audio(audio[:2 * SAMPLE_RATE], 2.0)
    first = stream.update(2.0)
    assert "audio features" in first.prediction.timings and first.audio_age_s == 0.0
    stream.add_audio(audio[2 * SAMPLE_RATE:3 * SAMPLE_RATE], 3.0)
    second = stream.update(3.0)  # the window ending at 3 s goes to the background worker
    assert "audio features" in second.prediction.cached and second.audio_age_s == 1.0
    assert second.prediction.probabilities == first.prediction.probabilities
    stream._audio_job.result(timeout=60)  # the worker is done with the window ending at 3 s
    stream.add_audio(audio[3 * SAMPLE_RATE:4 * SAMPLE_RATE], 4.0)
    third = stream.update(4.0)  # fuses it, from the cache the worker filled
    assert "audio features" in third.prediction.cached and third.audio_age_s == 1.0
    window = audio[1 * SAMPLE_RATE:3 * SAMPLE_RATE]
    expected = predictor.fuse({"audio": predictor.extractors["audio"].extract(window), "text": None, "video": None})
    assert third.prediction.probabilities == pytest.approx(expected["probabilities"], abs=1e-5)


def test_background_audio_is_refreshed_every_audio_every_updates_not_whenever_the_worker_is_free(predictor, talk):
    """audio_in_background with audio_every=3: the worker takes a window at updates 1 (inline), 4 and 7. A
    window it finished is picked up before the next is judged due, so update 5 (the first after the worker
    finished the window of update 4) starts no new encoding."""
    audio = talk[0] * 0.6  # content no other test has encoded
    stream = LiveStream(predictor, LiveConfig(window=2.0, interval=1.0, audio_every=3, transcribe=False,
                                              audio_in_background=True))
    real_encode, encoded = stream._encode, []

    def recording(window, *args):
        encoded.append(window.update)
        return real_encode(window, *args)

    stream._encode = recording
    ages = []
    for t in range(2, 9):  # updates 1..7, TALK's audio cycled in 1 s chunks
        start = (t - 1) % 4
        stream.add_audio(audio[start * SAMPLE_RATE:(start + 1) * SAMPLE_RATE], float(t))
        u = stream.update(float(t))
        ages.append(u.audio_age_s)
        assert u.states["audio"] == LIVE and u.prediction.weights["audio"] > 0
        if stream._audio_job is not None:
            stream._audio_job.result(timeout=60)  # the worker done before the next update
    assert encoded == [4, 7], encoded  # update 1 encoded inline; not 5 or 6
    assert ages == [0.0, 1.0, 2.0, 3.0, 1.0, 2.0, 3.0], ages  # update 5 fuses the window of update 4 on


# --- viewers, settings, input checks ---------------------------------------------------------------

def test_live_streams_limit_sessions_and_drop_idle_ones(predictor):
    """At most `limit` sessions, one stream per session, an idle one dropped after `idle` s, drop() frees one."""
    streams = LiveStreams(predictor, LiveConfig(), limit=2, idle=10.0)
    a = streams.get("a", 0.0)
    b = streams.get("b", 1.0)
    assert a is not b and streams.get("a", 2.0) is a and len(streams) == 2
    with pytest.raises(InferenceError, match="live view already serves 2 viewers"):
        streams.get("c", 3.0)
    assert streams.get("a", 9.0) is a  # used again: not idle
    c = streams.get("c", 11.5)  # b idle for 10.5 s: dropped, so c fits
    assert c is not a and c is not b and len(streams) == 2 and streams.get("a", 12.0) is a
    streams.drop("a")
    streams.drop("nobody")  # unknown: nothing happens
    assert len(streams) == 1
    assert streams.get("a", 13.0) is not a and streams.get("c", 13.0) is c and len(streams) == 2


def test_live_streams_refuse_the_next_viewer_until_one_leaves(predictor):
    """A full registry refuses new sessions until drop() makes room."""
    streams = LiveStreams(predictor, LiveConfig(), limit=1, idle=60.0)
    first = streams.get("x", 0.0)
    with pytest.raises(InferenceError, match="live view"):
        streams.get("y", 1.0)
    streams.drop("x")
    assert streams.get("y", 2.0) is not first and len(streams) == 1


@pytest.mark.parametrize("kwargs,message", [
    ({"window": 0}, "live window must be a positive number"),
    ({"window": -1.0}, "live window must be a positive number"),
    ({"window": float("nan")}, "live window must be a positive number"),
    ({"interval": 0.0}, "live interval must be a positive number"),
    ({"interval": float("inf")}, "live interval must be a positive number"),
    ({"fps": float("nan")}, "live fps must be a positive number"),
    ({"fps": -2}, "live fps must be a positive number"),
    ({"audio_every": 0}, "audio_every must be a whole number"),
    ({"audio_every": 1.5}, "audio_every must be a whole number"),
    ({"audio_every": float("nan")}, "audio_every must be a whole number"),
    ({"audio_every": True}, "audio_every must be a whole number"),
    ({"window": True}, "window must be a positive number"),
])
def test_bad_live_settings_are_clear_errors(kwargs, message):
    """Non-positive or non-finite window, interval, fps and a non-whole audio_every are refused with a message."""
    with pytest.raises(InferenceError, match=message):
        LiveConfig(**kwargs)


def test_a_frame_that_is_not_an_rgb_image_is_a_clear_error(predictor, talk):
    """add_frame refuses a 2-D (grey) array with a message naming the shape; an RGBA frame is accepted."""
    stream = LiveStream(predictor, LiveConfig())
    with pytest.raises(InferenceError, match=r"RGB image .*\(288, 288\)"):
        stream.add_frame(np.zeros((288, 288), np.uint8), 1.0)
    rgba = np.dstack([face_frame(talk, 1.0), np.full((288, 288), 255, np.uint8)])
    assert stream.add_frame(rgba, 1.0) is True
    assert stream.add_frame(rgba, 1.1) is False  # due at 2 fps only


# --- the CLI ---------------------------------------------------------------------------------------

def test_cli_live_prints_one_json_line_per_window(predictor, capsys):
    """`--live TALK` prints 4 JSON lines (interval 1 s), each with its time, states and weights summing to 1."""
    from armer.predict import cli

    args = ["--checkpoint", predictor.source, "--extractor_path", f"video={predictor.extractors['video'].path}"]
    assert cli.main(["--live", str(TALK), *args, "--no_transcribe", "--text", TEXT, "--audio_every", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4
    rows = [json.loads(line) for line in lines]
    assert [r["t"] for r in rows] == [1.0, 2.0, 3.0, 4.0]
    for r in rows:
        assert r["states"] == {m: LIVE for m in MODALITIES}, r["states"]
        assert sum(r["weights"].values()) == pytest.approx(1.0, abs=1e-5) and all(w > 0 for w in r["weights"].values())
        assert r["transcript"] == TEXT and r["skipped"] == 0 and r["message"] == ""
    assert [r["frames"] for r in rows] == [3, 5, 7, 8]  # window 4 s at 2 fps
    # --audio_every 2 (not the default) reached the stream: new audio features at updates 1 and 3 only
    assert ["audio features" in r["cached"] for r in rows] == [False, True, False, True]


def test_cli_live_needs_a_clip_and_reports_a_missing_file(predictor, tmp_path, capsys):
    """`--live` alone is a usage error (exit 2); a missing clip returns 2 with `error:` on stderr."""
    from armer.predict import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--live"])
    assert exit_info.value.code == 2 and "--live replays one clip" in capsys.readouterr().err
    args = ["--checkpoint", predictor.source, "--extractor_path", f"video={predictor.extractors['video'].path}"]
    assert cli.main(["--live", str(tmp_path / "missing.mp4"), *args, "--no_transcribe"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error:") and "missing.mp4" in captured.err and captured.out == ""


def test_audio_switched_off_with_a_typed_transcript_encodes_no_audio(predictor, talk):
    """Nothing needs the audio (switched off, the text typed): no audio features, no transcription, nothing
    in the background."""
    stream = LiveStream(predictor, LiveConfig(window=2.0, audio_in_background=True))
    stream.add_audio(talk[0][:2 * SAMPLE_RATE] * 0.7, 2.0)
    u = stream.update(2.0, use=NO_AUDIO, transcript=TEXT)
    assert u.states["audio"] == "switched off" and u.prediction.weights["audio"] == 0.0
    assert not {"audio features", "transcribe"} & (set(u.prediction.timings) | set(u.prediction.cached))
    assert stream._audio_job is None and u.audio_age_s is None
