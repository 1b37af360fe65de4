"""What the uncertainty calibration learns from: each modality's head on training samples versus
held-out ones, clean and degraded (validation folds and training samples only).

    python scripts/calibration_targets.py --runs_dir runs/experiments --seeds 0 1 2 3 4

The calibration term trains u = mean sigma to predict how wrong a modality's own head is, and it
sees that error on the fold's *training* samples only. Per V2 run and fold member, per modality:
how often the head is right on the member's training samples and on its validation samples, with
the modality clean and swapped for its degraded view (`<feature folder>-DEGRADED`, the training
views of `armer.benchmark build`), and u and the fusion weight on the same samples (every modality
present). If the head is right on degraded training samples as often as on clean ones, the target
never rises and u cannot learn that the degradation matters, whatever it does to held-out samples.
Writes results/calibration_targets.md (and .json). The test split is never read.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from armer.checkpoint import load_checkpoint  # noqa: E402
from armer.config import TrainConfig  # noqa: E402
from armer.constants import MODALITIES  # noqa: E402
from armer.data import load_dataset  # noqa: E402
from armer.evaluate.conditions import gather, to_batch  # noqa: E402
from armer.train.folds import validation_folds  # noqa: E402
from armer.train.loop import padded_index, with_degraded_views, without_views  # noqa: E402
from report_files import generated_line, runs_parser, write_report  # noqa: E402  (scripts/)

SPLITS = ("train", "validation")
QUANTITIES = ("head_accuracy", "u", "weight")


@torch.no_grad()
def member_means(network, batch: dict, index_sets: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Per modality (M,): head accuracy, u and fusion weight, each member on its own samples,
    averaged over the members."""
    index = padded_index(index_sets)
    out = network(gather(batch, index), check_inputs=False)
    right = network.unimodal_heads(out.mu).argmax(dim=-1) == batch["emos"][index].unsqueeze(-1)  # (E, N, M)
    values = {"head_accuracy": right.float(), "u": out.sigma, "weight": out.weights}
    return {name: np.mean([v[e, :len(s)].mean(dim=0).numpy() for e, s in enumerate(index_sets)], axis=0)
            for name, v in values.items()}


def run_rows(run: Path, bench: Path, seed: int) -> dict:
    """{split: {modality: {quantity: [clean, degraded]}}} for one V2 run, on the samples that have
    every modality and every degraded view."""
    model, info = load_checkpoint(run / "checkpoint")
    network = model.network.eval()
    names = {m: info.features[m]["name"] for m in MODALITIES}
    train = load_dataset(bench / "features", bench / "label-6way.npz", names, info.model.feat_type,
                         degraded_views=True).train
    data = to_batch(train)
    usable = np.flatnonzero((train.present & train.degraded_present).all(axis=1))
    val_sets = validation_folds(train.samples, TrainConfig(seed=seed, fold_groups="speaker"))
    fit_sets = [np.setdiff1d(np.arange(len(train.samples)), v) for v in val_sets]
    sets = {"train": [np.intersect1d(s, usable) for s in fit_sets],
            "validation": [np.intersect1d(s, usable) for s in val_sets]}
    rows: dict = {split: {} for split in SPLITS}
    for split in SPLITS:
        clean = member_means(network, without_views(data), sets[split])
        for i, modality in enumerate(MODALITIES):
            swap = torch.zeros_like(data["present"])
            swap[:, i] = True
            degraded = member_means(network, with_degraded_views(data, swap), sets[split])
            rows[split][modality] = {q: [float(clean[q][i]), float(degraded[q][i])] for q in QUANTITIES}
    return rows


def main() -> None:
    args = runs_parser(__doc__.split("\n")[0], "calibration_targets.md").parse_args()
    torch.set_num_threads(2)
    per_seed = []
    for seed in args.seeds:
        per_seed.append({"seed": seed, "rows": run_rows(Path(args.runs_dir) / f"v2-seed{seed}", Path(args.bench_dir), seed)})
        print(f"seed {seed} done", flush=True)

    def cell(split: str, modality: str, quantity: str, which: int) -> str:
        values = [s["rows"][split][modality][quantity][which] for s in per_seed]
        return f"{np.mean(values):.3f} ± {np.std(values):.3f}"

    lines = ["# What the uncertainty calibration learns from (training versus validation samples)", "",
             generated_line(Path(__file__).name), "",
             f"V2 runs `{args.runs_dir}/v2-seed*` (seeds {args.seeds}), benchmark `{args.bench_dir}`; mean ± std over "
             "the seeds of each fold member on its own samples. 'train' = the member's training samples (where the "
             "calibration term computes its target), 'validation' = its held-out speakers. Degraded = that modality "
             "replaced by its degraded training view (speech + noise at -5..10 dB SNR, face blurred x2-x6, 10-50 % "
             "word drop-out), every other modality clean. u = mean sigma of the modality; weight = its fusion weight.",
             "", "| split | modality | head right, clean | head right, degraded | u clean | u degraded "
             "| weight clean | weight degraded |", "|---" * 8 + "|"]
    for split in SPLITS:
        for modality in MODALITIES:
            cells = [cell(split, modality, q, w) for q in QUANTITIES for w in (0, 1)]
            lines.append(f"| {split} | {modality} | " + " | ".join(cells) + " |")
    lines.append("")
    write_report(args.out, lines, per_seed)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
