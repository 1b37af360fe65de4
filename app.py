"""ARMER demo: upload a clip, read the emotion, switch modalities off and watch the fusion weights.

    python app.py [--checkpoint checkpoints/] [--share] [--port 7860] [--server_name 127.0.0.1] [--device cpu]

This file only wires the UI. Loading, extraction, caching and fusion live in
``armer.predict.Predictor`` (also behind ``python -m armer.predict``).
"""
from __future__ import annotations

import argparse
import html
import json
import logging
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

import gradio as gr

from armer.constants import MODALITIES
from armer.extractors.featurize import content_digest
from armer.predict.predictor import Degrade, InferenceError, Prediction, Predictor
from armer.predict.cli import add_model_args, load_predictor

ROOT = Path(__file__).resolve().parent
NOISE = {"off": None, "20 dB": 20.0, "10 dB": 10.0, "5 dB": 5.0, "0 dB": 0.0}  # audio SNR
BLUR = {"off": 1, "x2": 2, "x4": 4, "x8": 8}  # face-crop down/up-sampling factor
CONCURRENCY = 2  # this is a 2-core CPU app; more requests wait in the queue
DELETE_CACHE = (600, 3600)  # every 10 minutes, delete the uploads older than an hour
EXAMPLES_FILE = ROOT / "examples" / "examples.json"  # rows [video, audio, image, transcript], by scripts/make_examples.py
log = logging.getLogger("armer.app")
_SERVER_DIRS = re.compile(r"(?<![\w.~])/(?:[^\s/'\"()<>\[\]]+/)+")  # the folders of an absolute path
_SESSION_LOCK = threading.Lock()  # guards every session's Shown (held for microseconds)

CSS = """
.armer-chart {font-family: ui-monospace, monospace; font-size: 13px}
.armer-chart .row {display: grid; grid-template-columns: 5.5em 1fr 9em; gap: 6px; align-items: center; margin: 3px 0}
.armer-chart .track {background: #eee; border-radius: 3px; height: 12px; position: relative}
.armer-chart .bar {height: 12px; border-radius: 3px; position: absolute; top: 0; left: 0}
.armer-chart .weight .bar {background: #3b82f6} .armer-chart .sigma .bar {background: #f59e0b}
.armer-chart .before {height: 4px; background: #64748b; position: absolute; top: 12px; left: 0; border-radius: 2px}
"""


def settings_of(use: dict[str, bool], noise: str, blur: str, word_drop: float) -> dict:
    return {"use": use, "noise": noise, "blur": blur, "word_drop": float(word_drop)}


def without_paths(message: str) -> str:
    """``message`` with every absolute path cut to its base name (no server folders in the page)."""
    return _SERVER_DIRS.sub("", message)


def plain_errors(component: gr.components.Component) -> gr.components.Component:
    """``component`` whose upload errors name the file, not its server path (Gradio's own message
    holds the upload folder)."""
    preprocess = component.preprocess

    def checked(payload: Any) -> Any:
        try:
            return preprocess(payload)
        except gr.Error:
            raise
        except Exception as err:
            name = Path(getattr(payload, "path", None) or "the file").name
            raise gr.Error(f"{name}: cannot be read ({without_paths(f'{type(err).__name__}: {err}')})",
                           title="Cannot use this input") from err

    component.preprocess = checked
    return component


class Shown:
    """The result on one session's page, kept in request order: a request takes a number when it
    starts, and its result is shown only if no later request's result is shown already (a slow
    request that finishes after a quicker later one is dropped). So "previous" and "change" always
    describe the result shown just before, whatever order concurrent requests finish in."""

    def __init__(self) -> None:
        self.started = 0  # requests started in this session
        self.shown = 0  # the number of the request whose result is on the page (0: none)
        self.last: dict | None = None  # that result: request, settings, top, weights, sigma

    def start(self) -> int:
        """The next request's number."""
        with _SESSION_LOCK:
            self.started += 1
            return self.started

    def show(self, entry: dict) -> tuple[bool, dict | None]:
        """(whether the result of ``entry["request"]`` is shown, the result shown before it)."""
        with _SESSION_LOCK:
            if entry["request"] < self.shown:
                return False, None
            previous, self.shown, self.last = self.last, entry["request"], entry
            return True, previous


