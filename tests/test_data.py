"""Loading MERBench-format feature folders and label files, and the errors for bad data."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from armer.constants import MER2023_LABELS
from armer.data import DataError, load_dataset, load_label_file, save_label_file
from conftest import DIMS, feature_names


def load(paths: dict, **kwargs):
    return load_dataset(paths["features_root"], paths["label_path"], feature_names(paths), **kwargs)


def test_loads_every_corpus_with_dims_labels_and_valence(tiny_tree):
    dataset = load(tiny_tree)
    assert set(dataset.corpora) == {"train", "test1", "test2"}
    assert dataset.dims == DIMS and dataset.label_names == list(MER2023_LABELS) and dataset.has_valence
    assert len(dataset.train) == 60 and dataset.train.features[1].shape == (60, DIMS[1])


def test_samples_missing_a_feature_file_are_kept_as_missing(tiny_tree):
    dataset = load(tiny_tree)
    train = dataset.train
    missing = ~train.present
    assert missing.any() and train.present.any(axis=1).all()
    audio_missing = np.flatnonzero(missing[:, 0])
    assert not (Path(tiny_tree["features_root"]) / tiny_tree["audio_feature"] / f"{train.samples[audio_missing[0]]}.npy").exists()
    assert np.all(train.features[0][audio_missing] == 0)


def test_folder_names_may_omit_the_utt_suffix(tiny_tree):
    names = {m: n.removesuffix("-UTT") for m, n in feature_names(tiny_tree).items()}
    dataset = load_dataset(tiny_tree["features_root"], tiny_tree["label_path"], names)
    assert dataset.feature_names == feature_names(tiny_tree)


def test_wrong_root_and_unknown_feature_give_clear_errors(tiny_tree, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nowhere", tiny_tree["label_path"], feature_names(tiny_tree))
    names = {**feature_names(tiny_tree), "text": "Baichuan-13B-Base-UTT"}
    with pytest.raises(DataError, match=r"'Baichuan-13B-Base-UTT' not found .* available: \['synth-audio-UTT'"):
        load_dataset(tiny_tree["features_root"], tiny_tree["label_path"], names)


def test_dim_mismatch_nan_and_bad_shapes_name_the_file(tiny_tree):
    folder = Path(tiny_tree["features_root"]) / tiny_tree["video_feature"]
    victim = sorted(folder.glob("train_*.npy"))[3]
    np.save(victim, np.zeros(DIMS[2] + 1, np.float32) + 1)
    with pytest.raises(DataError, match=f"{victim.name} has dim {DIMS[2] + 1}"):
        load(tiny_tree)
    bad = np.ones(DIMS[2], np.float32)
    bad[2] = np.nan
    np.save(victim, bad)
    with pytest.raises(DataError, match=f"{victim.name} contains NaN or inf"):
        load(tiny_tree)
    np.save(victim, np.ones((2, 3, DIMS[2]), np.float32))
    with pytest.raises(DataError, match=r"has shape \(2, 3, 12\); expected \(D,\) or \(T, D\)"):
        load(tiny_tree)
    victim.write_bytes(b"not a numpy file")
    with pytest.raises(DataError, match=f"cannot read feature file .*{victim.name}"):
        load(tiny_tree)


def test_frame_level_features_are_mean_pooled_for_utt(tiny_tree):
    folder = Path(tiny_tree["features_root"]) / tiny_tree["audio_feature"]
    sample = sorted(folder.glob("train_*.npy"))[0]
    frames = np.arange(3 * DIMS[0], dtype=np.float32).reshape(3, DIMS[0])
    np.save(sample, frames)
    dataset = load(tiny_tree)
    row = dataset.train.samples.index(sample.stem)
    assert np.allclose(dataset.train.features[0][row], frames.mean(axis=0))
    frame_level = load(tiny_tree, feat_type="frm_align")  # same folders serve as -FRA stand-ins
    assert frame_level.train.features[0].shape[1:] == (3, DIMS[0])


def test_labels_by_index_any_number_of_test_corpora_and_unlabelled_valence(tmp_path):
    path = tmp_path / "labels.npz"
    save_label_file(path, {"train": {"a": {"emo": 2, "val": -10}}, "test1": {"b": {"emo": 0, "val": 0.5}},
                           "test7": {"c": {"emo": 1, "val": -10}}})
    corpora = load_label_file(path)
    assert set(corpora) == {"train", "test1", "test7"}
    features = tmp_path / "feats"
    for m in ("a-UTT", "b-UTT", "c-UTT"):
        (features / m).mkdir(parents=True)
        for sample in "abc":
            np.save(features / m / f"{sample}.npy", np.ones(4, np.float32))
    dataset = load_dataset(features, path, {"audio": "a-UTT", "text": "b-UTT", "video": "c-UTT"})
    assert dataset.train.emotions.tolist() == [2] and not dataset.has_valence
    assert dataset.corpora["test1"].valence_labelled.tolist() == [True]


def test_unknown_class_and_broken_label_files_are_clear_errors(tmp_path, tiny_tree):
    path = tmp_path / "labels.npz"
    save_label_file(path, {"train": {"train_00000": {"emo": "elated", "val": 0}}}, label_names=MER2023_LABELS)
    with pytest.raises(DataError, match="emotion 'elated' is not one of"):
        load_dataset(tiny_tree["features_root"], path, feature_names(tiny_tree))
    (tmp_path / "broken.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot read label file"):
        load_label_file(tmp_path / "broken.npz")
    np.savez(tmp_path / "wrong.npz", something=np.zeros(3))
    with pytest.raises(DataError, match="no '<split>_corpus' entries"):
        load_label_file(tmp_path / "wrong.npz")
