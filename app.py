"""ARMER demo: upload a clip (or stream the webcam and microphone), read the emotion, switch modalities
off and watch the fusion weights.

    python app.py [--checkpoint checkpoints/] [--share] [--port 7860] [--server_name 127.0.0.1] [--device cpu]
                  [--window 4] [--interval 1] [--audio_every 4] [--no_transcribe]     # the Live tab

This file only wires the UI. Loading, extraction, caching and fusion live in
``armer.predict.Predictor`` (also behind ``python -m armer.predict``), the live windows in
``armer.predict.live``.
"""
from __future__ import annotations

import argparse
import contextlib
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
from armer.extractors import MediaError, load_audio
from armer.extractors.featurize import content_digest
from armer.predict.cli import add_live_args, add_model_args, live_config, load_predictor
from armer.predict.live import LIVE, LiveConfig, LiveStreams, LiveUpdate
from armer.predict.predictor import Degrade, InferenceError, Prediction, Predictor

ROOT = Path(__file__).resolve().parent
NOISE = {"off": None, "20 dB": 20.0, "10 dB": 10.0, "5 dB": 5.0, "0 dB": 0.0}  # audio SNR
BLUR = {"off": 1, "x2": 2, "x4": 4, "x8": 8}  # face-crop down/up-sampling factor
CONCURRENCY = 2  # this is a 2-core CPU app; more requests wait in the queue
LIVE_VIEWERS = 4  # live streams served at once; more viewers are told to come back later
LIVE_CHUNK_S = 0.5  # the browser sends a camera frame and a microphone chunk this often
COLOURS = {"audio": "#3b82f6", "text": "#10b981", "video": "#f59e0b"}  # per modality, in the live chart
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


def chart_html(result: Prediction, previous: dict | None, element_id: str = "armer-chart") -> str:
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
    return f'<div class="armer-chart" id="{element_id}">{"".join(rows)}{legend}</div>'


def history_svg(history: list[dict], now: float, span: float) -> str:
    """The fusion weight of each modality (a line each) and the top emotion (a label where it changes)
    over the last ``span`` seconds, as an inline SVG."""
    width, height, top = 600, 150, 20

    def x(t: float) -> float:
        return width * (1 - (now - t) / span)

    def y(weight: float) -> float:
        return top + (height - top) * (1 - weight)

    parts = [f'<rect x="0" y="{top}" width="{width}" height="{height - top}" fill="#f8fafc" stroke="#e2e8f0"/>']
    for m in MODALITIES:
        points = " ".join(f"{x(h['t']):.1f},{y(h['weights'][m]):.1f}" for h in history)
        parts.append(f'<polyline fill="none" stroke="{COLOURS[m]}" stroke-width="2" points="{points}"/>')
    last = None
    for h in history:
        if h["top"] != last:
            parts.append(f'<text x="{x(h["t"]):.1f}" y="14" font-size="11">{html.escape(h["top"])}</text>')
            parts.append(f'<line x1="{x(h["t"]):.1f}" x2="{x(h["t"]):.1f}" y1="16" y2="{height}" stroke="#cbd5e1"/>')
            last = h["top"]
    legend = " ".join(f'<span style="color:{COLOURS[m]}">&#9644; {m}</span>' for m in MODALITIES)
    return (f'<div id="live-history" data-points="{len(history)}"><svg viewBox="0 0 {width} {height}" '
            f'width="100%" role="img" aria-label="fusion weights over the last {span:.0f} s">{"".join(parts)}</svg>'
            f'<div style="font-size:12px;color:#64748b">{legend}; labels: the top emotion where it changes; '
            f'the last {span:.0f} s, newest on the right</div></div>')


def live_status_html(update: LiveUpdate, number: int) -> str:
    """The live view's headline: each modality's state, the window, lag, CPU and skipped windows."""
    p = update.prediction
    states = "".join(
        f'<li data-modality="{m}" data-state="{html.escape(state)}" '
        f'data-weight="{p.weights[m] if p else 0.0:.6f}"><b>{m}</b>: '
        f'{f"fused, weight {p.weights[m]:.3f}" if p and state == LIVE else html.escape(state)}</li>'
        for m, state in update.states.items())
    head = f"<b>{html.escape(p.top)}</b>" if p else html.escape(update.message)
    skipped = (f'; <b>{update.skipped} window(s) skipped</b>: the machine could not keep up'
               if update.skipped else "")
    return (f'<div id="live-status" data-update="{number}" data-skipped="{update.skipped}" '
            f'data-top="{html.escape(p.top) if p else ""}" data-frames="{update.frames}" '
            f'data-faces="{update.faces}">{head}<ul>{states}</ul>'
            f'<span style="color:#64748b">the last {update.window[1] - update.window[0]:.1f} s: '
            f'{update.frames} frame(s), {update.faces} with a face; result {update.lag_s:.2f} s after the window '
            f'ended, {update.cpu_s:.2f} CPU-s{skipped}</span></div>')


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