def describe_change(before: dict | None, after: dict) -> str:
    """'audio switched off', 'blur x2 -> x4', ... between two settings (or a new input)."""
    if before is None:
        return "first result"
    if before.get("inputs") != after.get("inputs"):
        return "new input"
    changes = [f"{m} switched {'on' if after['use'][m] else 'off'}" for m in MODALITIES
               if before["use"][m] != after["use"][m]]
    for key, name in (("noise", "audio noise"), ("blur", "video blur"), ("word_drop", "word drop-out")):
        if before[key] != after[key]:
            changes.append(f"{name} {before[key]} -> {after[key]}")
    return ", ".join(changes) or "same settings"


def chart_html(result: Prediction, previous: dict | None) -> str:
    """Fusion weight and sigma per modality as bars, the previous weights as a thin grey bar.

    Values are also in data-* attributes (read by the browser test)."""
    sigmas = [s for s in result.sigma.values() if s is not None]
    top = max(sigmas + [1.0])
    rows = []
    for m in MODALITIES:
        w, s = result.weights[m], result.sigma[m]
        prev = (previous or {}).get("weights", {}).get(m)
        before = f'<div class="before" style="width:{100 * prev:.1f}%"></div>' if prev is not None else ""
        prev_txt = f" (was {prev:.3f})" if prev is not None and abs(prev - w) > 5e-4 else ""
        attrs = (f'data-modality="{m}" data-weight="{w:.6f}" data-used="{str(result.used[m]).lower()}" '
                 f'data-sigma="{"" if s is None else f"{s:.6f}"}" '
                 f'data-previous-weight="{"" if prev is None else f"{prev:.6f}"}"')
        rows.append(
            f'<div class="row weight" {attrs}><span>{m}</span><div class="track">'
            f'<div class="bar" style="width:{100 * w:.1f}%"></div>{before}</div>'
            f'<span>w {w:.3f}{html.escape(prev_txt)}</span></div>')
        rows.append(
            f'<div class="row sigma"><span></span><div class="track">'
            f'<div class="bar" style="width:{0 if s is None else 100 * s / top:.1f}%"></div></div>'
            f'<span>sigma {"-" if s is None else f"{s:.3f}"}</span></div>')
    legend = ('<div style="color:#64748b">blue: fusion weight, orange: sigma (uncertainty, scaled to the largest), '
              'grey line: weight before the last change</div>')
    return f'<div class="armer-chart" id="armer-chart">{"".join(rows)}{legend}</div>'


def table_rows(result: Prediction, previous: dict | None) -> list[list]:
    prev = (previous or {}).get("weights", {})
    return [[m, "yes" if result.used[m] else ("off" if result.available[m] else "missing"),
             round(result.weights[m], 4), None if prev.get(m) is None else round(prev[m], 4),
             None if result.sigma[m] is None else round(result.sigma[m], 4), round(result.attention[m], 4)]
            for m in MODALITIES]


def example_rows() -> list[list]:
    """The example clips that exist, with absolute paths."""
    if not EXAMPLES_FILE.is_file():
        return []
    rows = json.loads(EXAMPLES_FILE.read_text())["rows"]
    rows = [[str(ROOT / c) if c and c.startswith("examples/") else c for c in row] for row in rows]
    return [row for row in rows if all(not c or not c.startswith(str(ROOT)) or Path(c).is_file() for c in row)]


