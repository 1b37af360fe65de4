"""Predict the emotion of one clip and print JSON.

    python -m armer.predict CLIP [--text "..."] [--checkpoint DIR] [--off audio] [--snr_db 5]
    python -m armer.predict --text "What a lovely day."            # text only
    python -m armer.predict face.png --audio speech.wav            # image + audio file
    python -m armer.predict clip.mp4 --device cuda                  # model and extractors on the GPU
    python -m armer.predict --live clip.mp4 [--window 4 --interval 1]  # the live mode's windows: JSON lines

Prints ``Prediction.to_json()`` (probabilities, top label, valence, fusion weights, sigma,
attention, transcript, face share, timings, notices). Exit status 2 with a message on stderr for
input that cannot be used. With ``--live`` the clip is replayed through the live mode
(``armer.predict.live``) and one JSON line is printed per window (``LiveUpdate.to_json()``). Each input must be a regular file (not a pipe or a device) of at most
MAX_FILE_MB (500) MB, and a transcript is cut to 10,000 characters and 1,000 words (with a notice).
"""
from __future__ import annotations

import argparse
import json
import sys

from armer.constants import MODALITIES
from armer.device import DeviceSpec, add_device_argument
from armer.predict.live import LiveConfig, replay
from armer.predict.predictor import DEFAULT_CHECKPOINT, MAX_FILE_MB, Degrade, InferenceError, Predictor


def parse_pairs(pairs: list[str], flag: str) -> dict[str, str]:
    out = {}
    for pair in pairs:
        modality, sep, value = pair.partition("=")
        if not sep or modality not in MODALITIES:
            raise SystemExit(f"{flag} takes MODALITY=VALUE with MODALITY one of {', '.join(MODALITIES)}; got {pair!r}")
        out[modality] = value
    return out


def build_extractors(names: dict[str, str], paths: dict[str, str], device: DeviceSpec = "cpu") -> dict:
    """Extractor overrides from --extractor / --extractor_path (those with a path built on ``device``)."""
    from armer.extractors import DEFAULT_EXTRACTORS, create_extractor

    if not paths:
        return dict(names)
    out = dict(names)
    for modality, path in paths.items():
        name = names.get(modality) or DEFAULT_EXTRACTORS[modality]
        out[modality] = create_extractor(name, modality=modality, path=path, device=device)
    return out


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT),
                        help="checkpoint folder (model.safetensors + config.json); default: %(default)s")
    parser.add_argument("--extractor", action="append", default=[], metavar="MODALITY=NAME",
                        help="use this backend instead of the one the checkpoint names (repeatable)")
    parser.add_argument("--extractor_path", action="append", default=[], metavar="MODALITY=DIR",
                        help="load that modality's backend weights from DIR (repeatable)")
    add_device_argument(parser)


def add_live_args(parser: argparse.ArgumentParser) -> None:
    """The live mode's windowing (``LiveConfig``), shared by the app and ``--live``."""
    default = LiveConfig()
    group = parser.add_argument_group("live mode")
    group.add_argument("--window", type=float, default=default.window, help="seconds analysed per update (%(default)s)")
    group.add_argument("--interval", type=float, default=default.interval,
                       help="seconds between updates (%(default)s)")
    group.add_argument("--audio_every", type=int, default=default.audio_every,
                       help="re-encode the audio and its transcript every N updates, reusing them in between; the "
                            "Whisper encoder is most of an update's CPU. The default, the default window over the "
                            "interval, encodes each second of audio once; 1 gives the freshest audio and costs the "
                            "most CPU (%(default)s)")
    group.add_argument("--no_transcribe", action="store_true",
                       help="do not transcribe the windows (the text is missing unless --text gives it)")


def live_config(args: argparse.Namespace, audio_in_background: bool) -> LiveConfig:
    """``LiveConfig`` from ``add_live_args``; the audio is encoded beside the updates when live (the app,
    ``--realtime``) and inline in a replay as fast as it runs (deterministic)."""
    return LiveConfig(window=args.window, interval=args.interval, audio_every=args.audio_every,
                      transcribe=not args.no_transcribe, audio_in_background=audio_in_background)


def load_predictor(args: argparse.Namespace) -> Predictor:
    extractors = build_extractors(parse_pairs(args.extractor, "--extractor"),
                                  parse_pairs(args.extractor_path, "--extractor_path"), args.device)
    return Predictor.from_checkpoint(args.checkpoint, extractors=extractors, device=args.device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m armer.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("clip", nargs="?",
                        help=f"video, audio or image file (a regular file of at most {MAX_FILE_MB} MB)")
    parser.add_argument("--audio", help="an audio file (replaces the clip's audio track)")
    parser.add_argument("--image", help="an image file (replaces the clip's frames)")
    parser.add_argument("--text", help="the transcript (default: transcribe the speech)")
    parser.add_argument("--off", action="append", default=[], choices=MODALITIES, help="switch a modality off")
    parser.add_argument("--snr_db", type=float, help="mix white noise into the audio at this SNR (dB)")
    parser.add_argument("--blur", type=int, default=1, help="blur the face crops by this down-sampling factor")
    parser.add_argument("--word_drop", type=float, default=0.0, help="drop each transcript word with this probability")
    parser.add_argument("--live", action="store_true",
                        help="replay the clip through the live mode: one JSON line per window")
    parser.add_argument("--realtime", action="store_true",
                        help="with --live: pace the replay with the clock (windows the machine cannot keep up with "
                             "are skipped, as live)")
    add_model_args(parser)
    add_live_args(parser)
    args = parser.parse_args(argv)
    if args.live and (args.clip is None or args.audio or args.image):
        parser.error("--live replays one clip: give CLIP and neither --audio nor --image")
    try:
        predictor = load_predictor(args)
        if args.live:
            degrade = Degrade(snr_db=args.snr_db, blur=args.blur, word_drop=args.word_drop)
            for update in replay(predictor, args.clip, live_config(args, args.realtime),
                                 {m: m not in args.off for m in MODALITIES},
                                 degrade, args.text, realtime=args.realtime):
                print(json.dumps(update.to_json(), ensure_ascii=False), flush=True)
            return 0
        result = predictor.predict(
            video=args.clip, audio=args.audio, image=args.image, transcript=args.text,
            use={m: m not in args.off for m in MODALITIES},
            degrade=Degrade(snr_db=args.snr_db, blur=args.blur, word_drop=args.word_drop))
    except (InferenceError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_json(), indent=1, ensure_ascii=False))
    return 0
