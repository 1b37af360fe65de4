"""Why a V2 checkpoint's fusion weight moves (or not) when one modality is degraded.

    python scripts/diagnose_noise_response.py --checkpoint checkpoints --bench_dir ~/.cache/armer/benchmark

On the paired benchmark's clean test pairs (test1) and the pairs with one modality degraded
(test3 speech, test4 text, test5 face), per modality and over the samples that have it in both:
how far the degraded features move (cosine similarity to the clean ones), how sure the modality's
own head is (entropy of the calibration term's unimodal head, in nats) and how often it is right,
sigma (u) and the fusion weight with every modality present; and the per-sample correlation of u
with that entropy on the clean pairs. Writes results/noise_response.md (and .json).
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
from report_files import generated_line, write_report  # noqa: E402  (scripts/)

DEGRADED = {"audio": "test3", "text": "test4", "video": "test5"}


@torch.no_grad()
def modality_view(ensemble, corpus: Corpus) -> dict[str, np.ndarray]:
    """Ensemble-mean u, fusion weights, unimodal-head probabilities and their entropy (nats) for
    every sample, with its modalities as the corpus has them."""
    out = ensemble.member_outputs(to_batch(corpus))  # (E, B, ...)
    probs = torch.softmax(ensemble.network.unimodal_heads(out.mu), dim=-1).mean(dim=0).numpy()  # (B, M, C)
    return {"u": out.sigma.mean(dim=0).numpy(), "weights": out.weights.mean(dim=0).numpy(), "probs": probs,
            "entropy": -(probs * np.log(np.clip(probs, 1e-12, None))).sum(-1)}


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=str(ROOT / "checkpoints"))
    p.add_argument("--bench_dir", default=str(Path.home() / ".cache" / "armer" / "benchmark"))
    p.add_argument("--out", default=str(ROOT / "results" / "noise_response.md"))
    args = p.parse_args()
    ensemble, info = load_checkpoint(args.checkpoint)
    if info.model.model != "attention_robust_v2" or not info.model.use_vae:
        raise SystemExit("error: needs a V2 checkpoint with variational encoders (it reads sigma and the unimodal heads)")
    bench = Path(args.bench_dir)
    names = {m: info.features[m]["name"] for m in MODALITIES}
    data = load_dataset(bench / "features", bench / "label-6way.npz", names, info.model.feat_type)
    clean = data.tests["test1"]
    clean_view = modality_view(ensemble, clean)
    rows = {}
    for i, m in enumerate(MODALITIES):
        noised = data.tests[DEGRADED[m]]
        view = modality_view(ensemble, noised)
        both = clean.present[:, i] & noised.present[:, i]
        stats = {label: {"head_entropy": float(v["entropy"][both, i].mean()),
                         "head_accuracy": float((v["probs"][both, i].argmax(-1) == clean.emotions[both]).mean()),
                         "u": float(v["u"][both, i].mean()), "weight": float(v["weights"][both, i].mean())}
                 for label, v in (("clean", clean_view), ("degraded", view))}
        rows[m] = {"corpus": DEGRADED[m], "n": int(both.sum()),
                   "feature_cosine_median": float(np.median(cosine(clean.features[i][both], noised.features[i][both]))),
                   "corr_u_entropy_clean": float(np.corrcoef(clean_view["u"][both, i], clean_view["entropy"][both, i])[0, 1]),
                   **stats,
                   "lost": int((clean.present[:, i] & ~noised.present[:, i]).sum())}
    lines = ["# How a V2 checkpoint's sigma and fusion weights respond to one degraded modality", "",
             generated_line(Path(__file__).name), "",
             f"Checkpoint `{args.checkpoint}`; benchmark `{args.bench_dir}`. Every modality present; over the test pairs "
             "that have the modality in both corpora. Head = the modality's own (unimodal) head, ensemble-averaged.", "",
             "| modality | degraded corpus | n | median feature cosine clean/degraded | head entropy clean -> degraded (nats) "
             "| head accuracy clean -> degraded | u clean -> degraded | weight clean -> degraded "
             "| corr(u, head entropy), clean |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m, r in rows.items():
        c, d = r["clean"], r["degraded"]
        lines.append(f"| {m} | {r['corpus']} | {r['n']} | {r['feature_cosine_median']:.3f} | "
                     f"{c['head_entropy']:.3f} -> {d['head_entropy']:.3f} | {c['head_accuracy']:.3f} -> {d['head_accuracy']:.3f} | "
                     f"{c['u']:.4f} -> {d['u']:.4f} | {c['weight']:.4f} -> {d['weight']:.4f} | {r['corr_u_entropy_clean']:.2f} |")
    lost = {m: r["lost"] for m, r in rows.items() if r["lost"]}
    if lost:
        lines += ["", f"Samples whose degraded input became empty (missing, not counted above): {lost}."]
    lines.append("")
    write_report(args.out, lines, rows)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