def build_demo(predictor: Predictor) -> gr.Blocks:
    """The Blocks app around one loaded predictor."""
    info = predictor.info
    untrained = "untrained" in str(info.training.get("note", ""))

    def analyse(video, audio, image, transcript, use_audio, use_text, use_video, noise, blur, word_drop,
                session: Shown, progress=gr.Progress()):
        t0 = time.perf_counter()
        request = session.start()
        use = {"audio": bool(use_audio), "text": bool(use_text), "video": bool(use_video)}
        try:
            for path in (video, audio, image):
                if path and not Path(path).exists():
                    raise InferenceError(f"{Path(path).name} is no longer on the server (uploads are deleted after "
                                         f"{DELETE_CACHE[1] // 60} minutes): upload it again")
            degrade = Degrade(snr_db=NOISE.get(noise), blur=BLUR.get(blur, 1), word_drop=float(word_drop or 0.0))
            result = predictor.predict(
                video=video or None, audio=audio or None, image=image or None, transcript=transcript,
                use=use, degrade=degrade, progress=lambda f, desc: progress(f, desc=desc))
        except InferenceError as err:
            raise gr.Error(without_paths(str(err)), title="Cannot use this input") from err
        except Exception as err:  # never let one request take the app down; the next one works
            log.exception("request failed")
            raise gr.Error(without_paths(f"Could not process this input ({type(err).__name__}: {err})"),
                           title="Processing failed") from err
        settings = settings_of(use, noise, blur, word_drop)
        settings["inputs"] = [str(video), str(audio), str(image), content_digest(transcript or "")]
        shown, previous = session.show({"request": request, "settings": settings, "top": result.top,
                                        "weights": result.weights, "sigma": result.sigma})
        if not shown:  # a later request's result is on the page already
            return [gr.skip()] * 10
        change = describe_change(previous and previous["settings"], settings)
        server_ms = 1000 * (time.perf_counter() - t0)
        payload = result.to_json()
        payload["server_ms"] = round(server_ms, 2)
        payload["request"] = request
        payload["change"] = change
        payload["previous"] = None if previous is None else \
            {k: previous[k] for k in ("request", "top", "weights", "sigma")}
        before = payload["previous"]
        headline = f"**{result.top}**" + (f" (before: {before['top']})" if before and before["top"] != result.top else "")
        notices = "\n".join(f"- {n}" for n in result.notices) or "none"
        status = (f"Last change: {change}. Top emotion {headline}. Server time {server_ms:.0f} ms "
                  f"({'cached: ' + ', '.join(result.cached) if result.cached else 'nothing cached'}).\n\n"
                  f"Notices:\n{notices}")
        timings = {**result.timings, "server_ms": round(server_ms, 2)}
        face = "no frames" if result.face_share is None else f"{100 * result.face_share:.0f}% of frames"
        valence = None if result.valence is None else round(result.valence, 3)
        return (result.probabilities, valence, chart_html(result, before), table_rows(result, before),
                result.transcript or "", face, timings, status, payload, session)

    def refresh(video, audio, image, transcript, *rest):
        """A toggle or degrade control changed: re-run only when there is an input."""
        if not (video or audio or image or (transcript or "").strip()):
            return [gr.skip()] * 10
        return analyse(video, audio, image, transcript, *rest)

    with gr.Blocks(title="ARMER: robust multimodal emotion recognition", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(
            "# ARMER: robust multimodal emotion recognition\n"
            "Upload a short clip of a person talking (or an audio file and/or a photo, or just type a transcript), "
            "read the emotion, then switch modalities off or degrade them and watch the fusion weights move.\n\n"
            f"Loaded: `{html.escape(predictor.describe())}`"
            + ("\n\n**This checkpoint is untrained (random weights): the predictions mean nothing.**"
               if untrained else ""),
            elem_id="header")
        with gr.Row():
            with gr.Column(scale=1):
                video = plain_errors(gr.Video(label="Video (with its audio track)", sources=["upload", "webcam"],
                                              elem_id="video-input"))
                with gr.Row():
                    audio = plain_errors(gr.Audio(label="or an audio file", type="filepath",
                                                  sources=["upload", "microphone"], elem_id="audio-input"))
                    image = plain_errors(gr.Image(label="and/or an image", type="filepath", elem_id="image-input"))
                transcript = gr.Textbox(label="Transcript (blank: transcribe the speech)", lines=2,
                                        elem_id="transcript-input")
                with gr.Row():
                    use_audio = gr.Checkbox(True, label="audio", elem_id="use-audio")
                    use_text = gr.Checkbox(True, label="text", elem_id="use-text")
                    use_video = gr.Checkbox(True, label="video", elem_id="use-video")
                noise = gr.Radio(list(NOISE), value="off", label="Audio noise (SNR)", elem_id="noise")
                blur = gr.Radio(list(BLUR), value="off", label="Video blur (down/up-sampling)", elem_id="blur")
                word_drop = gr.Slider(0.0, 1.0, value=0.0, step=0.1, label="Text word drop-out", elem_id="word-drop")
                run = gr.Button("Analyse", variant="primary", elem_id="analyse")
            with gr.Column(scale=1):
                label = gr.Label(label="Emotion", num_top_classes=len(info.label_names), elem_id="emotion")
                valence = gr.Number(label="Valence", visible=info.has_valence, interactive=False, elem_id="valence")
                chart = gr.HTML(label="Fusion weight and sigma per modality", elem_id="weights-chart")
                table = gr.Dataframe(headers=["modality", "used", "weight", "weight before", "sigma", "attention"],
                                     label="Weights, sigma and attention", interactive=False, elem_id="weights-table")
                used_text = gr.Textbox(label="Transcript used", interactive=False, elem_id="transcript-used")
                face = gr.Textbox(label="Frames with a face", interactive=False, elem_id="face-share")
                status = gr.Markdown(elem_id="status")
                timings = gr.JSON(label="Timings (s)", elem_id="timings")
                with gr.Accordion("Full result (JSON)", open=False):
                    payload = gr.JSON(elem_id="result-json")
        state = gr.State(Shown())  # per session (deep-copied)
        inputs = [video, audio, image, transcript, use_audio, use_text, use_video, noise, blur, word_drop, state]
        outputs = [label, valence, chart, table, used_text, face, timings, status, payload, state]
        rows = example_rows()
        if rows:
            gr.Examples(examples=rows, inputs=[video, audio, image, transcript],
                        label="Examples (made by scripts/make_examples.py)")
        run.click(analyse, inputs, outputs, api_name="predict", concurrency_limit=CONCURRENCY,
                  concurrency_id="model")
        gr.on([use_audio.input, use_text.input, use_video.input, noise.input, blur.input, word_drop.release],
              refresh, inputs, outputs, api_name="refresh", concurrency_limit=CONCURRENCY, concurrency_id="model",
              show_progress="minimal", trigger_mode="always_last")
    demo.queue(max_size=64, default_concurrency_limit=CONCURRENCY)
    return demo


def launch(demo: gr.Blocks, **kwargs):
    """``demo.launch`` with the app's settings (upload limit, error display, styling); kwargs override."""
    settings = dict(max_file_size="200mb", show_error=True, css=CSS, ssr_mode=False)
    settings.update(kwargs)
    return demo.launch(**settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(parser)
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    parser.add_argument("--port", type=int, default=None, help="port (default: $GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--server_name", default=None, help="e.g. 0.0.0.0 to listen on every interface")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        predictor = load_predictor(args)
    except Exception as err:  # missing checkpoint or extractor weights: say which and how to get them
        print(f"error: {err}", file=sys.stderr)
        return 2

    def warm_up() -> None:  # beside the server start: the page is up sooner, a first request waits for it
        t = time.perf_counter()
        try:
            predictor.warm_up()
            log.info("%s (extractors loaded in %.1f s)", predictor.describe(), time.perf_counter() - t)
        except Exception:
            log.exception("loading the extractors failed; requests will report it")

    threading.Thread(target=warm_up, name="armer-warm-up", daemon=True).start()
    launch(build_demo(predictor), share=args.share, server_port=args.port, server_name=args.server_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
