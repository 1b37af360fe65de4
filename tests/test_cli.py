"""`python -m armer.train` and `python -m armer.evaluate` end to end on a tiny tree."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from armer.cli import SETTINGS_DOC, settings_from_args, settings_markdown
from armer.config import ModelConfig, TrainConfig, flag_fields
from armer.model.missing import DROP_PATTERNS, MISSING_RATES
from armer.synthetic import write_synthetic_merbench
from armer.train.cli import build_parser
from conftest import DIMS

ROOT = Path(__file__).resolve().parents[1]


def run(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def data_args(tree: dict) -> list[str]:
    return ["--features_root", tree["features_root"], "--label_path", tree["label_path"],
            "--audio_feature", tree["audio_feature"], "--text_feature", tree["text_feature"],
            "--video_feature", tree["video_feature"]]


@pytest.fixture(scope="module")
def cli_tree(tmp_path_factory):
    return write_synthetic_merbench(tmp_path_factory.mktemp("cli"), n_train=60, n_tests=(30, 20), dims=DIMS,
                                    missing_rate=0.2, seed=1)


@pytest.fixture(scope="module")
def trained_run(cli_tree, tmp_path_factory):
    save_root = tmp_path_factory.mktemp("run")
    result = run("armer.train", *data_args(cli_tree), "--save_root", str(save_root), "--epochs", "3",
                 "--num_folds", "2", "--workers", "2", "--hidden_dim", "16", "--no-use_proxy_attention", "--seed", "3")
    assert result.returncode == 0, result.stderr
    return save_root, result


def test_train_writes_log_checkpoint_and_summary_with_every_condition(trained_run):
    save_root, result = trained_run
    assert "folds 2 epoch 3/3" in result.stderr  # progress per epoch (2 folds dealt to 2 workers)
    assert (save_root / "train.log").read_text().count("epoch") >= 6
    assert {p.name for p in (save_root / "checkpoint").iterdir()} == {"config.json", "model.safetensors"}
    config = json.loads((save_root / "checkpoint" / "config.json").read_text())
    assert config["model"]["use_proxy_attention"] is False and config["num_members"] == 2
    assert config["features"]["audio"] == {"name": "synth-audio-UTT", "dim": 16}
    summary = json.loads((save_root / "summary.json").read_text())
    assert set(summary["results"]) == {"test1", "test2"}
    conditions = summary["results"]["test1"]
    assert {"full", *DROP_PATTERNS, "missing_rate"} <= set(conditions)
    assert set(conditions["missing_rate"]) == {f"{r:.1f}" for r in MISSING_RATES} | {"mean"}
    for metrics in [conditions["full"], conditions["audio_only"], conditions["missing_rate"]["mean"]]:
        assert {"waf", "acc", "val_mse"} <= set(metrics)
        assert 0.0 <= metrics["waf"] <= 1.0


def test_evaluate_scores_a_checkpoint_with_noise_as_json_and_markdown(trained_run, cli_tree, tmp_path):
    save_root, _ = trained_run
    out = tmp_path / "eval"
    result = run("armer.evaluate", "--checkpoint", str(save_root), "--features_root", cli_tree["features_root"],
                 "--label_path", cli_tree["label_path"], "--noise_levels", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"test1", "test2"}
    assert set(results["test1"]["noise"]) == {"audio@1", "text@1", "video@1"}
    table = (out / "results.md").read_text()
    assert "| noise audio@1 |" in table and "| missing r=mean |" in table and table == result.stdout


def test_bad_paths_exit_with_a_clear_message(tiny_tree, tmp_path):
    result = run("armer.train", *data_args({**tiny_tree, "features_root": str(tmp_path / "missing")}),
                 "--save_root", str(tmp_path / "r"))
    assert result.returncode == 2 and "features root" in result.stderr and "Traceback" not in result.stderr
    result = run("armer.evaluate", "--checkpoint", str(tmp_path), "--features_root", tiny_tree["features_root"],
                 "--label_path", tiny_tree["label_path"])
    assert result.returncode == 2 and "no config.json" in result.stderr and "Traceback" not in result.stderr


def test_boolean_flags_can_be_switched_off():
    help_text = run("armer.train", "--help").stdout
    for flag in ("--use_vae", "--no-use_vae", "--use_proxy_attention", "--no-use_proxy_attention",
                 "--kl_weight", "--recon_weight", "--cross_kl_weight", "--fusion_temperature",
                 "--num_attention_heads", "--modality_dropout", "--modality_dropout_warmup", "--hidden_dim", "--dropout",
                 "--no-normalize", "--no-expert_fusion", "--test_every_epoch", "--grad_clip", "--l2", "--lr"):
        assert flag in help_text
    assert "--no-test_every_epoch" not in help_text  # off by default: a plain switch


REQUIRED = ["--features_root", "f", "--label_path", "l", "--save_root", "s"]


def test_every_setting_is_a_flag_whose_default_is_the_dataclass_default():
    args = build_parser().parse_args(REQUIRED)
    assert settings_from_args(TrainConfig, args) == TrainConfig()
    dims = dict(audio_dim=3, text_dim=4, video_dim=5, output_dim1=2)
    assert settings_from_args(ModelConfig, args, **dims) == ModelConfig(**dims)
    flags = {f.name for cls in (TrainConfig, ModelConfig) for f in flag_fields(cls)}
    assert {"grad_clip", "model", "feat_type", "hidden_dim", "epochs", "fold_groups"} <= flags
    assert not {"audio_dim", "output_dim1"} & flags  # set from the data


def test_flags_set_the_dataclass_fields_with_their_types_and_choices():
    args = build_parser().parse_args([*REQUIRED, "--grad_clip", "0.5", "--epochs", "7", "--no-use_vae",
                                      "--test_every_epoch", "--fold_groups", "speaker", "--model", "attention_robust"])
    train = settings_from_args(TrainConfig, args)
    model = settings_from_args(ModelConfig, args, audio_dim=3, text_dim=4, video_dim=5)
    assert (train.grad_clip, train.epochs, train.test_every_epoch, train.fold_groups) == (0.5, 7, True, "speaker")
    assert (model.use_vae, model.model) == (False, "attention_robust") and isinstance(train.grad_clip, float)
    with pytest.raises(SystemExit):
        build_parser().parse_args([*REQUIRED, "--model", "v3"])
    with pytest.raises(ValueError, match="fold_groups='voice' must be one of"):
        settings_from_args(TrainConfig, build_parser().parse_args([*REQUIRED, "--fold_groups", "voice"]))


def test_the_settings_doc_lists_every_flag_and_is_up_to_date():
    text = (ROOT / SETTINGS_DOC).read_text(encoding="utf-8")
    assert text == settings_markdown(), "docs/settings.md is out of date: run python scripts/settings_doc.py"
    for cls in (TrainConfig, ModelConfig):
        for f in flag_fields(cls):
            assert f"`--{f.name}" in text


def test_degraded_views_are_trained_on_when_asked_and_scored_whenever_present(tmp_path):
    tree = write_synthetic_merbench(tmp_path / "tree", n_train=40, n_tests=(20,), dims=DIMS, seed=2)
    args = [*data_args(tree), "--epochs", "2", "--num_folds", "2", "--workers", "1", "--hidden_dim", "16"]
    result = run("armer.train", *args, "--save_root", str(tmp_path / "r0"), "--degraded_views", "0.5")
    assert result.returncode == 2 and "no degraded training views" in result.stderr and "Traceback" not in result.stderr
    for name in ("audio_feature", "text_feature", "video_feature"):  # views: the features, sign flipped
        folder = Path(tree["features_root"]) / tree[name]
        views = folder.with_name(folder.name + "-DEGRADED")
        views.mkdir()
        for f in folder.glob("train_*.npy"):
            np.save(views / f.name, -np.load(f))
    for probability in ("0", "0.5"):
        save = tmp_path / f"r{probability}"
        result = run("armer.train", *args, "--save_root", str(save), "--degraded_views", probability)
        assert result.returncode == 0, result.stderr
        summary = json.loads((save / "summary.json").read_text())
        assert summary["args"]["degraded_views"] == float(probability)
        assert set(summary["validation"]["degraded"]) == {"audio", "text", "video", "all"}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def test_a_diverging_run_exits_1_with_one_error_line_and_no_checkpoint(cli_tree, tmp_path):
    save_root = tmp_path / "diverged"
    result = run("armer.train", *data_args(cli_tree), "--save_root", str(save_root), "--epochs", "4", "--num_folds", "2",
                 "--workers", "2", "--hidden_dim", "16", "--lr", "1e4")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    [error] = error_lines(result.stderr)
    assert error.startswith("error: training diverged: folds 1, 2 at epoch 1 (non-finite ") and "--lr (now 10000)" in error
    assert {p.name for p in save_root.iterdir()} == {"train.log"}  # no checkpoint, history or summary


def test_a_test_corpus_without_video_is_scored_with_its_video_conditions_not_applicable(tmp_path):
    tree = write_synthetic_merbench(tmp_path / "tree", n_train=40, n_tests=(20, 20), dims=DIMS, seed=4)
    for f in (Path(tree["features_root"]) / tree["video_feature"]).glob("test1_*.npy"):
        f.unlink()
    save_root = tmp_path / "run"
    result = run("armer.train", *data_args(tree), "--save_root", str(save_root), "--epochs", "2", "--num_folds", "2",
                 "--workers", "1", "--hidden_dim", "16")
    assert result.returncode == 0, result.stderr
    results = json.loads((save_root / "summary.json").read_text())["results"]
    assert results["test1"]["video_only"] is None and results["test1"]["full"]["weights"]["video"] is None
    assert results["test2"]["video_only"]["n"] == 20  # the corpus with video: every condition scored
    assert {"full", "drop_video", "audio_only", "text_only"} <= {k for k, v in results["test1"].items() if v}
    assert "| video_only | n/a | n/a | " in (save_root / "summary.md").read_text()
    out = tmp_path / "eval"
    result = run("armer.evaluate", "--checkpoint", str(save_root), "--features_root", tree["features_root"],
                 "--label_path", tree["label_path"], "--noise_levels", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    noise = json.loads((out / "results.json").read_text())["test1"]["noise"]
    assert noise["video@1"] is None and noise["audio@1"]["n"] == 20
    assert "| noise video@1 | n/a | n/a | " in result.stdout


@pytest.mark.parametrize("flags, problem", [
    ("--epochs 0", "epochs=0 must be >= 1"), ("--batch_size 0", "batch_size=0 must be >= 1"),
    ("--num_folds 1", "num_folds=1 must be >= 2"), ("--lr -0.1", "lr=-0.1 must be a positive finite number"),
    ("--lr nan", "lr=nan must be a positive finite number"), ("--degraded_views 2", "degraded_views=2.0 must be in [0, 1]"),
    ("--hidden_dim 0", "hidden_dim=0 must be positive"),
])
def test_bad_training_settings_exit_2_with_one_error_line_before_anything_is_written(flags, problem, tmp_path, capsys):
    from armer.train.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["--features_root", str(tmp_path), "--label_path", str(tmp_path / "l.npz"),
              "--save_root", str(tmp_path / "run"), *flags.split()])
    assert stop.value.code == 2
    [error] = capsys.readouterr().err.splitlines()
    assert error.startswith("error: ") and problem in error and not (tmp_path / "run").exists()


def test_fewer_samples_than_folds_exits_2_with_one_error_line(cli_tree, tmp_path):
    result = run("armer.train", *data_args(cli_tree), "--save_root", str(tmp_path / "r"), "--num_folds", "61")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert error_lines(result.stderr) == ["error: 60 training samples cannot be split into 61 folds"]


@pytest.mark.parametrize("flags, problem", [
    ("--noise_levels 1 -1", "--noise_levels -1.0: noise levels are feature stds, finite and >= 0"),
    ("--noise_levels nan", "--noise_levels nan: noise levels"), ("--seed -2", "--seed -2 must be >= 0"),
    ("--out {tmp}/file", "is a file, not a folder"), ("--checkpoint {tmp}/missing", "missing does not exist"),
])
def test_bad_evaluation_arguments_exit_2_with_one_error_line(flags, problem, tmp_path, capsys):
    from armer.evaluate.cli import main

    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as stop:
        main(["--checkpoint", str(tmp_path), "--features_root", str(tmp_path), "--label_path", str(tmp_path / "l.npz"),
              *flags.format(tmp=tmp_path).split()])
    assert stop.value.code == 2
    [error] = capsys.readouterr().err.splitlines()
    assert error.startswith("error: ") and problem in error


def test_a_valence_only_tree_trains_learns_the_valence_and_is_scored_with_the_sentiment_metrics(tmp_path):
    """Labels with only 'val' (MERBench's CMU-MOSI, CMU-MOSEI, CH-SIMS): no classes, the valence head alone."""
    tree = write_synthetic_merbench(tmp_path / "tree", n_train=300, n_tests=(120,), dims=DIMS, missing_rate=0.1,
                                    seed=5, valence_only=True)
    save_root = tmp_path / "run"
    result = run("armer.train", *data_args(tree), "--save_root", str(save_root), "--epochs", "6", "--num_folds", "2",
                 "--workers", "1", "--hidden_dim", "16", "--modality_dropout_warmup", "2", "--seed", "2")
    assert result.returncode == 0, result.stderr
    config = json.loads((save_root / "checkpoint" / "config.json").read_text())
    assert config["label_names"] == [] and config["model"]["output_dim1"] == 0 and config["has_valence"] is True
    summary = json.loads((save_root / "summary.json").read_text())
    # fold selection by MERBench's valence score alone: -valence MSE of the fold's kept epoch
    history = json.loads((save_root / "history.json").read_text())
    for fold, (epoch, best) in enumerate(zip(summary["best_epochs"], summary["best_val_emovals"])):
        assert best == pytest.approx(-history[epoch - 1]["folds"][fold]["val"]["val_mse"])
    full = summary["results"]["test1"]["full"]
    assert set(full) >= {"val_mse", "mae", "corr", "acc2", "f1"} and "waf" not in full
    assert full["corr"] > 0.5 and full["acc2"] > 0.6  # the planted valence is learnt
    assert set(summary["results"]["test1"]["missing_rate"]["mean"]) == {"val_mse", "mae", "corr", "acc2", "f1"}
    assert "test1 valence MSE | test1 corr" in (save_root / "summary.md").read_text()
    out = tmp_path / "eval"
    result = run("armer.evaluate", "--checkpoint", str(save_root), "--features_root", tree["features_root"],
                 "--label_path", tree["label_path"], "--noise_levels", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    results = json.loads((out / "results.json").read_text())["test1"]
    assert results["full"]["corr"] == pytest.approx(full["corr"]) and results["noise"]["audio@1"]["mae"] > 0
    # a classification label file is scored by its valence
    classes = write_synthetic_merbench(tmp_path / "classes", n_train=40, n_tests=(20,), dims=DIMS, seed=6)
    result = run("armer.evaluate", "--checkpoint", str(save_root), "--features_root", classes["features_root"],
                 "--label_path", classes["label_path"], "--noise_levels", "--out", str(tmp_path / "eval2"))
    assert result.returncode == 0, result.stderr
    assert "corr" in json.loads((tmp_path / "eval2" / "results.json").read_text())["test1"]["full"]


def test_a_label_file_mixing_emotion_and_valence_only_samples_is_refused(tmp_path):
    from armer.data import NO_CLASS, DataError, load_dataset, load_label_file, save_label_file

    path = tmp_path / "labels.json"
    save_label_file(path, {"train": {"a": {"emo": "happy", "val": 0.5}, "b": {"val": -0.5}}})
    with pytest.raises(DataError, match="sample 'b': no 'emo', but 1 other sample"):
        load_label_file(path)
    save_label_file(path, {"train": {"a": {"val": 0.5}, "b": {}}})
    with pytest.raises(DataError, match="sample 'b': expected"):
        load_label_file(path)
    save_label_file(path, {"train": {"a": {"val": float("nan")}}})
    with pytest.raises(DataError, match="NaN or infinite"):
        load_label_file(path)
    tree = write_synthetic_merbench(tmp_path / "tree", n_train=10, n_tests=(), dims=DIMS, valence_only=True)
    names = {m: tree[f"{m}_feature"] for m in ("audio", "text", "video")}
    dataset = load_dataset(tree["features_root"], tree["label_path"], names)
    assert dataset.label_names == [] and dataset.has_valence and (dataset.train.emotions == NO_CLASS).all()
    with pytest.raises(DataError, match="has valences only"):  # a classification checkpoint's classes
        load_dataset(tree["features_root"], tree["label_path"], names, label_names=["happy", "sad"])


def test_speaker_breakdown_scores_each_fold_group_out_of_fold_and_each_test_group(cli_tree, tmp_path):
    """scripts/speaker_breakdown.py on a run whose folds group the samples by their last digit."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from speaker_breakdown import main

    save_root = tmp_path / "run"
    result = run("armer.train", *data_args(cli_tree), "--save_root", str(save_root), "--epochs", "2", "--num_folds",
                 "2", "--workers", "1", "--hidden_dim", "16", "--fold_groups", r"regex:(\d)$")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "breakdown.md"
    main([f"A={save_root}", f"A={save_root}", "--test", "test1", "--out", str(out)])
    scores = json.loads(out.with_suffix(".json").read_text())["scores"]["A"]
    assert len(scores) == 2 and scores[0] == scores[1]  # the same run twice: the same scores
    validation = {k: v for k, v in scores[0].items() if k.startswith("validation ") and k[-1].isdigit()}
    assert sorted(validation) == [f"validation {d}" for d in range(10)]
    assert scores[0]["validation: mean over the groups"] == pytest.approx(np.mean(list(validation.values())))
    assert scores[0]["validation: worst group"] == min(validation.values())
    assert {f"test1 {d}" for d in range(10)} | {"test1 (all)"} <= set(scores[0])
    assert "| validation: worst group | " in out.read_text()
    with pytest.raises(SystemExit, match="no test corpus 'test9'"):
        main([f"A={save_root}", "--test", "test9", "--out", str(out)])
