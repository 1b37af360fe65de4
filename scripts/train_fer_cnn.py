"""Train the offline face-expression encoder (extractors.fer_cnn.FerCNN) on FER2013.

Trains on the ``Training`` usage of ``<data>/fer2013/fer2013.npz`` (minus a fixed 5%
validation split that only picks the inference crop), then reports 7-class accuracy on
every other usage found in the file (``PublicTest`` here). Writes the weights
(``model.safetensors`` + ``config.json``, whose ``training`` list records every command that
trained them) to ``--out`` and the numbers, with those commands, to ``--results``.

The shipped checkpoint was trained in three one-cycle phases, each continuing the last (the
third kept because it raised validation accuracy):

    python scripts/train_fer_cnn.py --epochs 15
    python scripts/train_fer_cnn.py --data ../shared/data --init extractors/weights/fer_cnn --epochs 8 --lr 0.02 --seed 1
    python scripts/train_fer_cnn.py --data ../shared/data --init extractors/weights/fer_cnn --epochs 10 --lr 0.01 --seed 2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from armer.extractors.fer_cnn import FER_CLASSES, FerCNN, FerCNNConfig, training_split  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("ARMER_DATA", str(ROOT.parent / "shared" / "data")),
                   help="data root holding fer2013/fer2013.npz (default: $ARMER_DATA or ../shared/data)")
    p.add_argument("--out", default=str(ROOT / "extractors" / "weights" / "fer_cnn"), help="output folder for the weights")
    p.add_argument("--results", default=str(ROOT / "results" / "fer_cnn.md"), help="results markdown file")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1, help="peak learning rate of the one-cycle schedule (SGD)")
    p.add_argument("--weight_decay", type=float, default=5e-4)
    p.add_argument("--label_smoothing", type=float, default=0.1)
    p.add_argument("--widths", type=int, nargs="+", default=list(FerCNNConfig.widths))
    p.add_argument("--init", help="continue training the checkpoint in this folder (its config wins over --widths)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="training randomness (the validation split is fixed)")
    p.add_argument("--limit", type=int, default=0, help="use only this many training images (smoke runs)")
    return p.parse_args()


def augment(x: torch.Tensor, crop: int, gen: torch.Generator) -> torch.Tensor:
    """Random crop + rotation + scale + shift + horizontal flip in one affine resampling.

    x: (B, 1, S, S) in [0, 1] -> (B, 1, crop, crop).
    """
    b, _, s, _ = x.shape
    angle = (torch.rand(b, generator=gen) * 2 - 1) * math.radians(12)
    scale = (crop / s) * (1 + (torch.rand(b, generator=gen) * 2 - 1) * 0.12)
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    shift = (torch.rand(b, 2, generator=gen) * 2 - 1) * (1 - crop / s)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1),
                         torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta, (b, 1, crop, crop), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # brightness / contrast jitter
    out = (out - 0.5) * (1 + (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * 0.25) + 0.5
    out = out + (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * 0.1
    return out.clamp(0, 1)


def center_crop(x: torch.Tensor, crop: int) -> torch.Tensor:
    s = x.shape[-1]
    o = (s - crop) // 2
    return x[..., o:o + crop, o:o + crop]


@torch.no_grad()
def predict(model: FerCNN, images: np.ndarray, crop: int, batch: int = 512) -> np.ndarray:
    """Class probabilities averaged over the image and its mirror: (N, 48, 48) uint8 -> (N, C)."""
    model.eval()
    cfg = model.config
    probs = []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(images[i:i + batch]).float().div(255).unsqueeze(1)
        x = (center_crop(x, crop) - cfg.mean) / cfg.std
        p = model(x).softmax(-1) + model(x.flip(-1)).softmax(-1)
        probs.append((p / 2).numpy())
    return np.concatenate(probs)


def phase_row(phase: int, h: dict) -> str:
    cpu = "" if h.get("cpu_s") is None else f"{h['cpu_s'] / 60:.1f}"
    return (f"| {phase} | {h['epochs']} | {h['peak_lr']} | {h['wall_s'] / 60:.1f} | {cpu} | "
            f"{h.get('load_avg_5min') or ''} | {h['final_val_acc']:.4f} |")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    npz = Path(args.data) / "fer2013" / "fer2013.npz"
    data = np.load(npz)
    images, labels, usage = data["images"], data["label"], data["usage"]
    cls_index = {c: i for i, c in enumerate(FER_CLASSES)}
    y_all = np.array([cls_index[str(c)] for c in labels])

    train_idx, val_idx = training_split(usage)
    n_val = len(val_idx)
    if args.limit:
        train_idx = train_idx[:args.limit]
    x_train = torch.from_numpy(images[train_idx]).float().div(255).unsqueeze(1)  # (N, 1, 48, 48)
    y_train = torch.from_numpy(y_all[train_idx])

    history: list[dict] = []
    if args.init:
        config = FerCNNConfig.from_json(Path(args.init) / "config.json")
        history = json.loads((Path(args.init) / "config.json").read_text()).get("training", [])
        config.image_size = FerCNNConfig.image_size  # picked again on the validation split below
        model = FerCNN(config)
        model.load_state_dict(load_file(str(Path(args.init) / "model.safetensors")))
    else:
        config = FerCNNConfig(widths=tuple(args.widths))
        model = FerCNN(config)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(train_idx) / args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch,
                                                pct_start=0.2)
    log = []
    t0, cpu0 = time.time(), time.process_time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(train_idx), generator=gen)
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(0, len(perm), args.batch_size):
            idx = perm[i:i + args.batch_size]
            x = augment(x_train[idx], config.train_crop, gen)
            x = ((x - config.mean) / config.std).contiguous(memory_format=torch.channels_last)
            logits = model(x)
            loss = F.cross_entropy(logits, y_train[idx], label_smoothing=args.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(-1) == y_train[idx]).sum().item()
            total += len(idx)
        val_acc = float((predict(model, images[val_idx], config.image_size).argmax(-1) == y_all[val_idx]).mean())
        row = {"epoch": epoch + 1, "train_loss": loss_sum / total, "train_acc": correct / total,
               "val_acc": val_acc, "elapsed_s": time.time() - t0}
        log.append(row)
        print(json.dumps(row), flush=True)
    train_seconds, cpu_seconds = time.time() - t0, time.process_time() - cpu0
    load = os.getloadavg()[1]  # other work on the machine stretches the wall time, not the CPU time

    # The inference crop is picked on the validation split, never on a test usage.
    crop_acc = {crop: float((predict(model, images[val_idx], crop).argmax(-1) == y_all[val_idx]).mean())
                for crop in (config.image_size, config.train_crop)}
    best_crop = max(crop_acc, key=lambda c: (crop_acc[c], c))
    config.image_size = best_crop

    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, ROOT), *sys.argv[1:]])
    history.append({"command": command, "epochs": args.epochs, "peak_lr": args.lr, "wall_s": round(train_seconds),
                    "cpu_s": round(cpu_seconds), "load_avg_5min": round(load, 1), "final_val_acc": log[-1]["val_acc"]})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = model.to(memory_format=torch.contiguous_format)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps({**config.to_dict(), "training": history}, indent=2) + "\n")

    tests = {}
    for name in sorted(set(map(str, usage)) - {"Training"}):
        idx = np.flatnonzero(usage == name)
        pred = predict(model, images[idx], best_crop).argmax(-1)
        y = y_all[idx]
        conf = np.zeros((len(FER_CLASSES), len(FER_CLASSES)), dtype=int)
        np.add.at(conf, (y, pred), 1)
        recall = {c: float(conf[i, i] / max(conf[i].sum(), 1)) for i, c in enumerate(FER_CLASSES)}
        tests[name] = {"n": int(len(idx)), "accuracy": float((pred == y).mean()), "per_class_recall": recall,
                       "confusion": conf.tolist()}

    n_params = sum(p.numel() for p in model.parameters())
    lines = [
        "# FER2013 face-expression CNN (offline visual backend `fer2013-cnn`)", "",
        "Commands, in order (each phase continues the previous one's weights):", "",
        *[f"{i + 1}. `{h['command']}`" for i, h in enumerate(history)], "",
        f"- training images: {len(train_idx)} (FER2013 `Training` minus a fixed 5% validation split of {n_val})",
        f"- model: {n_params:,} parameters, widths {list(config.widths)}, feature dim {config.widths[-1]}",
        f"- {sum(h['epochs'] for h in history)} epochs in all; {args.threads} CPU threads", "",
        "| phase | epochs | peak lr | wall min | CPU min | machine load (5 min avg) | final val acc |",
        "|---|---|---|---|---|---|---|",
        *[phase_row(i + 1, h) for i, h in enumerate(history)], "",
        "Wall time grows with other work on the shared 2-core machine; CPU time does not.", "",
        f"- inference crop chosen on the validation split: {best_crop}px (val accuracy {crop_acc})",
        "- test-time: probabilities averaged over the face and its mirror image", "",
        "| usage | n | 7-class accuracy |", "|---|---|---|",
    ]
    lines += [f"| {k} | {v['n']} | {v['accuracy']:.4f} |" for k, v in tests.items()]
    for k, v in tests.items():
        recall = ", ".join(f"{c} {r:.2f}" for c, r in v["per_class_recall"].items())
        lines += ["", f"Per-class recall on {k}: {recall}"]
    lines += ["", f"Per epoch of the last phase ({len(history)}):", "",
              "| epoch | train loss | train acc | val acc | elapsed s |", "|---|---|---|---|---|"]
    lines += [f"| {r['epoch']} | {r['train_loss']:.4f} | {r['train_acc']:.4f} | {r['val_acc']:.4f} | "
              f"{r['elapsed_s']:.0f} |" for r in log]
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text("\n".join(lines) + "\n")
    Path(args.results).with_suffix(".json").write_text(json.dumps(
        {"commands": [h["command"] for h in history], "training": history, "tests": tests,
         "val_crop_accuracy": crop_acc, "log": log, "n_params": n_params}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
