"""Loading MERBench-format feature folders and label files, and the errors for bad data."""
from __future__ import annotations

import io
import json
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from armer.constants import MER2023_LABELS
from armer.data import DataError, convert_trusted_label_file, load_dataset, load_label_file, save_label_file
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


# --- label files: no code execution, safe sample names, clear errors for malformed entries ---

class RunsCode:
    """Unpickling it calls `call(*args)`: what a hostile label file does."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def write_pickled_labels(path: Path, corpora: dict) -> Path:
    """`corpora` as MERBench writes them (.npz) or as a plain pickle (.pkl)."""
    if path.suffix == ".npz":
        np.savez_compressed(path, **{f"{k}_corpus": v for k, v in corpora.items()})
    else:
        path.write_bytes(pickle.dumps({f"{k}_corpus": v for k, v in corpora.items()}))
    return path


@pytest.mark.parametrize("suffix", [".npz", ".pkl"])
@pytest.mark.parametrize("how", ["exec", "os.system"])
def test_a_label_file_that_would_run_code_is_refused_without_running_it(tmp_path, suffix, how):
    marker = tmp_path / "ran"
    payload = (RunsCode(exec, f"open({str(marker)!r}, 'w').close()") if how == "exec"
               else RunsCode(os.system, f"touch {marker}"))
    path = write_pickled_labels(tmp_path / f"labels{suffix}", {"train": {"a": {"emo": payload, "val": 0.0}}})
    forbidden = "builtins.exec" if how == "exec" else f"{os.system.__module__}.system"
    with pytest.raises(DataError) as error:
        load_label_file(path)
    assert not marker.exists()
    assert re.search(rf"holds a pickled {forbidden}; .*convert_trusted_label_file", str(error.value))


@pytest.mark.parametrize("cli", ["train", "evaluate"])
def test_the_clis_refuse_a_hostile_label_file_with_a_clean_error(tiny_tree, tmp_path, capsys, cli):
    from test_checkpoint import make_checkpoint

    from armer.evaluate.cli import main as evaluate_main
    from armer.train.cli import main as train_main

    marker = tmp_path / "ran"
    path = write_pickled_labels(tmp_path / "labels.npz", {"train": {"train_00000": {
        "emo": RunsCode(exec, f"open({str(marker)!r}, 'w').close()"), "val": 0.0}}})
    data = ["--features_root", tiny_tree["features_root"], "--label_path", str(path),
            *(f"--{m}_feature={n}" for m, n in feature_names(tiny_tree).items())]
    if cli == "train":
        args, main = [*data, "--save_root", str(tmp_path / "run")], train_main
    else:
        make_checkpoint(tmp_path / "ckpt")
        args, main = ["--checkpoint", str(tmp_path / "ckpt"), *data], evaluate_main
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2 and "error: label file" in capsys.readouterr().err
    assert not marker.exists()


def merbench_corpora() -> dict:
    """Entries as MERBench's preprocessing writes them: names from a csv, numpy valences, -10 for test3."""
    return {"train": {"train_00000": {"emo": "happy", "val": np.float64(1.5)},
                      "train_00001": {"emo": np.str_("sad"), "val": np.float32(-2.0)}},
            "test1": {"test1_00000": {"emo": "neutral", "val": np.float64(0.0)}},
            "test3": {"test1_00001": {"emo": "angry", "val": -10}},
            "test4": {"train_00002": {"emo": np.str_("worried")}}}


