"""The device checks of scripts/gpu_check.sh: each command with `--device cpu` and `--device DEVICE` on
the same inputs, how long each took and how close the outputs are, written as one JSON file.

    python scripts/gpu_check.py --device cuda --out results/gpu_check.json
    python scripts/gpu_check.py --device cpu --out /tmp/gpu_check.json     # the script itself, on a CPU

Sections (each recorded with its error, if any, the others still run):
  extraction   python -m armer.extractors on examples/ (the offline backends: Whisper-base through
               CTranslate2, MiniLM, the FER CNN): per-step seconds and per-feature cosine / max abs diff
  hf_half      the Hugging Face recipes (HuBERT-style audio, transformers CLIP, open_clip, a text
               encoder) on tiny random models: float32 on the CPU against DEVICE with and without
               float16 autocast; with $ARMER_WEIGHTS holding chinese-hubert-large or
               clip-vit-large-patch14 (open_clip_model.safetensors), on those real weights too
  predict      python -m armer.predict on examples/astronaut_talking.mp4 with the checkpoints/ demo model
  evaluate     python -m armer.evaluate of an untrained 5-member checkpoint on synthetic MER2023-sized data
  checkpoint   a checkpoint loaded on DEVICE, saved from there, loaded on the CPU: the same outputs
The commit is `git rev-parse HEAD` (+uncommitted changes), or $ARMER_COMMIT in a copy without .git.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub access: fail at once rather than retry (before any HF import)
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from armer.device import resolve_device  # noqa: E402
from report_files import git_commit  # noqa: E402  (scripts/)

MIN_COSINE = 0.99  # a feature on DEVICE against the CPU's
MAX_PROBABILITY_DIFF = 0.02  # predict: per class
MAX_METRIC_DIFF = 0.01  # evaluate: WAF, accuracy, ... per condition
CLIP = ROOT / "examples" / "astronaut_talking.mp4"


def closeness(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """How close b (DEVICE) is to a (CPU): cosine similarity, max abs and max relative difference."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return {"cosine": float(a @ b / norm) if norm else float(np.array_equal(a, b)),
            "max_abs_diff": float(np.abs(a - b).max()), "max_abs_cpu": float(np.abs(a).max()),
            "finite": bool(np.isfinite(b).all())}


