"""Throughput of the extraction CLI, batched versus one clip at a time: results/benchmark_extraction.{md,json}.

    python scripts/benchmark_extraction.py [--n 200] [--batch_size 8] [--decode_workers 1] [--rounds 2]

N different ten-second clips (a face and speech; `ten_second_clips` of scripts/benchmark_demo.py) go
through `python -m armer.extractors` with the offline defaults (Whisper-base audio and transcription,
MiniLM text, FER2013 CNN faces) twice: one clip at a time (`--batch_size 1 --decode_workers 0`, what
the CLI did before batching) and batched (`--batch_size B --decode_workers K`). Recorded per mode:
clips/s over the whole run (model loading included) and in the steady state (from the first batch
written to the last clip, read off extract_log.jsonl while the run goes), the CPU seconds per clip of the
process tree, and its peak memory (the RSS of the CLI and its decode workers, summed, sampled every
0.1 s). The clips are split into `--rounds` parts and each part is run in both modes, the order
alternating, so that the load of other jobs on a shared machine falls on both modes alike (the load
averages are recorded). The features of the two modes are compared (they must agree within 1e-4).
Goal (issue #15 item 2): at least 2x the throughput on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from benchmark_demo import ten_second_clips  # noqa: E402  (scripts/)
from report_files import generated_line, git_commit, write_report  # noqa: E402

GOAL = 2.0  # batched clips/s over one-at-a-time clips/s
DEFAULT_N = 200
ONE_AT_A_TIME = ["--batch_size", "1", "--decode_workers", "0"]
CLIP = "10 s, 256x256 at 10 fps, speech (espeak-ng) and a face (scripts/benchmark_demo.py)"


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_cli(clips: Path, out: Path, flags: list[str], batch: int) -> dict:
    """One CLI run over the clips in ``clips``: wall time, steady-state rate (from the first ``batch``
    clips written to the last), CPU time and peak tree RSS."""
    shutil.rmtree(out, ignore_errors=True)
    log = out / "extract_log.jsonl"
    cmd = [sys.executable, "-m", "armer.extractors", str(clips), "--out", str(out), *flags]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True)
    reader.start()
    peak, written = 0, []  # written: (seconds since start, records in the log) whenever the count changes
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        if log.exists():
            count = log.read_bytes().count(b"\n")
            if not written or count != written[-1][1]:
                written.append((time.perf_counter() - start, count))
        time.sleep(0.1)
    wall = time.perf_counter() - start
    reader.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {''.join(stderr)[-3000:]}")
    n = log.read_bytes().count(b"\n")
    if not written or written[-1][1] != n:
        written.append((wall, n))
    (t0, n0), (t1, n1) = next((w for w in written if w[1] >= min(batch, n)), written[0]), written[-1]
    return {"clips": n, "wall_s": round(wall, 2), "first_written_s": round(t0, 2),
            "steady_clips": n1 - n0, "steady_s": round(t1 - t0, 2),
            "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2),
            "peak_rss_mb": round(peak / 2**20, 1), "load_before": [round(x, 2) for x in load],
            "load_after": [round(x, 2) for x in os.getloadavg()]}


def compare(a: Path, b: Path) -> dict:
    """The largest difference between the feature files of two runs, per folder."""
    out = {}
    for folder in sorted(p for p in a.iterdir() if p.is_dir()):
        files = sorted(folder.glob("*.npy"))
        other = b / folder.name
        missing = [f.name for f in files if not (other / f.name).is_file()]
        if missing or len(files) != len(list(other.glob("*.npy"))):
            raise SystemExit(f"{folder.name}: the two runs wrote different files ({missing[:5]} ...)")
        out[folder.name] = float(max(np.abs(np.load(f) - np.load(other / f.name)).max() for f in files))
    return out


def stage_profile(clips: list[Path]) -> dict:
    """CPU seconds per clip of each stage, one clip at a time and as one batch of all ``clips``, in this
    process (the CLI's steps without the files and the pipeline around them)."""
    from armer.extractors import DEFAULT_EXTRACTORS, create_extractor, crop_faces, load_media

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def timed(out: dict, name: str, work):
        start = cpu()
        value = work()
        out[name] = round((cpu() - start) / len(clips), 3)
        return value

    audio, text, video = (create_extractor(DEFAULT_EXTRACTORS[m], modality=m).load()
                          for m in ("audio", "text", "video"))
    one: dict[str, float] = {}
    media = timed(one, "decode", lambda: [load_media(c) for c in clips])
    crops = timed(one, "faces", lambda: [crop_faces(m.frames)[0] for m in media])
    wavs = [m.audio for m in media]
    batch = {"decode": one["decode"], "faces": one["faces"]}  # the same work either way (in workers when batched)
    audio.extract(wavs[0]), text.extract("A first pass."), video.extract(crops[0])  # warm-up, not timed

    encode = transcribe = 0.0
    said = []
    for x in wavs:  # per clip: the encoder, then the transcription from its outputs (as the CLI does)
        audio._encoded.clear()
        start = cpu()
        audio.extract(x)
        middle = cpu()
        said.append(audio.transcribe(x))
        encode, transcribe = encode + middle - start, transcribe + cpu() - middle
    one["whisper encoder"], one["transcription"] = round(encode / len(clips), 3), round(transcribe / len(clips), 3)
    timed(one, "MiniLM", lambda: [text.extract(t) for t in said])
    timed(one, "FER2013 CNN", lambda: [video.extract(c) for c in crops])
    audio._encoded.clear()
    timed(batch, "whisper encoder", lambda: audio.extract_batch(wavs))
    timed(batch, "transcription", lambda: audio.transcribe_batch(wavs))
    timed(batch, "MiniLM", lambda: text.extract_batch(said))
    timed(batch, "FER2013 CNN", lambda: video.extract_batch(crops))
    return {"clips": len(clips), "one_at_a_time": one, "batched": batch,
            "total": {"one_at_a_time": round(sum(one.values()), 3), "batched": round(sum(batch.values()), 3)}}


def summarise(runs: list[dict]) -> dict:
    clips = sum(r["clips"] for r in runs)
    wall = sum(r["wall_s"] for r in runs)
    steady_clips, steady_s = sum(r["steady_clips"] for r in runs), sum(r["steady_s"] for r in runs)
    return {"clips": clips, "wall_s": round(wall, 1), "clips_per_s": round(clips / wall, 4),
            "steady_clips_per_s": round(steady_clips / steady_s, 4) if steady_s > 0 else None,
            "cpu_s_per_clip": round(sum(r["cpu_s"] for r in runs) / clips, 3),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs), "runs": runs}


