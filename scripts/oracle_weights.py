"""How far can weights softmax((1 / u) / T) follow reliability at all? The severity ladder, with u
set to each sample's actual error.

    python scripts/oracle_weights.py [--ladder_dir ~/.cache/armer/benchmark-ladder] \
        [--runs_dir runs/experiments] [--seeds 0 1 2 3 4] [--temperatures 0.15 0.25 0.5 1]

For each V2 run (its fold ensemble, all modalities present) and each level of the ladder
(`armer.benchmark build`, the clean test pairs with one modality degraded at one level), the
degraded modality's mean fusion weight twice: as the run gives it, and as the fusion would give it
if every modality's u were its unimodal head's error on that very sample, 1 - p(true class) with
the label known (floored at 0.02). That u knows what no model can, so its weights are how far this
fusion, with these heads, can follow each sample's reliability: a reference for issue #14's goal
(a 30% fall wherever the modality alone loses 10 points), not a model. Beside them the head's
accuracy on that modality. It reads test corpora and chooses nothing.

Writes results/oracle_weights.md (and .json).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from armer.benchmark.build import parse_ladder_corpus  # noqa: E402
from armer.checkpoint import load_checkpoint  # noqa: E402
from armer.constants import MODALITIES  # noqa: E402
from armer.data import Corpus, load_dataset  # noqa: E402
from armer.evaluate.conditions import to_batch  # noqa: E402
from armer.evaluate.ladder import MIN_FALL, MIN_LOSS, SEVERITY_SIGN  # noqa: E402
from report_files import generated_line, git_commit, recorded_args, write_report  # noqa: E402

ERROR_FLOOR = 0.02  # a head that is right and sure would give u = 0 and an infinite 1 / u


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ladder_dir", default=str(Path.home() / ".cache" / "armer" / "benchmark-ladder"),
                   help="a paired-benchmark build with the ladder, the runs' training pairs")
    p.add_argument("--runs_dir", default=str(ROOT / "runs" / "experiments"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="the runs v2-seed<S>")
    p.add_argument("--temperatures", type=float, nargs="+", default=[0.15, 0.25, 0.5, 1.0])
    p.add_argument("--out", default=str(ROOT / "results" / "oracle_weights.md"))
    p.add_argument("--allow_dirty", action="store_true", help="run on uncommitted changes (the file says so)")
    return p.parse_args(argv)


@torch.no_grad()
def level_numbers(model, corpus: Corpus, modality: int, temperatures: list[float]) -> dict[str, float]:
    """The run's mean weight of `modality`, the oracle's at each T (over the samples where it is
    present), and its head's accuracy."""
    out = model.member_outputs(to_batch(corpus))
    probs = torch.softmax(model.network.unimodal_heads(out.mu), dim=-1)  # (E, B, M, C)
    labels = torch.as_tensor(corpus.emotions, dtype=torch.long)
    p_true = probs.gather(-1, labels.view(1, -1, 1, 1).expand(*probs.shape[:-1], 1))[..., 0]  # (E, B, M)
    present = torch.as_tensor(corpus.present, dtype=torch.bool)  # (B, M)
    rows = present[:, modality]
    numbers = {"weight": float(out.weights[:, rows, modality].mean()),
               "head_accuracy": float((probs.argmax(-1) == labels.view(1, -1, 1))[:, rows, modality].float().mean())}
    inverse_error = 1.0 / (1.0 - p_true).clamp(min=ERROR_FLOOR)
    for t in temperatures:
        w = torch.softmax((inverse_error / t).masked_fill(~present, float("-inf")), dim=-1)
        numbers[f"oracle_T{t:g}"] = float(w[:, rows, modality].mean())
    return numbers


