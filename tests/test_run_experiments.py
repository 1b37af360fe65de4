"""scripts/run_experiments.py: the arms (V1, the seed's recipe, V2) side by side in every table, the
checks, the README block and the model card, from fake runs' summary.json files; an old runs dir
without the seed arm still aggregates."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import run_experiments as rx
from model_card import model_card

from armer.constants import MODALITIES

FULL = {"v1": 0.70, "seed": 0.75, "v2": 0.80}  # weighted F1 with every modality, per arm
META = {"date": "2030-01-01 00:00 UTC", "git": "abc1234", "command": "python scripts/run_experiments.py",
        "build_command": "python -m armer.benchmark build", "train_command": "python -m armer.train ...",
        "epochs": 3, "num_folds": 2, "extractors": {m: f"{m}-x" for m in MODALITIES}, "degraded_views": 0.25,
        "test_speakers": ["03"], "corpora_sizes": {"test1": 10}, "manifest_sources": {}}


def corpus(waf: float, weights: tuple[float, ...], sigma: bool) -> dict:
    scores = {cond: {"waf": waf, "acc": waf + 0.01} for cond in rx.CONDITIONS}
    scores["full"].update(weights=dict(zip(MODALITIES, weights)),
                          sigma={m: (0.5 if sigma else None) for m in MODALITIES})
    scores["missing_rate"] = {rate: {"waf": waf - 0.1, "acc": waf - 0.09} for rate in [*rx.RATES, "mean"]}
    return scores


def summary(waf: float, sigma: bool) -> dict:
    clean = (0.4, 0.3, 0.3)
    results = {"test1": corpus(waf, clean, sigma), "test2": corpus(waf - 0.1, clean, sigma)}
    for i, test in enumerate(rx.SINGLE_NOISE.values()):  # the noised modality's weight falls
        results[test] = corpus(waf, tuple(w - 0.1 * (j == i) for j, w in enumerate(clean)), sigma)
    validation = {**{cond: {"waf": waf} for cond in rx.CONDITIONS}, "missing_rate": {"mean": {"waf": waf - 0.1}},
                  "weight_spread": {m: 0.1 for m in MODALITIES},
                  "degraded": {**{m: {"weight_clean": 0.3, "weight_degraded": 0.2} for m in MODALITIES},
                               "all": {"waf": waf - 0.2}}}
    return {"mean_best_val_emoval": waf, "results": results, "validation": validation}


def fake_runs(root: Path, arms: list[str], seeds=(0, 1)) -> tuple[dict, dict]:
    runs, unc = {}, {}
    for arm in arms:
        runs[arm], unc[arm] = {}, {}
        for seed in seeds:
            save = root / f"{arm}-seed{seed}"
            save.mkdir(parents=True)
            (save / "summary.json").write_text(json.dumps(summary(FULL[arm] + 0.01 * seed, arm != "v1")))
            runs[arm][seed] = save
            unc[arm][seed] = {c: {"auroc_sigma": None if arm == "v1" else 0.6, "auroc_prob": 0.7, "ece": 0.05,
                                  "error_rate": 0.2} for c in (rx.CLEAN, rx.NOISE)}
    return runs, unc


def first_column(md: str) -> list[str]:
    """The first column of the first Markdown table in `md`, below its header."""
    rows = md.split("\n|", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    return [row.split(" | ")[0].lstrip("| ") for row in rows]


def test_three_arms_side_by_side(tmp_path):
    agg = rx.aggregate(*fake_runs(tmp_path, list(rx.ARMS)))
    assert list(agg) == ["v1", "seed", "v2"]
    table = rx.main_table(agg)
    assert table[0] == ("| condition | V1 WAF (clean) | seed recipe WAF (clean) | V2 WAF (clean) | V1 ACC (clean) | "
                        "seed recipe ACC (clean) | V2 ACC (clean) | V1 WAF (noise) | seed recipe WAF (noise) | "
                        "V2 WAF (noise) |")
    assert table[2] == "| full | 70.5 ± 0.5 | 75.5 ± 0.5 | 80.5 ± 0.5 | 71.5 ± 0.5 | 76.5 ± 0.5 | 81.5 ± 0.5 | " \
                       "60.5 ± 0.5 | 65.5 ± 0.5 | 70.5 ± 0.5 |"
    checks = rx.checks(agg)
    assert checks[:4] == [
        "- V2 - V1, weighted F1, all modalities (clean test): +10.00 points (criterion: >= -0.5) -> **met**",
        "- V2 - V1, weighted F1, mean of the missing-rate sweep (clean test): +10.00 points (criterion: >= +2) -> **met**",
        "- V2 - seed recipe, weighted F1, all modalities (clean test): +5.00 points (criterion: >= -0.5) -> **met**",
        ("- V2 - seed recipe, weighted F1, mean of the missing-rate sweep (clean test): +5.00 points "
         "(criterion: >= +2) -> **met**")]
    assert len(checks) == 7 and all(line.endswith("**falls**") for line in checks[4:])

    md = rx.markdown(agg, META, None)
    assert md.startswith("# Paired emotion benchmark: V1 versus seed recipe versus V2")
    assert "seed recipe `--model attention_robust_v2 --recipe seed --degraded_views 0`" in md
    assert "| condition | V1 | seed recipe | V2 |" in md  # validation
    assert "V1 70.5 ± 0.5, seed recipe 75.5 ± 0.5, V2 80.5 ± 0.5" in md  # mean best fold emoval
    for section in ("## Mean fusion weight", "Sigma (u", "## Uncertainty", "Spread of the fusion weights",
                    "Degraded validation inputs"):
        models = first_column(md.split(section, 1)[1])
        expected = ["seed recipe", "V2"] if section == "Sigma (u" else ["V1", "seed recipe", "V2"]
        assert list(dict.fromkeys(models)) == expected, section

    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{rx.README_START}\nold\n{rx.README_END}\noutro\n")
    rx.update_readme(readme, agg, META)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("\noutro\n") and "\nold\n" not in text
    assert table[0] in text and checks[3] in text and "seed recipe `--model attention_robust_v2 --recipe seed --degraded_views 0`" in text

    card = model_card(META, agg, 1, 0.81, md)
    assert table[0] in card and "seed recipe `--model attention_robust_v2 --recipe seed --degraded_views 0`" in card


def test_a_runs_dir_without_the_seed_arm_still_aggregates(tmp_path):
    args = rx.parse_args(["--arms", "v2", "v1"])
    assert args.arms == ["v1", "v2"]  # reported in ARMS order
    agg = rx.aggregate(*fake_runs(tmp_path, args.arms))
    md = rx.markdown(agg, META, None)
    assert "seed recipe" not in md
    assert "| condition | V1 WAF (clean) | V2 WAF (clean) | V1 ACC (clean) |" in md
    assert len(rx.checks(agg)) == 5
    with pytest.raises(SystemExit):
        rx.parse_args(["--arms", "v1", "seed"])


def test_train_commands_carry_each_arms_flags_and_the_recipe_defaults(tmp_path):
    args = rx.parse_args(["--bench_dir", str(tmp_path), "--epochs", "7", "--train_args", "--lr 0.01"])
    manifest = {"feature_folders": {m: f"{m}-UTT" for m in MODALITIES}}
    cmds = {arm: rx.train_command(args, manifest, arm, 0, tmp_path / f"{arm}-seed0") for arm in rx.ARMS}
    parsed = {arm: rx.train_args(cmd) for arm, cmd in cmds.items()}
    assert [parsed[a]["model"] for a in rx.ARMS] == ["attention_robust", "attention_robust_v2", "attention_robust_v2"]
    # the seed recipe's defaults, as armer.train applies and records them; explicit flags still win
    assert parsed["seed"]["recipe"] == "seed" and parsed["seed"]["optimizer"] == "adamw"
    assert parsed["seed"]["epochs"] == 7 and parsed["seed"]["lr"] == 0.01
    assert parsed["v2"]["recipe"] == "armer" and parsed["v2"]["optimizer"] != "adamw"
    assert parsed["seed"]["degraded_views"] == 0 and parsed["v2"]["degraded_views"] == 0.25  # the arm wins


def test_every_arm_trains_on_the_benchmarks_feature_scaling_and_the_seed_recipe_stays_raw(tmp_path):
    manifest = {"feature_folders": {m: f"{m}-UTT" for m in MODALITIES}}
    for scaling, normalized in (("raw", {"v1": False, "seed": False, "v2": False}),
                                ("standardised", {"v1": True, "seed": False, "v2": True})):
        args = rx.parse_args(["--bench_dir", str(tmp_path), "--feature_scaling", scaling])
        assert {arm: rx.train_args(rx.train_command(args, manifest, arm, 0, tmp_path / arm))["normalize"]
                for arm in rx.ARMS} == normalized
    assert rx.parse_args([]).feature_scaling == rx.BENCHMARK_FEATURE_SCALING == "standardised"


def test_demo_weights_refuses_a_group_without_runs(tmp_path, capsys):
    import demo_weights

    (tmp_path / "run-a" / "checkpoint").mkdir(parents=True)
    (tmp_path / "run-b").mkdir()
    assert demo_weights.parse_args([f"x={tmp_path}/run-*"]).runs == {"x": [tmp_path / "run-a"]}
    for bad in (f"{tmp_path}/run-*", f"x={tmp_path}/nothing-*"):
        with pytest.raises(SystemExit):
            demo_weights.parse_args([bad])
        assert "LABEL=GLOB" in capsys.readouterr().err


def test_real_data_reads_train_flags_with_and_without_values():
    from real_data import flag_values

    flags = ["--features_root", "F", "--no-normalize", "--fold_groups", "speaker", "--lr", "-1e-3", "--normalize"]
    assert flag_values(flags) == {"--features_root": "F", "--no-normalize": None, "--fold_groups": "speaker",
                                  "--lr": "-1e-3", "--normalize": None}


def test_a_run_is_reused_only_where_a_new_default_changes_nothing(tmp_path):
    """A run recorded before uncertainty_weight existed trained with 1: V1 and the seed recipe (no
    calibration term) are reused at today's default, V2 is trained again."""
    args = rx.parse_args(["--bench_dir", str(tmp_path)])
    manifest = {"feature_folders": {m: f"{m}-UTT" for m in MODALITIES}}
    for arm, reused in (("v1", True), ("seed", True), ("v2", False)):
        wanted = rx.train_args(rx.train_command(args, manifest, arm, 0, tmp_path / arm))
        assert wanted["uncertainty_weight"] != 1.0
        old = {k: v for k, v in wanted.items() if k not in ("uncertainty_weight", "calibration_target")}
        assert rx.same_training(old, wanted) is reused
        assert rx.same_training(old, {**wanted, "uncertainty_weight": 1.0})
        assert not rx.same_training(old, {**wanted, "seed": 1})
        assert not rx.same_training({**old, "model": "attention_robust_v2" if arm == "v1" else "attention_robust"},
                                    wanted)
        older = {k: v for k, v in wanted.items() if k not in ("normalize_scope", "calibrated_fusion", "learn_temperature")}
        assert rx.same_training(older, wanted)  # settings added since, at the values those runs trained with
        assert rx.same_training(wanted, {**wanted, "normalize_scope": "modality"}) is (arm == "seed")  # raw: no scope