def main(argv: list[str] | None = None) -> int:
    from armer.extractors.__main__ import DEFAULT_BATCH, DEFAULT_WORKERS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=DEFAULT_N, help=f"ten-second clips (default {DEFAULT_N})")
    p.add_argument("--batch_size", type=int, default=DEFAULT_BATCH)
    p.add_argument("--decode_workers", type=int, default=DEFAULT_WORKERS)
    p.add_argument("--rounds", type=int, default=2, help="parts of the clips, each run in both modes (default 2)")
    p.add_argument("--clips", default=None, help="folder for the generated clips (default: a temporary folder)")
    p.add_argument("--out", default=str(ROOT / "results" / "benchmark_extraction.md"))
    args = p.parse_args(argv)
    if args.n < args.rounds or args.rounds < 1:
        raise SystemExit("need --n >= --rounds >= 1")
    batched = ["--batch_size", str(args.batch_size), "--decode_workers", str(args.decode_workers)]
    work = Path(tempfile.mkdtemp(prefix="armer-bench-extract-"))
    clip_dir = Path(args.clips) if args.clips else work / "clips"
    clip_dir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    existing = sorted(clip_dir.glob("clip10s_*.mp4"))
    clips = existing if len(existing) == args.n else ten_second_clips(clip_dir, args.n)
    print(f"{len(clips)} clips in {clip_dir} ({time.perf_counter() - t:.0f} s)", flush=True)
    profile = stage_profile(clips[:args.batch_size])
    print(f"CPU seconds per clip by stage: {profile}", flush=True)
    modes = {"one_at_a_time": ONE_AT_A_TIME, "batched": batched}
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    diffs: dict[str, float] = {}
    for r, part in enumerate(np.array_split(np.arange(args.n), args.rounds)):
        part_dir = work / f"part{r}"
        part_dir.mkdir()
        for i in part:
            os.symlink(clips[i].resolve(), part_dir / clips[i].name)
        order = list(modes) if r % 2 == 0 else list(modes)[::-1]
        for mode in order:
            result = run_cli(part_dir, work / f"out-{mode}-{r}", modes[mode], int(modes[mode][1]))
            runs[mode].append(result)
            print(f"round {r + 1}/{args.rounds} {mode}: {result}", flush=True)
        for folder, d in compare(work / f"out-one_at_a_time-{r}", work / f"out-batched-{r}").items():
            diffs[folder] = max(diffs.get(folder, 0.0), d)
    summary = {m: summarise(v) for m, v in runs.items()}
    one, many = summary["one_at_a_time"], summary["batched"]
    speedup = many["clips_per_s"] / one["clips_per_s"]
    steady = many["steady_clips_per_s"] / one["steady_clips_per_s"] \
        if many["steady_clips_per_s"] and one["steady_clips_per_s"] else None
    # the best batching can do on these cores: every core busy at the batched CPU cost per clip
    ceiling = os.cpu_count() / many["cpu_s_per_clip"] / one["clips_per_s"]
    data = {"commit": git_commit(), "generated": generated_line("benchmark_extraction.py"),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
            "n_clips": args.n, "clip": CLIP, "rounds": args.rounds, "flags": {m: " ".join(f) for m, f in modes.items()},
            "modes": summary, "speedup": round(speedup, 3), "steady_speedup": round(steady, 3) if steady else None,
            "goal": GOAL, "goal_met": speedup >= GOAL, "ceiling_speedup": round(ceiling, 3),
            "max_abs_feature_difference": diffs,
            "stage_cpu_s_per_clip": profile}
    lines = report(data)
    write_report(args.out, lines, data)
    print("\n".join(lines))
    shutil.rmtree(work, ignore_errors=True)
    return 0