def build_demo(predictor: Predictor, live: LiveConfig | None = None) -> gr.Blocks:
    """The Blocks app around one loaded predictor: an upload view and a live (webcam and microphone) view."""
    info = predictor.info
    live = live or LiveConfig(audio_in_background=True)
    streams = LiveStreams(predictor, live, limit=LIVE_VIEWERS)
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
        with gr.Row(elem_id="controls"):  # shared by the upload and the live view
            with gr.Column(scale=1, min_width=160):
                use_audio = gr.Checkbox(True, label="audio", elem_id="use-audio")
                use_text = gr.Checkbox(True, label="text", elem_id="use-text")
                use_video = gr.Checkbox(True, label="video", elem_id="use-video")
            noise = gr.Radio(list(NOISE), value="off", label="Audio noise (SNR)", elem_id="noise", scale=2)
            blur = gr.Radio(list(BLUR), value="off", label="Video blur (down/up-sampling)", elem_id="blur", scale=2)
            word_drop = gr.Slider(0.0, 1.0, value=0.0, step=0.1, label="Text word drop-out", elem_id="word-drop",
                                  scale=2)
        with gr.Tabs():
            with gr.Tab("Upload", elem_id="upload-tab") as upload_tab:
                with gr.Row():
                    with gr.Column(scale=1):
                        video = plain_errors(gr.Video(label="Video (with its audio track)",
                                                      sources=["upload", "webcam"], elem_id="video-input"))
                        with gr.Row():
                            audio = plain_errors(gr.Audio(label="or an audio file", type="filepath",
                                                          sources=["upload", "microphone"], elem_id="audio-input"))
                            image = plain_errors(gr.Image(label="and/or an image", type="filepath",
                                                          elem_id="image-input"))
                        transcript = gr.Textbox(label="Transcript (blank: transcribe the speech)", lines=2,
                                                elem_id="transcript-input")
                        run = gr.Button("Analyse", variant="primary", elem_id="analyse")
                    with gr.Column(scale=1):
                        label = gr.Label(label="Emotion", num_top_classes=len(info.label_names), elem_id="emotion")
                        valence = gr.Number(label="Valence", visible=info.has_valence, interactive=False,
                                            elem_id="valence")
                        chart = gr.HTML(label="Fusion weight and sigma per modality", elem_id="weights-chart")
                        table = gr.Dataframe(
                            headers=["modality", "used", "weight", "weight before", "sigma", "attention"],
                            label="Weights, sigma and attention", interactive=False, elem_id="weights-table")
                        used_text = gr.Textbox(label="Transcript used", interactive=False, elem_id="transcript-used")
                        face = gr.Textbox(label="Frames with a face", interactive=False, elem_id="face-share")
                        status = gr.Markdown(elem_id="status")
                        timings = gr.JSON(label="Timings (s)", elem_id="timings")
                        with gr.Accordion("Full result (JSON)", open=False):
                            payload = gr.JSON(elem_id="result-json")
                rows = example_rows()
                if rows:
                    gr.Examples(examples=rows, inputs=[video, audio, image, transcript],
                                label="Examples (made by scripts/make_examples.py)")
            with gr.Tab("Live", elem_id="live-tab") as live_tab:
                gr.Markdown(
                    f"Start the camera and the microphone (the browser asks for access; on a Space the page is "
                    f"HTTPS, which browsers require). Every {live.interval:g} s the last {live.window:g} s are "
                    f"analysed with the controls above: cover the camera, turn away, talk over music or go silent "
                    f"and watch the weights move.", elem_id="live-help")
                with gr.Row():
                    with gr.Column(scale=1):
                        camera = gr.Image(label="Camera", sources=["webcam"], streaming=True, type="numpy",
                                          elem_id="live-camera")
                        microphone = gr.Audio(label="Microphone", sources=["microphone"], streaming=True,
                                              type="filepath", elem_id="live-microphone")
                        live_transcript = gr.Textbox(label="Typed transcript (blank: transcribe each window)",
                                                     lines=2, elem_id="live-transcript")
                        live_asr = gr.Checkbox(live.transcribe, label="transcribe the speech of each window",
                                               elem_id="live-transcribe")
                    with gr.Column(scale=1):
                        live_status = gr.HTML(elem_id="live-status-box")
                        live_label = gr.Label(label="Emotion now", num_top_classes=3, elem_id="live-emotion")
                        live_chart = gr.HTML(label="Fusion weight and sigma now", elem_id="live-weights")
                        live_history = gr.HTML(label=f"The last {live.history:g} s", elem_id="live-history-box")
                        with gr.Accordion("This update (JSON)", open=False):
                            live_payload = gr.JSON(elem_id="live-json")
                timer = gr.Timer(live.interval, active=False)
        state = gr.State(Shown())  # per session (deep-copied)
        inputs = [video, audio, image, transcript, use_audio, use_text, use_video, noise, blur, word_drop, state]
        outputs = [label, valence, chart, table, used_text, face, timings, status, payload, state]
        run.click(analyse, inputs, outputs, api_name="predict", concurrency_limit=CONCURRENCY,
                  concurrency_id="model")
        gr.on([use_audio.input, use_text.input, use_video.input, noise.input, blur.input, word_drop.release],
              refresh, inputs, outputs, api_name="refresh", concurrency_limit=CONCURRENCY, concurrency_id="model",
              show_progress="minimal", trigger_mode="always_last")

        def on_frame(frame, request: gr.Request):
            if frame is not None:
                now = time.monotonic()
                with contextlib.suppress(InferenceError):  # too many viewers: the next update says so
                    streams.get(request.session_hash, now).add_frame(frame, now)

        def on_sound(chunk, request: gr.Request):
            if not chunk:
                return
            try:
                samples = load_audio(chunk, max_seconds=None)
                now = time.monotonic()
                streams.get(request.session_hash, now).add_audio(samples, now)
            except (MediaError, InferenceError) as err:  # a chunk the browser garbled: the stream goes on
                log.warning("live microphone chunk dropped: %s", err)

        def on_tick(use_audio, use_text, use_video, noise, blur, word_drop, typed, transcribe, request: gr.Request):
            now = time.monotonic()
            try:
                stream = streams.get(request.session_hash, now)
                degrade = Degrade(snr_db=NOISE.get(noise), blur=BLUR.get(blur, 1), word_drop=float(word_drop or 0))
                previous = stream.history[-1] if stream.history else None
                update = stream.update(now, {"audio": use_audio, "text": use_text, "video": use_video}, degrade,
                                       typed, transcribe)
            except InferenceError as err:
                return [gr.skip()] * 4 + [f'<div id="live-status">{html.escape(str(err))}</div>']
            if update is None:  # the previous update still runs: this window is skipped
                return [gr.skip()] * 5
            p = update.prediction
            return (p.probabilities if p else None, chart_html(p, previous, "live-chart") if p else "",
                    history_svg(list(stream.history), now, live.history), update.to_json(),
                    live_status_html(update, stream.updates))

        camera.stream(on_frame, [camera], None, stream_every=LIVE_CHUNK_S, concurrency_limit=2 * LIVE_VIEWERS,
                      concurrency_id="live-input", show_progress="hidden")
        microphone.stream(on_sound, [microphone], None, stream_every=LIVE_CHUNK_S,
                          concurrency_limit=2 * LIVE_VIEWERS, concurrency_id="live-input", show_progress="hidden")
        timer.tick(on_tick, [use_audio, use_text, use_video, noise, blur, word_drop, live_transcript, live_asr],
                   [live_label, live_chart, live_history, live_payload, live_status],
                   concurrency_limit=CONCURRENCY, concurrency_id="model", show_progress="hidden")
        live_tab.select(lambda: gr.Timer(active=True), None, timer)
        upload_tab.select(lambda: gr.Timer(active=False), None, timer)

        def on_leave(request: gr.Request):
            streams.drop(request.session_hash)

        demo.unload(on_leave)
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
    add_live_args(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        live = live_config(args, audio_in_background=True)
        predictor = load_predictor(args)
    except Exception as err:  # a bad live setting, missing checkpoint or extractor weights: say which
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
    launch(build_demo(predictor, live), share=args.share, server_port=args.port, server_name=args.server_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
