"""armer.evaluate.report: the ablation table reads each run's summary.json, validation columns first."""
from __future__ import annotations

import json

import pytest

from armer.model.missing import DROP_PATTERNS
from armer.evaluate.report import ablation_table


def conditions(full: float, patterns: float, sweep: float) -> dict:
    return {"full": {"waf": full}, **{p: {"waf": patterns} for p in DROP_PATTERNS},
            "missing_rate": {"mean": {"waf": sweep}}}


def write_run(root, name: str, summary: dict) -> None:
    (root / name).mkdir()
    (root / name / "summary.json").write_text(json.dumps(summary))


def test_ablation_table_has_validation_and_test_columns_and_marks_old_runs(tmp_path):
    write_run(tmp_path, "v2", {"results": {"test1": conditions(0.8, 0.7, 0.75)},
                               "validation": {**conditions(0.9, 0.6, 0.85),
                                              "weight_spread": {"audio": 0.1, "text": 0.2, "video": 0.3},
                                              "degraded": {"audio": {"weight_clean": 0.5, "weight_degraded": 0.4},
                                                           "text": {"weight_clean": 0.2, "weight_degraded": 0.25},
                                                           "video": {"weight_clean": 0.3, "weight_degraded": 0.3}}}})
    write_run(tmp_path, "old", {"results": {"test1": conditions(0.5, 0.4, 0.45)}})
    lines = ablation_table(tmp_path, ["v2", "old"]).splitlines()
    assert lines[0].startswith("| run | validation full | validation drop-pattern mean | validation missing-rate mean | "
                               "validation weight spread | validation weight change, one modality degraded "
                               "(a / t / v) | test1 full")
    assert lines[2] == ("| v2 | 0.9000 | 0.6000 | 0.8500 | 0.2000 | -0.100 / +0.050 / +0.000 | "
                        "0.8000 | 0.7000 | 0.7500 |")
    assert lines[3] == "| old | n/a | n/a | n/a | n/a | n/a | 0.5000 | 0.4000 | 0.4500 |"


def test_a_missing_run_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="nope/summary.json not found"):
        ablation_table(tmp_path, ["nope"])


def test_compare_runs_shows_test_corpora_only_when_asked_and_n_a_where_a_run_lacks_one(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import calibration_runs
    import compare_runs

    weights = {"audio": 0.5, "text": 0.2, "video": 0.3}
    for name, test1 in (("a", 0.8), ("b", 0.6)):
        write_run(tmp_path, name, {"args": {"seed": 0}, "results": {"test1": conditions(test1, 0.5, 0.7)},
                                   "validation": {**conditions(0.9, 0.6, 0.85), "weight_mean": weights}})
    runs = [f"{n}={tmp_path / n}" for n in ("a", "b")]
    compare_runs.main([*runs, "--out", str(tmp_path / "plain.md")])
    assert "test1" not in (tmp_path / "plain.md").read_text()
    compare_runs.main([*runs, "--out", str(tmp_path / "test.md"), "--test", "test1", "test2"])
    lines = (tmp_path / "test.md").read_text().splitlines()
    assert any(line.startswith("| a | 90.0 | 85.0 |") and line.endswith("| 80.0 / 70.0 | n/a |") for line in lines)
    assert any(line.startswith("| b |") and line.endswith("| 60.0 / 70.0 | n/a |") for line in lines)
    means = calibration_runs.seed_means({"both": [tmp_path / "a", tmp_path / "b"]}, ["test1"])
    assert means[4].endswith("| 70.0 ± 10.0 / 70.0 ± 0.0 |")