def worst(pairs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    cosines = [p["cosine"] for p in pairs.values()]
    return {"min_cosine": min(cosines), "all_finite": all(p["finite"] for p in pairs.values()),
            "passed": min(cosines) >= MIN_COSINE and all(p["finite"] for p in pairs.values())}


def run_module(module: str, *args: str, env: dict[str, str] | None = None) -> tuple[float, str]:
    """(wall seconds, stdout) of `python -m module args`; a failure raises with stderr's tail."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"python -m {module} {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return round(seconds, 2), proc.stdout


def machine(device: str) -> dict[str, Any]:
    import ctranslate2
    import torch

    info = {"python": platform.python_version(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
            "ctranslate2": ctranslate2.__version__, "ctranslate2_cuda_devices": ctranslate2.get_cuda_device_count()}
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        props = torch.cuda.get_device_properties(resolved)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1),
                    compute_capability=f"{props.major}.{props.minor}",
                    tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32)
    return info


# --- sections --------------------------------------------------------------------------------------

def step_seconds(out: Path) -> dict[str, float]:
    """The extraction steps' seconds summed over the clips of extract_log.jsonl."""
    total: dict[str, float] = {}
    for line in (out / "extract_log.jsonl").read_text().splitlines():
        for step, seconds in json.loads(line)["timings"].items():
            total[step] = round(total.get(step, 0.0) + seconds, 3)
    return total


def extraction(device: str, tmp: Path) -> dict[str, Any]:
    runs = {}
    for dev in ("cpu", device):
        out = tmp / f"extract-{dev.replace(':', '')}"
        seconds, _ = run_module("armer.extractors", str(ROOT / "examples"), "--out", str(out), "--device", dev)
        runs[dev] = {"out": out, "wall_seconds": seconds, "step_seconds": step_seconds(out)}
    cpu, dev = runs["cpu"]["out"], runs[device]["out"]
    features = {f"{p.parent.name}/{p.name}": closeness(np.load(p), np.load(dev / p.relative_to(cpu)))
                for p in sorted(cpu.glob("*-UTT/*.npy"))}

    def transcripts(out: Path) -> dict[str, str]:
        with open(out / "transcripts.csv", newline="", encoding="utf-8") as f:
            return {row["name"]: row["transcript"] for row in csv.DictReader(f)}

    return {"command": f"python -m armer.extractors examples/ --out OUT --device cpu|{device}",
            "seconds": {d: {k: v for k, v in r.items() if k != "out"} for d, r in runs.items()},
            "features": features, "transcripts": {"cpu": transcripts(cpu), device: transcripts(dev)},
            **worst(features)}


def tiny_models(root: Path) -> dict[str, Path]:
    """Random-weight HuBERT, transformers CLIP, BERT and an open_clip file (the tests' tiny models)."""
    import open_clip
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import (BertConfig, BertModel, CLIPConfig, CLIPImageProcessor, CLIPModel, HubertConfig,
                              HubertModel, PreTrainedTokenizerFast, Wav2Vec2FeatureExtractor)

    torch.manual_seed(0)
    hubert = HubertConfig(hidden_size=32, num_hidden_layers=5, num_attention_heads=2, intermediate_size=64,
                          conv_dim=(16,) * 4, conv_stride=(5, 4, 4, 4), conv_kernel=(10, 4, 4, 4),
                          num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, vocab_size=10)
    HubertModel(hubert).save_pretrained(root / "hubert")
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(root / "hubert")
    text = dict(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=16, bos_token_id=0, eos_token_id=1)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                  patch_size=8)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(root / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(root / "clip")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", *"i am so happy to see you".split()]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    BertModel(BertConfig(vocab_size=len(words), hidden_size=32, intermediate_size=64, num_hidden_layers=5,
                         num_attention_heads=2, max_position_embeddings=64)).save_pretrained(root / "bert")
    PreTrainedTokenizerFast(tokenizer_object=tok, cls_token="[CLS]", sep_token="[SEP]", unk_token="[UNK]",
                            pad_token="[PAD]").save_pretrained(root / "bert")
    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
           "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}}
    (root / "tiny-gpu-check-clip.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(root / "tiny-gpu-check-clip.json")
    model, _, _ = open_clip.create_model_and_transforms("tiny-gpu-check-clip", pretrained=None)
    torch.save(model.state_dict(), root / "open_clip.pt")
    return {"hubert": root / "hubert", "clip": root / "clip", "bert": root / "bert", "open_clip": root / "open_clip.pt"}


def hf_half(device: str, tmp: Path) -> dict[str, Any]:
    from armer.extractors import MissingWeightsError, create_extractor
    from armer.extractors.media import load_media

    media = load_media(CLIP, max_frames=8)
    wav, frames = media.audio, media.frames
    models = tiny_models(tmp / "tiny")
    backends: dict[str, tuple[Callable[..., Any], Any]] = {
        "tiny-hubert": (lambda **kw: create_extractor(str(models["hubert"]), **kw), wav),
        "tiny-transformers-clip": (lambda **kw: create_extractor(str(models["clip"]), **kw), frames),
        "tiny-open-clip": (lambda **kw: create_extractor("clip-vit-large-patch14", model_name="tiny-gpu-check-clip",
                                                         pretrained=str(models["open_clip"]), dim=None, **kw), frames),
        "tiny-bert (text: float32 unless half=True)": (lambda **kw: create_extractor(str(models["bert"]), **kw),
                                                       "i am so happy to see you"),
        "chinese-hubert-large": (lambda **kw: create_extractor("chinese-hubert-large", local_files_only=True, **kw), wav),
        "clip-vit-large-patch14": (lambda **kw: create_extractor("clip-vit-large-patch14", **kw), frames),
    }
    out: dict[str, Any] = {}
    for name, (make, x) in backends.items():
        try:
            cpu = make().extract(x)
        except MissingWeightsError as err:
            out[name] = f"skipped: {str(err).split('. ')[0]}"
            continue
        entry = {}
        for label, kw in (("default", {}), ("half=False", {"half": False}), ("half=True", {"half": True})):
            ext = make(device=device, **kw)
            start = time.perf_counter()
            vec = ext.extract(x)
            entry[label] = {**closeness(cpu, vec), "half": ext.half, "seconds_first_call": round(time.perf_counter() - start, 3)}
        out[name] = entry
    compared = {f"{n}/{k}": v for n, e in out.items() if isinstance(e, dict) for k, v in e.items()}
    return {"backends": out, **worst(compared)}


def predict(device: str, tmp: Path) -> dict[str, Any]:
    runs = {}
    for dev in ("cpu", device):
        seconds, stdout = run_module("armer.predict", str(CLIP), "--device", dev)
        runs[dev] = {"wall_seconds": seconds, **json.loads(stdout)}
    cpu, dev = runs["cpu"], runs[device]
    diff = max(abs(cpu["probabilities"][k] - dev["probabilities"][k]) for k in cpu["probabilities"])
    return {"command": f"python -m armer.predict examples/astronaut_talking.mp4 --device cpu|{device}",
            "max_probability_diff": diff, "same_top": cpu["top"] == dev["top"],
            "same_transcript": cpu["transcript"] == dev["transcript"],
            "weights": {"cpu": cpu["weights"], device: dev["weights"]},
            "timings": {"cpu": cpu["timings"], device: dev["timings"]},
            "wall_seconds": {"cpu": cpu["wall_seconds"], device: dev["wall_seconds"]},
            "passed": diff <= MAX_PROBABILITY_DIFF}


def untrained_checkpoint(directory: Path, tree: dict[str, str], dims: tuple[int, int, int]) -> None:
    import torch

    from armer.checkpoint import CheckpointInfo, save_checkpoint
    from armer.config import ModelConfig
    from armer.constants import MODALITIES
    from armer.model import Ensemble, create_model

    torch.manual_seed(0)
    config = ModelConfig(audio_dim=dims[0], text_dim=dims[1], video_dim=dims[2], output_dim1=6)
    ensemble = Ensemble(create_model(config, members=5)).eval()
    info = CheckpointInfo(model=config, label_names=["neutral", "angry", "happy", "sad", "worried", "surprise"],
                          has_valence=True,
                          features={m: {"name": tree[f"{m}_feature"], "dim": d} for m, d in zip(MODALITIES, dims)})
    save_checkpoint(directory, ensemble, info)


def flatten(values: Any, prefix: str = "") -> dict[str, float]:
    if isinstance(values, dict):
        return {k: v for key, item in values.items() for k, v in flatten(item, f"{prefix}/{key}").items()}
    return {prefix: float(values)} if isinstance(values, (int, float)) and not isinstance(values, bool) else {}


def evaluate(device: str, tmp: Path) -> dict[str, Any]:
    from armer.synthetic import write_synthetic_merbench

    dims = (1024, 5120, 768)  # MER2023's (MERBench)
    tree = write_synthetic_merbench(tmp / "eval-data", n_train=50, n_tests=(411, 412), dims=dims, missing_rate=0.1)
    untrained_checkpoint(tmp / "eval-ckpt", tree, dims)
    results, seconds = {}, {}
    for dev in ("cpu", device):
        out = tmp / f"eval-{dev.replace(':', '')}"
        seconds[dev], _ = run_module("armer.evaluate", "--checkpoint", str(tmp / "eval-ckpt"), "--features_root",
                                     tree["features_root"], "--label_path", tree["label_path"], "--out", str(out),
                                     "--device", dev)
        results[dev] = flatten(json.loads((out / "results.json").read_text()))
    diffs = {k: abs(results["cpu"][k] - results[device][k]) for k in results["cpu"]}
    key = max(diffs, key=diffs.get)
    return {"command": f"python -m armer.evaluate ... --device cpu|{device} (untrained, 5 members, 2 x ~410 test)",
            "wall_seconds": seconds, "values": len(diffs), "max_abs_diff": diffs[key], "max_at": key,
            "passed": diffs[key] <= MAX_METRIC_DIFF}


def checkpoint(device: str, tmp: Path) -> dict[str, Any]:
    import torch

    from armer.checkpoint import load_checkpoint, save_checkpoint
    from armer.device import module_device

    source = tmp / "eval-ckpt" if (tmp / "eval-ckpt").is_dir() else ROOT / "checkpoints"
    cpu_model, info = load_checkpoint(source, device="cpu")
    dev_model, _ = load_checkpoint(source, device=device)
    save_checkpoint(tmp / "resaved", dev_model, info)
    again, _ = load_checkpoint(tmp / "resaved", device="cpu")
    dims = [info.features[m]["dim"] for m in ("audio", "text", "video")]
    torch.manual_seed(0)
    batch = {k: torch.randn(8, d) for k, d in zip(("audios", "texts", "videos"), dims)}
    with torch.no_grad():
        a, b = cpu_model(batch), again(batch)
        c = dev_model({k: v.to(module_device(dev_model)) for k, v in batch.items()})
    same = all(torch.equal(getattr(a, n), getattr(b, n)) for n in ("logits", "weights", "valence"))
    return {"loaded_on": str(module_device(dev_model)), "resaved_from_device_identical_on_cpu": same,
            "device_vs_cpu_logits": closeness(a.logits.numpy(), c.logits.cpu().numpy()), "passed": same}


SECTIONS = {"extraction": extraction, "hf_half": hf_half, "predict": predict, "evaluate": evaluate,
            "checkpoint": checkpoint}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="the device compared with the CPU (default: cuda)")
    parser.add_argument("--out", default=str(ROOT / "results" / "gpu_check.json"))
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    args = parser.parse_args()
    device = str(resolve_device(args.device))
    commit = git_commit()
    report: dict[str, Any] = {
        "command": "python scripts/gpu_check.py " + " ".join(sys.argv[1:]),
        "commit": os.environ.get("ARMER_COMMIT", commit) if commit.startswith("unknown") else commit,
        "measured": time.strftime("%Y-%m-%d %H:%M:%S"), "device": device, "machine": machine(device),
        "thresholds": {"min_cosine": MIN_COSINE, "max_probability_diff": MAX_PROBABILITY_DIFF,
                       "max_metric_diff": MAX_METRIC_DIFF},
    }
    with tempfile.TemporaryDirectory(prefix="armer-gpu-check-") as tmp:
        for name in args.sections:
            print(f"{name} ...", flush=True)
            start = time.perf_counter()
            try:
                report[name] = SECTIONS[name](device, Path(tmp))
            except Exception as err:  # noqa: BLE001  (record it, run the other sections)
                report[name] = {"passed": False, "error": f"{type(err).__name__}: {err}",
                                "traceback": traceback.format_exc()[-4000:]}
            report[name]["section_seconds"] = round(time.perf_counter() - start, 1)
            print(f"{name}: passed={report[name]['passed']} ({report[name]['section_seconds']} s)", flush=True)
    report["passed"] = all(report[name]["passed"] for name in args.sections)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{'all passed' if report['passed'] else 'FAILED'}; report in {args.out}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