def numpy1_npz(path: Path, corpora: dict) -> Path:
    """An .npz as numpy 1.x wrote it: pickle protocol 3, globals under numpy.core.multiarray."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, entries in corpora.items():
            member = io.BytesIO()
            np.lib.format.write_array_header_1_0(member, {"descr": "|O", "fortran_order": False, "shape": ()})
            pickled = pickle.dumps(np.array(entries, dtype=object), protocol=3)
            member.write(pickled.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"))
            archive.writestr(f"{name}_corpus.npy", member.getvalue())
    return path


@pytest.mark.parametrize("writer", ["np.savez_compressed", "numpy 1.x", "pickle", "save_label_file .json"])
def test_merbench_label_files_with_numpy_values_load_as_before(tmp_path, tiny_tree, writer):
    corpora = merbench_corpora()
    if writer == "np.savez_compressed":
        path = write_pickled_labels(tmp_path / "label-6way.npz", corpora)
    elif writer == "pickle":
        path = write_pickled_labels(tmp_path / "labels.pkl", corpora)
    elif writer == "numpy 1.x":
        path = numpy1_npz(tmp_path / "label-6way.npz", corpora)
    else:
        path = tmp_path / "labels.json"
        save_label_file(path, corpora, label_names=MER2023_LABELS)
    loaded = load_label_file(path)
    assert {k: v for k, v in loaded.items() if k != "label_names"} == corpora
    if writer == "np.savez_compressed":  # what MERBench's own loader reads
        with np.load(path, allow_pickle=True) as npz:
            assert loaded == {key[: -len("_corpus")]: npz[key].tolist() for key in npz.files}
    dataset = load_dataset(tiny_tree["features_root"], path, feature_names(tiny_tree))
    assert dataset.label_names == list(MER2023_LABELS)
    assert dataset.train.emotions.tolist() == [2, 3] and dataset.train.valences.tolist() == [1.5, -2.0]
    assert dataset.corpora["test4"].emotions.tolist() == [4] and not dataset.corpora["test3"].valence_labelled.any()


def test_a_trusted_file_the_loader_refuses_converts_to_json(tmp_path):
    source = tmp_path / "labels.npz"
    np.savez_compressed(source, train_corpus=OrderedDict(a={"emo": "sad", "val": np.float64(0.25)}),
                        label_names=np.array(MER2023_LABELS))
    with pytest.raises(DataError, match="pickled collections.OrderedDict"):
        load_label_file(source)
    convert_trusted_label_file(source, tmp_path / "labels.json")
    assert load_label_file(tmp_path / "labels.json") == {"train": {"a": {"emo": "sad", "val": 0.25}},
                                                         "label_names": list(MER2023_LABELS)}


def test_sample_names_cannot_point_outside_the_feature_folders(tmp_path):
    features = tmp_path / "feats"
    for m in ("a-UTT", "b-UTT", "c-UTT"):
        (features / m).mkdir(parents=True)
        np.save(features / m / "ok.npy", np.ones(4, np.float32))
    np.save(tmp_path / "secret.npy", np.full(4, 7, np.float32))
    for sample in ("../../secret", str(tmp_path / "secret")):
        path = tmp_path / "labels.json"
        path.write_text(json.dumps({"train_corpus": {"ok": {"emo": 0}, sample: {"emo": 1}}}), encoding="utf-8")
        match = rf"train_corpus, sample {re.escape(repr(sample))}: .*not a plain file name"
        with pytest.raises(DataError, match=match):
            load_dataset(features, path, {"audio": "a-UTT", "text": "b-UTT", "video": "c-UTT"})


@pytest.mark.parametrize("text, message", [
    ('{"train_corpus": {"a": {"emo": 1,}}}', r"cannot read label file .*labels.json: Expecting"),
    ('[1, 2]', r"labels.json must hold a dict of '<split>_corpus' entries, got list"),
    ('{"train_corpus": [["a", 1]]}', r"labels.json, train_corpus must map sample names to \{'emo', 'val'\}, got list"),
    ('{"train_corpus": {"a": 3}}', r"train_corpus, sample 'a': expected \{'emo': class name or index"),
    ('{"train_corpus": {"a": {"valence": 0.5}}}', r"train_corpus, sample 'a': expected \{'emo'"),
    ('{"train_corpus": {"a": {"emo": 1, "val": "abc"}}}', r"train_corpus, sample 'a': valence 'abc' is not a number"),
    ('{"train_corpus": {"a": {"emo": 1, "val": null}}}', r"sample 'a': valence None is not a number"),
    ('{"train_corpus": {"a": {"emo": ""}}}', r"sample 'a': emotion '' is not a class name"),
    ('{"train_corpus": {"a": {"emo": true}}}', r"sample 'a': emotion True is not a class name or an integer"),
    ('{"train_corpus": {"a": {"emo": 1.0}}}', r"sample 'a': emotion 1.0 is not .* \(write an integer index such as 1"),
    ('{"train_corpus": {"a": {"emo": "sad"}}, "label_names": "sad"}', r"label_names must be a list of distinct"),
    ('{"test1_corpus": {"a": {"emo": 0}, "b": {"emo": 0, "val": NaN}, "c": {"emo": 0, "val": -Infinity}}}',
     r"test1_corpus: valence is NaN or infinite for 2 sample\(s\): b, c; give a finite valence, or -10"),
])
def test_malformed_label_files_name_the_file_corpus_and_sample(tmp_path, text, message):
    path = tmp_path / "labels.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_label_file(path)


def test_non_string_sample_names_are_refused(tmp_path):
    save_label_file(tmp_path / "labels.npz", {"train": {5: {"emo": 0}}})
    with pytest.raises(DataError, match=r"train_corpus, sample 5: sample names must be strings, got int"):
        load_label_file(tmp_path / "labels.npz")


@pytest.mark.parametrize("emotions, stored, message", [
    ([0, 1, 99], None, r"indices must run 0..K-1 without gaps; found 3 distinct indices from 0 to 99, missing 97"),
    ([0, 1, 7], MER2023_LABELS, r"train_corpus, sample 'train_00002': emotion index 7 is outside 0..5"),
    (["happy", 2, "sad"], None, r"mixes class names \(e.g. \['happy', 'sad'\]\) and class indices \(e.g. \[2\]\)"),
])
def test_class_indices_beyond_the_classes_are_refused(tmp_path, tiny_tree, emotions, stored, message):
    path = tmp_path / "labels.npz"
    save_label_file(path, {"train": {f"train_{i:05d}": {"emo": e, "val": 0.0} for i, e in enumerate(emotions)}},
                    label_names=stored)
    with pytest.raises(DataError, match=rf"label file {re.escape(str(path))}.*{message}"):
        load_dataset(tiny_tree["features_root"], path, feature_names(tiny_tree))


def test_contiguous_indices_beyond_mer2023_name_their_classes(tmp_path, tiny_tree):
    path = tmp_path / "labels.npz"
    save_label_file(path, {"train": {f"train_{i:05d}": {"emo": np.int64(i), "val": 0.0} for i in range(8)}})
    dataset = load_dataset(tiny_tree["features_root"], path, feature_names(tiny_tree))
    assert dataset.label_names == [f"class_{i}" for i in range(8)] and dataset.train.emotions.tolist() == list(range(8))


def test_a_corpus_without_any_feature_file_is_a_clear_error(tmp_path, tiny_tree):
    path = tmp_path / "labels.npz"
    save_label_file(path, {"train": {"train_00000": {"emo": 0}}, "test1": {"clip_a": {"emo": 0}, "clip_b": {"emo": 1}}})
    with pytest.raises(DataError, match=r"test1_corpus: none of its 2 samples has a non-zero feature .*clip_a\.npy"):
        load_dataset(tiny_tree["features_root"], path, feature_names(tiny_tree))


def test_a_feature_file_of_strings_is_a_clear_error(tiny_tree):
    victim = min((Path(tiny_tree["features_root"]) / tiny_tree["text_feature"]).glob("train_*.npy"))
    np.save(victim, np.array(["a"] * DIMS[1]))
    with pytest.raises(DataError, match=rf"{victim.name} holds <U1 values; expected numbers"):
        load(tiny_tree)
