"""Time `python -m armer.train` on synthetic MERBench-scale data and record its peak memory.

    python scripts/benchmark_train.py --out results/benchmark_train.json

Scale (MER2023 in MERBench): 3,373 train and 3 x ~410 test samples, feature dims 1024 / 5120 /
768, 100 epochs, 5 folds, batch size 32. Targets on a 2-core CPU: the whole run under 5 minutes,
peak memory (PSS of the training process and its workers together) under 2 GB. Run it on an otherwise
idle machine: the numbers are wall-clock.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from armer.synthetic import write_synthetic_merbench  # noqa: E402
from report_files import git_commit  # noqa: E402  (scripts/)

TARGET_SECONDS = 300
TARGET_PEAK_MB = 2048


def tree_pss_mb(pid: int) -> float:
    """Proportional memory (PSS) of a process and all its descendants, from /proc (Linux).

    PSS splits pages shared between the trainer and its forked workers among them, so the sum
    counts each page once (plain RSS would count the shared ones in every process).
    """
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    total_kb, stack = 0, [pid]
    while stack:
        current = stack.pop()
        stack.extend(children.get(current, []))
        try:
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "results" / "benchmark_train.json"))
    parser.add_argument("--model", default="attention_robust_v2")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--num_folds", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--n_train", type=int, default=3373)
    parser.add_argument("--n_test", type=int, nargs="+", default=[411, 412, 410])
    parser.add_argument("--dims", type=int, nargs=3, default=[1024, 5120, 768])
    parser.add_argument("--device", default="cpu", help="armer.train --device (auto, cpu, cuda, cuda:N)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="armer-bench-") as tmp:
        print(f"writing synthetic data ({args.n_train} train, tests {args.n_test}, dims {args.dims}) ...", flush=True)
        paths = write_synthetic_merbench(Path(tmp) / "data", n_train=args.n_train, n_tests=tuple(args.n_test),
                                         dims=tuple(args.dims), signals={"audio": 0.5, "text": 0.3, "video": 0.2})
        command = [
            sys.executable, "-m", "armer.train", "--model", args.model,
            "--features_root", paths["features_root"], "--label_path", paths["label_path"],
            "--audio_feature", paths["audio_feature"], "--text_feature", paths["text_feature"],
            "--video_feature", paths["video_feature"], "--save_root", str(Path(tmp) / "run"),
            "--epochs", str(args.epochs), "--num_folds", str(args.num_folds), "--batch_size", str(args.batch_size),
            "--device", args.device,
        ]
        print("running:", " ".join(command), flush=True)
        load_before = list(os.getloadavg())  # other work on the machine inflates the wall time
        start = time.perf_counter()
        log_path = Path(tmp) / "train.stderr"
        with open(log_path, "w") as log_file:  # a file, not a pipe: a full pipe would block the workers
            process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log_file)
            peak = 0.0
            while process.poll() is None:
                peak = max(peak, tree_pss_mb(process.pid))
                time.sleep(0.2)
        seconds = time.perf_counter() - start
        if process.returncode != 0:
            sys.exit(f"training failed ({process.returncode}):\n{log_path.read_text()[-3000:]}")
        summary = json.loads((Path(tmp) / "run" / "summary.json").read_text())

    result = {
        "command": "python scripts/benchmark_train.py " + " ".join(sys.argv[1:]),
        "commit": git_commit(),
        "measured": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version(),
                    "load_average_before": load_before, "load_average_after": list(os.getloadavg())},
        "workload": {"model": args.model, "n_train": args.n_train, "n_test": args.n_test, "dims": args.dims,
                     "epochs": args.epochs, "num_folds": args.num_folds, "batch_size": args.batch_size,
                     "device": args.device},
        "wall_seconds": round(seconds, 1),
        "train_seconds_reported": round(summary["seconds"], 1),
        "peak_memory_mb": round(peak, 1),
        "targets": {"wall_seconds": TARGET_SECONDS, "peak_memory_mb": TARGET_PEAK_MB},
        "meets_targets": seconds < TARGET_SECONDS and peak < TARGET_PEAK_MB,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
