"""How much better the FER2013 CNN does on faces it trained on than on faces it never saw.

    python scripts/fer_cnn_seen_unseen.py --data ../shared/data

The paired benchmark draws its training faces from FER2013 `Training`; the `fer2013-cnn` backend
trained on most of those images. This measures the CNN's own accuracy (its classifier head, the six
benchmark classes, surprise images left out) on a sample of the images it trained on, on its
held-out 5% of `Training` and on every other usage, and writes results/fer_cnn_seen_unseen.md.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from armer.benchmark.build import face_frames  # noqa: E402
from armer.benchmark.sources import read_fer  # noqa: E402
from armer.extractors import create_extractor  # noqa: E402
from armer.extractors.fer_cnn import training_split  # noqa: E402
from report_files import generated_line, write_report  # noqa: E402  (scripts/)


def accuracy(extractor, fer, indices: np.ndarray) -> float:
    right = 0
    for i in indices:
        probs = extractor.predict_proba(face_frames(fer.images[i]))
        right += max(probs, key=probs.get) == fer.labels[i]
    return right / len(indices)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=os.environ.get("ARMER_DATA", str(ROOT.parent / "shared" / "data")))
    p.add_argument("--per_group", type=int, default=1500, help="images sampled per group (seeded)")
    p.add_argument("--out", default=str(ROOT / "results" / "fer_cnn_seen_unseen.md"))
    args = p.parse_args()
    fer = read_fer(Path(args.data))
    extractor = create_extractor("fer2013-cnn", modality="video")
    extractor.load()
    labelled = fer.labels != ""  # the six benchmark classes
    seen, heldout = training_split(fer.usages)
    groups = {"Training, trained on": seen, "Training, held out": heldout}
    groups.update({u: np.flatnonzero(fer.usages == u) for u in fer.usage_names if u != "Training"})
    rng = np.random.default_rng(0)
    rows = {}
    for name, indices in groups.items():
        indices = indices[labelled[indices]]
        chosen = rng.choice(indices, min(args.per_group, len(indices)), replace=False)
        rows[name] = {"n": int(len(chosen)), "accuracy": accuracy(extractor, fer, chosen)}
        print(name, rows[name], flush=True)
    lines = ["# FER2013 CNN on faces it trained on versus faces it never saw", "",
             generated_line(Path(__file__).name), "",
             "Accuracy of the `fer2013-cnn` backend's own classifier (argmax over its 7 FER classes) on images of "
             "the benchmark's six classes, a seeded sample per group.", "",
             "| images | n | accuracy |", "|---|---|---|"]
    lines += [f"| {name} | {r['n']} | {r['accuracy']:.3f} |" for name, r in rows.items()]
    lines += ["", "The paired benchmark therefore draws its training faces only from the held-out images when "
              "this backend extracts the video (`python -m armer.benchmark build --train_faces auto`).", ""]
    write_report(args.out, lines, rows)


if __name__ == "__main__":
    main()