def report(data: dict) -> list[str]:
    """The Markdown report of ``data``."""
    n, summary, profile = data["n_clips"], data["modes"], data["stage_cpu_s_per_clip"]
    lines = ["# Extraction throughput: batched versus one clip at a time", "", data["generated"], ""]
    if n != DEFAULT_N:
        lines += [f"N = {n} clips, not the default {DEFAULT_N}: a run of the default takes too long on this machine "
                  "while other jobs share it.", ""]
    lines += [
        f"Commit {data['commit']}; {data['machine']['cpus']} CPUs ({data['machine']['platform']}). {n} ten-second "
        f"clips ({data['clip']}), offline defaults (Whisper-base audio and transcription, MiniLM text, FER2013 CNN), "
        f"split into {data['rounds']} parts, each part run in both modes (the order alternating).", "",
        "| mode | CLI flags | clips/s (whole run) | clips/s (steady state) | CPU s per clip | peak RSS, MB |",
        "|---|---|---|---|---|---|",
    ]
    for m, s in summary.items():
        steady = f"{s['steady_clips_per_s']:.3f}" if s["steady_clips_per_s"] else "-"
        lines.append(f"| {m.replace('_', ' ')} | `{data['flags'][m]}` | {s['clips_per_s']:.3f} | {steady} | "
                     f"{s['cpu_s_per_clip']:.2f} | {s['peak_rss_mb']:.0f} |")
    verdict = "**met**" if data["goal_met"] else "**missed**"
    steady = f", {data['steady_speedup']:.2f}x in the steady state" if data["steady_speedup"] else ""
    stages = ", ".join(f"{k} {profile['one_at_a_time'][k]:.2f} -> {profile['batched'][k]:.2f}"
                       for k in profile["one_at_a_time"])
    loads = "; ".join(f"{m.replace('_', ' ')} {[r['load_before'] for r in s['runs']]}" for m, s in summary.items())
    lines += [
        "",
        f"Speed-up: **{data['speedup']:.2f}x** over the whole runs (model loading included){steady}. Goal: at least "
        f"{GOAL:g}x on 2 cores: {verdict}.",
        "",
        f"The ceiling on this machine: one clip at a time already keeps "
        f"{summary['one_at_a_time']['cpu_s_per_clip'] * summary['one_at_a_time']['clips_per_s']:.2f} of its "
        f"{data['machine']['cpus']} cores busy (CPU s per clip x clips/s: the encoders use several threads), so with "
        f"every core busy at the batched CPU cost per clip the best possible rate is "
        f"{data['machine']['cpus']} / {summary['batched']['cpu_s_per_clip']:.2f} clips/s: at most "
        f"**{data['ceiling_speedup']:.2f}x** the one-at-a-time rate. Only less work per clip could reach {GOAL:g}x.",
        "",
        "Clips/s (steady state): from the first batch written to the last clip. CPU s per clip: the CLI's process "
        "tree (decode workers included), model loading included. Peak RSS: the CLI and its decode workers, summed.",
        "",
        f"CPU seconds per clip by stage, one at a time -> batched ({profile['clips']} clips in one process, "
        f"`stage_cpu_s_per_clip` in the JSON): {stages}; total {profile['total']['one_at_a_time']:.2f} -> "
        f"{profile['total']['batched']:.2f}. Decoding and face crops do not batch (the decode workers run them beside "
        "the models), and the Whisper encoder gets no cheaper in batches on the CPU (every window is a full 30 s, "
        "1500 x 1500 attention per head), so most of a clip's CPU time stays: the speed-up comes from transcribing, "
        "and running MiniLM and the FER CNN, over many clips a pass, and from keeping both cores busy.",
        "",
        "Largest difference between the two modes' features (each must be within 1e-4): "
        + ", ".join(f"{k} {v:.2g}" for k, v in data["max_abs_feature_difference"].items()) + ".",
        "",
        f"Load averages (1, 5, 15 min) as each run started: {loads}. Other jobs share this machine: wall-clock rates "
        "move with the load, CPU seconds much less.",
        "",
    ]
    return lines


if __name__ == "__main__":
    sys.exit(main())
