"""armer.predict: one call from a clip to a fused prediction, cached per modality; and the CLI."""
from __future__ import annotations

import json

import demo_support
import numpy as np
import pytest
import torch
from demo_support import PHOTO, SILENT, SPEECH, TALK

from armer.constants import FEATURE_KEYS, MODALITIES
from armer.predict.predictor import Degrade, InferenceError, Predictor, clean_text

predictor = demo_support.predictor  # fixture

EXTRACTION_STEPS = {"audio features", "transcribe", "text features", "faces", "video features"}


def test_full_clip_gives_a_consistent_prediction(predictor):
    r = predictor.predict(video=TALK)
    assert set(r.probabilities) == set(predictor.info.label_names)
    assert sum(r.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert r.top == max(r.probabilities, key=r.probabilities.get)
    assert sum(r.weights.values()) == pytest.approx(1.0, abs=1e-5) and all(w > 0 for w in r.weights.values())
    assert all(r.sigma[m] > 0 for m in MODALITIES) and r.valence is not None
    assert r.used == r.available == {m: True for m in MODALITIES}
    assert "happy to see you" in r.transcript.lower()
    assert r.face_share == 1.0
    json.dumps(r.to_json())  # JSON-safe


def test_result_equals_the_ensemble_on_directly_extracted_features(predictor):
    from armer.extractors import Sources, featurize, load_media

    r = predictor.predict(video=TALK, transcript="What a lovely day.")
    clip = featurize(Sources.from_media(load_media(TALK)), predictor.extractors, "What a lovely day.")
    batch = {k: torch.from_numpy(clip.features[m])[None] for k, m in zip(FEATURE_KEYS, MODALITIES)}
    with torch.no_grad():
        out = predictor.ensemble(batch)
    np.testing.assert_allclose(list(r.probabilities.values()), out.logits.exp()[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(list(r.weights.values()), out.weights[0].numpy(), atol=1e-6)


def test_toggle_reuses_every_feature_and_zeroes_the_weight(predictor):
    full = predictor.predict(video=TALK)
    for m in MODALITIES:
        r = predictor.predict(video=TALK, use={m: False})
        assert not EXTRACTION_STEPS & set(r.timings), r.timings  # only fusion ran
        assert r.weights[m] == 0.0 and r.sigma[m] is None and not r.used[m] and r.available[m]
        others = [o for o in MODALITIES if o != m]
        assert sum(r.weights[o] for o in others) == pytest.approx(1.0, abs=1e-5)
        assert all(abs(r.weights[o] - full.weights[o]) > 1e-4 for o in others)
        assert r.timings["total"] < 0.1
    assert predictor.predict(video=TALK).probabilities == full.probabilities  # back on: same answer


@pytest.mark.parametrize("degrade,step,modality", [
    (Degrade(snr_db=5.0), "audio features", "audio"),
    (Degrade(blur=4), "video features", "video"),
    (Degrade(word_drop=0.5), "text features", "text"),
])
def test_a_degrade_control_reextracts_only_its_modality(predictor, degrade, step, modality):
    clean = predictor.predict(video=TALK)
    r = predictor.predict(video=TALK, degrade=degrade)
    assert EXTRACTION_STEPS & set(r.timings) == {step}
    assert r.probabilities != clean.probabilities  # the degraded features reached the fusion
    again = predictor.predict(video=TALK, degrade=degrade)  # now cached, and seeded: identical
    assert not EXTRACTION_STEPS & set(again.timings) and again.probabilities == r.probabilities
    if modality == "text":
        assert len(r.transcript.split()) < len(clean.transcript.split())


def test_a_silent_clip_uses_the_video_only(predictor):
    r = predictor.predict(video=SILENT)
    assert r.used == {"audio": False, "text": False, "video": True}
    assert r.weights == {"audio": 0.0, "text": 0.0, "video": pytest.approx(1.0)}
    assert any("no audio stream" in n for n in r.notices) and any("text modality is missing" in n for n in r.notices)


def test_audio_file_plus_image_and_text_only(predictor):
    r = predictor.predict(audio=SPEECH, image=PHOTO)
    assert r.used == {m: True for m in MODALITIES} and "sad" in r.transcript.lower()
    t = predictor.predict(transcript="Nothing ever works out for me.")
    assert t.used == {"audio": False, "text": True, "video": False} and t.face_share is None
    assert t.weights["text"] == pytest.approx(1.0)


def test_distinct_inputs_give_distinct_results(predictor):
    results = [predictor.predict(transcript=f"Sentence number {i} about my {w} day.")
               for i, w in enumerate(["great", "awful", "boring", "strange"])]
    probs = {tuple(round(p, 6) for p in r.probabilities.values()) for r in results}
    assert len(probs) == len(results)


@pytest.mark.parametrize("kwargs,message", [
    ({}, "no input"),
    ({"transcript": "   \n "}, "no input"),
    ({"video": TALK, "use": {"audio": False, "text": False, "video": False}}, "switched off"),
    ({"transcript": "hi", "use": {"text": False}}, "switched off"),
    ({"video": SILENT, "use": {"video": False}}, "switched off"),
    ({"transcript": "hi", "use": {"speech": True}}, "use must be keyed"),
])
def test_unusable_requests_are_clear_errors(predictor, kwargs, message):
    with pytest.raises(InferenceError, match=message):
        predictor.predict(**kwargs)


def test_bad_files_are_clear_errors(predictor, tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x01not a video" * 100)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InferenceError, match="zero-length"):
        predictor.predict(video=tmp_path / "empty.mp4")
    with pytest.raises(InferenceError, match="corrupt"):
        predictor.predict(video=tmp_path / "corrupt.mp4")
    with pytest.raises(InferenceError, match="unsupported format"):
        predictor.predict(video=tmp_path / "notes.txt")
    with pytest.raises(InferenceError, match="cannot read"):
        predictor.predict(video=tmp_path / "missing.mp4")
    with pytest.raises(InferenceError, match="has no audio"):
        predictor.predict(audio=SILENT)
    image_as_video = predictor.predict(video=PHOTO)
    assert image_as_video.used["video"] and any("not a video" in n for n in image_as_video.notices)


@pytest.mark.parametrize("bad", [dict(snr_db=float("nan")), dict(blur=3.5), dict(blur=0), dict(word_drop=1.5)])
def test_bad_degrade_settings(bad):
    with pytest.raises(InferenceError):
        Degrade(**bad)


def test_transcripts_are_cleaned_and_capped(predictor):
    text, notices = clean_text(b"caf\xe9 au lait")
    assert text == "caf\ufffd au lait" and "not valid UTF-8" in notices[0]
    text, notices = clean_text("caf\udce9 ok\x00\x07")
    assert text == "caf? ok" and "lone surrogates" in notices[0]
    long = " ".join(["word"] * 10_000)
    r = predictor.predict(transcript=long)
    assert len(r.transcript.split()) == 1000 and any("49999 characters" in n for n in r.notices)
    assert any("words: only the first 1000 are used" in n for n in r.notices)
    assert predictor.predict(transcript=b"\xff\xfe sad \xc3").used["text"]


def test_missing_checkpoint_says_how_to_get_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="make_tiny_checkpoint.py"):
        Predictor.from_checkpoint(tmp_path)


def test_extractor_dims_must_match_the_checkpoint(predictor):
    from armer.extractors import create_extractor

    with pytest.raises(InferenceError, match="expects 512-d"):
        Predictor(predictor.ensemble, predictor.info,
                  extractors={**predictor.extractors, "audio": create_extractor("librosa-stats")})


def test_cli_prints_json_and_fails_cleanly(predictor, tmp_path, capsys):
    from armer.predict import cli as predict

    ckpt = predictor.source
    fer = str(predictor.extractors["video"].path)
    args = ["--checkpoint", ckpt, "--extractor_path", f"video={fer}"]
    assert predict.main([str(TALK), "--text", "What a lovely day.", "--off", "video", "--blur", "2", *args]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["transcript"] == "What a lovely day." and out["weights"]["video"] == 0.0
    assert out["used"] == {"audio": True, "text": True, "video": False}
    (tmp_path / "broken.mp4").write_bytes(b"junk" * 50)
    assert predict.main([str(tmp_path / "broken.mp4"), *args]) == 2
    assert "broken.mp4" in capsys.readouterr().err
    assert predict.main([str(TALK), "--checkpoint", str(tmp_path)]) == 2
    assert "no ARMER checkpoint" in capsys.readouterr().err


def test_a_long_transcript_without_spaces_is_cut_before_any_work(predictor):
    import tracemalloc

    huge = "x" * 5_000_000  # one "word": the word cap alone does not bite
    tracemalloc.start()
    text, notices = clean_text(huge)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(text) == 10_000 and notices == ["the transcript has 5000000 characters: only the first 10000 are used"]
    assert peak < 1 << 20, peak  # the character-by-character cleaning saw 10,000 characters, not 5 million
    r = predictor.predict(transcript=huge)
    assert len(r.transcript) == 10_000 and r.used["text"] and "5000000 characters" in r.notices[0]


def test_cache_bytes_count_arrays_views_and_containers():
    from armer.extractors.featurize import LRUCache, nbytes

    frame = np.zeros((100, 100, 3), np.uint8)
    assert nbytes(frame[:10]) == frame.nbytes  # a view keeps its whole array alive
    assert nbytes(([frame, frame[:5]], 0.5)) < frame.nbytes + 200  # counted once
    cache = LRUCache(max_bytes=3 * frame.nbytes + 1000)
    for i in range(10):
        cache.put(i, ([np.zeros_like(frame)], 0.0))
        assert cache.nbytes <= cache.max_bytes and cache.nbytes == sum(nbytes(v) for v in cache.values())
    assert len(cache) == 3 and cache.get(9) is not None and cache.get(0) is None
    cache.put("huge", np.zeros(10 * frame.nbytes, np.uint8))  # larger than the budget: not kept, nothing evicted
    assert cache.get("huge") is None and len(cache) == 3


def test_many_clips_without_a_face_keep_the_caches_within_their_byte_budgets(predictor, tmp_path):
    from PIL import Image

    from armer.extractors.featurize import nbytes

    budget = {"media": 5 << 20, "derived": 3 << 20}
    p = Predictor(predictor.ensemble, predictor.info, predictor.extractors, cache_bytes=budget)
    for i in range(24):  # 0.9 MB frames kept whole (no face): 22 MB in all
        Image.fromarray(np.full((480, 640, 3), 40 + 5 * i, np.uint8)).save(tmp_path / f"wall_{i}.png")
        r = p.predict(image=tmp_path / f"wall_{i}.png")
        assert r.face_share == 0.0 and any("no face found" in n for n in r.notices)
        for name, cache in p.caches().items():
            assert cache.nbytes == sum(nbytes(v) for v in cache.values()) <= cache.max_bytes, name
    assert p.caches()["media"].nbytes <= budget["media"] and p.caches()["derived"].nbytes <= budget["derived"]
    again = p.predict(image=tmp_path / "wall_23.png")  # the latest clip is still cached: same answer
    assert {"faces", "video features"} <= set(again.cached) and again.probabilities == r.probabilities
    assert predictor.predict(image=tmp_path / "wall_23.png").probabilities == r.probabilities


def _pipe_and_endless_file(tmp_path):
    os = __import__("os")
    os.mkfifo(tmp_path / "pipe.mp4")
    (tmp_path / "zeros.mp4").symlink_to("/dev/zero")
    return tmp_path / "pipe.mp4", tmp_path / "zeros.mp4"


def _within(seconds: float, fn, *args):
    """fn(*args), failing the test when it does not return within ``seconds`` (a read that never ends)."""
    import concurrent.futures as cf

    pool = cf.ThreadPoolExecutor(1)
    try:
        return pool.submit(fn, *args).result(timeout=seconds)
    finally:
        pool.shutdown(wait=False)


def test_a_pipe_or_a_device_is_refused_before_it_is_read(predictor, tmp_path):
    for path in _pipe_and_endless_file(tmp_path):
        with pytest.raises(InferenceError, match="not a regular file"):
            _within(20, lambda p: predictor.predict(video=p), path)
    with pytest.raises(InferenceError, match="is a folder"):
        predictor.predict(image=tmp_path)


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(predictor, tmp_path, monkeypatch):
    from armer.predict import predictor as module

    monkeypatch.setattr(module, "MAX_FILE_MB", 1)
    big = tmp_path / "big.mp4"
    with open(big, "wb") as f:
        f.truncate(3 << 20)  # sparse: 3 MB that take no disk
    with pytest.raises(InferenceError, match="big.mp4: the file is 3 MB; the limit is 1 MB"):
        predictor.predict(video=big)


def test_cli_refuses_a_pipe_or_dev_zero_quickly(predictor, tmp_path, capsys):
    from armer.predict import cli as predict

    args = ["--checkpoint", predictor.source, "--extractor_path", f"video={predictor.extractors['video'].path}"]
    for path in _pipe_and_endless_file(tmp_path):
        assert _within(60, predict.main, [str(path), *args]) == 2
        err = capsys.readouterr().err
        assert f"{path.name}: not a regular file" in err and "give a media file" in err


def test_a_valence_only_checkpoint_is_refused_with_a_message(predictor):
    from dataclasses import replace

    info = replace(predictor.info, label_names=[])
    with pytest.raises(InferenceError, match="valence only"):
        Predictor(predictor.ensemble, info, extractors=predictor.extractors)