def ladder_of(dataset) -> dict[str, list[tuple[float | None, Corpus]]]:
    """modality -> [(None, clean test corpus), (level, corpus) mild to severe, ...]."""
    levels: dict[str, dict[float, Corpus]] = {}
    for name, corpus in dataset.corpora.items():
        parsed = parse_ladder_corpus(name)
        if parsed is not None:
            levels.setdefault(parsed[0], {})[parsed[1]] = corpus
    if not levels:
        raise SystemExit("no ladder corpora: build the benchmark without --no_ladder")
    return {m: [(None, dataset.corpora["test1"])] + [(v, levels[m][v]) for v in sorted(levels[m], key=lambda v: SEVERITY_SIGN[m] * v)]
            for m in MODALITIES if m in levels}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    commit = git_commit()
    if "+uncommitted" in commit and not args.allow_dirty:
        raise SystemExit("the working tree has uncommitted changes: commit first, or pass --allow_dirty")
    runs = [Path(args.runs_dir) / f"v2-seed{s}" for s in args.seeds]
    trained_at = sorted({json.loads((r / "summary.json").read_text()).get("commit", "unknown") for r in runs})
    first = recorded_args(runs[0])
    features = {m: first[f"{m}_feature"] for m in MODALITIES}
    if any(recorded_args(r)["model"] != "attention_robust_v2" for r in runs):
        raise SystemExit("every run must be a V2 run (--model attention_robust_v2)")
    ladder_dir = Path(args.ladder_dir)
    ladder = ladder_of(load_dataset(ladder_dir / "features", ladder_dir / "label-6way.npz", features))
    keys = ["weight", "head_accuracy", *(f"oracle_T{t:g}" for t in args.temperatures)]
    per_run: dict[str, list] = {m: [] for m in ladder}
    for run in runs:
        model, _ = load_checkpoint(run / "checkpoint")
        model.eval()
        for m, points in ladder.items():
            index = MODALITIES.index(m)
            per_run[m].append([level_numbers(model, corpus, index, args.temperatures) for _, corpus in points])
        print(f"{run.name}: done", flush=True)

    lines = ["# How far the fusion weights can follow reliability: the ladder with u = each sample's error", "",
             generated_line("oracle_weights.py"), "", f"Commit: `{commit}`."
             + (" **Run on uncommitted changes (--allow_dirty).**" if "+uncommitted" in commit else ""), "",
             f"V2 runs `{args.runs_dir}/v2-seed*` (seeds {args.seeds}, trained at {', '.join(f'`{c}`' for c in trained_at)}), "
             f"ladder `{ladder_dir}`; mean over the seeds. "
             "Each cell: the degraded modality's mean fusion weight (all modalities present) and, in brackets, its "
             "change against the clean test pairs. 'run': the weights V2 gives. 'u = error, T': the weights "
             f"softmax((1 / u) / T) with u = 1 - p(true class) of each modality's unimodal head on that sample "
             f"(label known, floored at {ERROR_FLOOR}): a reference no model can reach, not a model. 'head "
             "accuracy': the degraded modality's head alone. Test corpora; nothing is chosen here. The goal of "
             f"issue #14: wherever the modality alone loses {MIN_LOSS * 100:.0f}+ points, its weight falls "
             f"{MIN_FALL * 100:.0f}%+.", ""]
    data = {"commit": commit, "trained_at": trained_at, "runs": [str(r) for r in runs], "ladder_dir": str(ladder_dir), "modalities": {}}
    for m, points in ladder.items():
        mean = {k: np.mean([[p[k] for p in run] for run in per_run[m]], axis=0) for k in keys}
        data["modalities"][m] = {"levels": [lv for lv, _ in points], **{k: v.tolist() for k, v in mean.items()}}
        lines += [f"**{m}**", "", "| level | head accuracy | run | " + " | ".join(f"u = error, T = {t:g}" for t in
                                                                                   args.temperatures) + " |",
                  "|---" * (3 + len(args.temperatures)) + "|"]
        for i, (level, _) in enumerate(points):
            def cell(k: str) -> str:
                change = "" if i == 0 else f" ({(mean[k][i] / mean[k][0] - 1) * 100:+.0f}%)"
                return f"{mean[k][i]:.3f}{change}"
            acc = mean["head_accuracy"]
            lost = "" if i == 0 else f" ({(acc[i] - acc[0]) * 100:+.1f})"
            lines.append(f"| {'clean' if level is None else f'{level:g}'} | {acc[i] * 100:.1f}{lost} | "
                         + " | ".join(cell(k) for k in keys if k != "head_accuracy") + " |")
        lines.append("")
    write_report(args.out, lines, data)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
