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
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from armer.checkpoint import load_checkpoint  # noqa: E402
from armer.constants import MODALITIES  # noqa: E402
from armer.data import Corpus, load_dataset  # noqa: E402
from armer.evaluate.conditions import to_batch  # noqa: E402
from armer.evaluate.ladder import MIN_FALL, MIN_LOSS, group_ladder, mild_to_severe  # noqa: E402
from report_files import commit_line, committed, generated_line, recorded_args, recorded_commit, write_report  # noqa: E402

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
def level_numbers(model, corpus: Corpus, temperatures: list[float]) -> dict[str, list[float]]:
    """Per modality (lists in MODALITIES order), over the samples where it is present: the run's mean
    weight, its head's accuracy and the oracle's mean weight at each T."""
    out = model.member_outputs(to_batch(corpus))
    probs = torch.softmax(model.network.unimodal_heads(out.mu), dim=-1)  # (E, B, M, C)
    labels = torch.as_tensor(corpus.emotions, dtype=torch.long)
    p_true = probs.gather(-1, labels.view(1, -1, 1, 1).expand(*probs.shape[:-1], 1))[..., 0]  # (E, B, M)
    present = torch.as_tensor(corpus.present, dtype=torch.bool)  # (B, M)

    def present_mean(values: torch.Tensor) -> list[float]:  # (E, B, M) -> M means
        return [float(values[:, present[:, m], m].float().mean()) for m in range(len(MODALITIES))]

    numbers = {"weight": present_mean(out.weights),
               "head_accuracy": present_mean(probs.argmax(-1) == labels.view(1, -1, 1))}
    inverse_error = 1.0 / (1.0 - p_true).clamp(min=ERROR_FLOOR)
    for t in temperatures:
        numbers[f"oracle_T{t:g}"] = present_mean(torch.softmax((inverse_error / t).masked_fill(~present, float("-inf")),
                                                               dim=-1))
    return numbers


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    commit = committed(args.allow_dirty)
    runs = [Path(args.runs_dir) / f"v2-seed{s}" for s in args.seeds]
    if any(recorded_args(r)["model"] != "attention_robust_v2" for r in runs):
        raise SystemExit("every run must be a V2 run (--model attention_robust_v2)")
    trained_at = sorted({recorded_commit(r) for r in runs})
    features = {m: recorded_args(runs[0])[f"{m}_feature"] for m in MODALITIES}
    ladder_dir = Path(args.ladder_dir)
    dataset = load_dataset(ladder_dir / "features", ladder_dir / "label-6way.npz", features)
    ladder = group_ladder(dataset.corpora)
    if not ladder:
        raise SystemExit(f"{ladder_dir} has no ladder corpora: build the benchmark without --no_ladder")
    levels = {m: [None, *mild_to_severe(m, ladder[m])] for m in MODALITIES if m in ladder}
    keys = ["weight", "head_accuracy", *(f"oracle_T{t:g}" for t in args.temperatures)]
    per_run: dict[str, list] = {m: [] for m in levels}
    for run in runs:
        model, _ = load_checkpoint(run / "checkpoint")
        model.eval()
        clean = level_numbers(model, dataset.corpora["test1"], args.temperatures)  # every modality's first point
        for m, points in levels.items():
            index = MODALITIES.index(m)
            numbers = [clean, *(level_numbers(model, ladder[m][v], args.temperatures) for v in points[1:])]
            per_run[m].append([{k: n[k][index] for k in keys} for n in numbers])
        print(f"{run.name}: done", flush=True)

    lines = ["# How far the fusion weights can follow reliability: the ladder with u = each sample's error", "",
             generated_line("oracle_weights.py"), "", commit_line(commit), "",
             f"V2 runs `{args.runs_dir}/v2-seed*` (seeds {args.seeds}, trained at "
             f"{', '.join(f'`{c}`' for c in trained_at)}), ladder `{ladder_dir}`; mean over the seeds. "
             "Each cell: the degraded modality's mean fusion weight (all modalities present) and, in brackets, its "
             "change against the clean test pairs. 'run': the weights V2 gives. 'u = error, T': the weights "
             f"softmax((1 / u) / T) with u = 1 - p(true class) of each modality's unimodal head on that sample "
             f"(label known, floored at {ERROR_FLOOR}): a reference no model can reach, not a model. 'head "
             "accuracy': the degraded modality's head alone. Test corpora; nothing is chosen here. The goal of "
             f"issue #14: wherever the modality alone loses {MIN_LOSS * 100:.0f}+ points, its weight falls "
             f"{MIN_FALL * 100:.0f}%+.", ""]
    data = {"commit": commit, "trained_at": trained_at, "runs": [str(r) for r in runs], "ladder_dir": str(ladder_dir),
            "modalities": {}}
    for m, points in levels.items():
        mean = {k: np.mean([[p[k] for p in run] for run in per_run[m]], axis=0) for k in keys}
        data["modalities"][m] = {"levels": points, **{k: v.tolist() for k, v in mean.items()}}
        lines += [f"**{m}**", "", "| level | head accuracy | run | " + " | ".join(f"u = error, T = {t:g}" for t in
                                                                                   args.temperatures) + " |",
                  "|---" * (3 + len(args.temperatures)) + "|"]
        for i, level in enumerate(points):
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
