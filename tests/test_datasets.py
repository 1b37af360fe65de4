"""`python -m armer.datasets`: CMU-MOSI and RAVDESS as MERBench folders that `armer.train` reads."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from armer.config import TrainConfig
from armer.data import load_dataset
from armer.datasets import DatasetError, convert_ravdess, main
from armer.train.folds import sample_group, validation_folds


def write_mosi(root, videos=("ab-c_1", "x_y2", "q9", "Zz-0"), per_video=6):
    ids = [f"{v}_{n}" for v in videos for n in range(1, per_video + 1)]
    rng = np.random.default_rng(0)
    n = len(ids)
    (root / "mosi").mkdir(parents=True)
    np.savez(root / "mosi" / "mosi_bclstm.npz", utt_id=np.array(ids), transcript=np.array(["WORDS"] * n),
             text=rng.normal(size=(n, 5)).astype(np.float32), audio=rng.normal(size=(n, 3)).astype(np.float32),
             video=rng.normal(size=(n, 4)).astype(np.float32), y_sentiment=rng.uniform(-3, 3, n).astype(np.float32),
             y_binary=np.zeros(n, dtype=np.int64), split=np.array(["train"] * (n - per_video) + ["test"] * per_video))
    return ids


def write_ravdess(root, actors=range(1, 7)):
    ids = [f"03-01-{e:02d}-01-{s:02d}-01-{a:02d}" for a in actors for e in range(1, 9) for s in (1, 2)]
    rng = np.random.default_rng(1)
    (root / "ravdess").mkdir(parents=True)
    np.savez(root / "ravdess" / "ravdess_au_mfcc.npz", file_id=np.array(ids),
             video_au=rng.normal(size=(len(ids), 6)).astype(np.float32),
             audio_mfcc=rng.normal(size=(len(ids), 7)).astype(np.float32))
    return ids


def embed(sentence: str) -> np.ndarray:
    return np.array([len(sentence), sentence.count("o"), 1.0], dtype=np.float32)


def test_mosi_becomes_a_valence_only_dataset_grouped_by_video(tmp_path):
    ids = write_mosi(tmp_path / "data")
    manifest = main(["mosi", "--data_root", str(tmp_path / "data"), "--out", str(tmp_path / "out")])
    flags = dict(zip(manifest["train_flags"][::2], manifest["train_flags"][1::2]))
    dataset = load_dataset(flags["--features_root"], flags["--label_path"],
                           {m: flags[f"--{m}_feature"] for m in ("audio", "text", "video")})
    assert dataset.label_names == [] and dataset.has_valence
    assert len(dataset.train) == len(ids) - 6 and len(dataset.tests["test1"]) == 6
    source = np.load(tmp_path / "data" / "mosi" / "mosi_bclstm.npz")
    row = dataset.train.samples.index(ids[0])
    assert np.array_equal(dataset.train.features[1][row], source["text"][0])
    assert dataset.train.valences[row] == pytest.approx(float(source["y_sentiment"][0]))
    groups = {sample_group(s, flags["--fold_groups"]) for s in dataset.train.samples}
    assert groups == {"ab-c_1", "x_y2", "q9"}  # video ids with "-" and "_" inside
    folds = validation_folds(dataset.train.samples, TrainConfig(num_folds=3, fold_groups=flags["--fold_groups"]))
    for fold in folds:
        assert len({sample_group(dataset.train.samples[i], flags["--fold_groups"]) for i in fold}) == 1


def test_ravdess_splits_by_actor_and_its_text_is_the_sentence(tmp_path):
    write_ravdess(tmp_path / "data")
    manifest = convert_ravdess(tmp_path / "data", tmp_path / "out", ["5", "06"], embed, "fake-text")
    assert manifest["test_actors"] == ["05", "06"] and manifest["corpora"] == {"train": 64, "test1": 32}
    flags = dict(zip(manifest["train_flags"][::2], manifest["train_flags"][1::2]))
    dataset = load_dataset(flags["--features_root"], flags["--label_path"],
                           {m: flags[f"--{m}_feature"] for m in ("audio", "text", "video")})
    assert dataset.label_names[:3] == ["neutral", "calm", "happy"] and len(dataset.label_names) == 8
    train = dataset.train
    assert len(np.unique(train.features[1], axis=0)) == 2  # two sentences, whatever the emotion
    sample = "03-01-05-01-02-01-03"
    assert train.emotions[train.samples.index(sample)] == 4  # EE 05 = angry
    assert np.array_equal(train.features[1][train.samples.index(sample)], embed("Dogs are sitting by the door"))
    assert {sample_group(s, flags["--fold_groups"]) for s in train.samples} == {"01", "02", "03", "04"}


def test_ravdess_default_test_actors_and_a_test_only_root(tmp_path):
    write_ravdess(tmp_path / "data")
    assert convert_ravdess(tmp_path / "data", tmp_path / "a", None, embed, "t")["test_actors"] == ["05", "06"]
    write_ravdess(tmp_path / "heldout", actors=(17, 18))
    manifest = convert_ravdess(tmp_path / "heldout", tmp_path / "b", ["all"], embed, "t")
    assert manifest["corpora"] == {"test1": 32}
    with pytest.raises(DatasetError, match="not in the data"):
        convert_ravdess(tmp_path / "data", tmp_path / "c", ["20"], embed, "t")


def test_a_missing_or_wrong_file_gets_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["mosi", "--data_root", str(tmp_path), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2 and "mosi_bclstm.npz not found" in capsys.readouterr().err
    (tmp_path / "mosi").mkdir()
    np.savez(tmp_path / "mosi" / "mosi_bclstm.npz", utt_id=np.array(["a_1"]))
    with pytest.raises(SystemExit):
        main(["mosi", "--data_root", str(tmp_path), "--out", str(tmp_path / "out")])
    assert "lacks the arrays" in capsys.readouterr().err
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_useless_folders_copy_the_samples_and_carry_nothing(tmp_path):
    root = tmp_path / "features"
    for suffix in ("", "-DEGRADED"):
        (root / f"text-UTT{suffix}").mkdir(parents=True)
        for i in range(4):
            np.save(root / f"text-UTT{suffix}" / f"s{i}.npy", np.full(6, i + 1.0, dtype=np.float32))
    manifest = main(["useless", "--features_root", str(root), "--like", "text-UTT", "--name", "noise-UTT"])
    assert manifest["written"] == {"noise-UTT": 4, "noise-UTT-DEGRADED": 4}
    noise = {p.stem: np.load(p) for p in (root / "noise-UTT").glob("*.npy")}
    views = {p.stem: np.load(p) for p in (root / "noise-UTT-DEGRADED").glob("*.npy")}
    assert sorted(noise) == [f"s{i}" for i in range(4)] and all(v.shape == (6,) for v in noise.values())
    assert not np.allclose(noise["s0"], noise["s1"]) and not np.allclose(noise["s0"], views["s0"])
    again = tmp_path / "again"
    shutil.copytree(root / "text-UTT", again / "text-UTT")
    main(["useless", "--features_root", str(again), "--like", "text-UTT", "--name", "noise-UTT"])
    assert all(np.array_equal(np.load(again / "noise-UTT" / f"{k}.npy"), v) for k, v in noise.items())  # seeded
    main(["useless", "--features_root", str(root), "--like", "text-UTT", "--name", "const-UTT",
                   "--kind", "constant"])
    const = [np.load(p) for p in (root / "const-UTT").glob("*.npy")]
    assert all(np.array_equal(c, const[0]) for c in const) and np.abs(const[0]).sum() > 0  # present, never zeros
    with pytest.raises(SystemExit):
        main(["useless", "--features_root", str(root), "--like", "absent-UTT", "--name", "x-UTT"])
