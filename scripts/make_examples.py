"""Make the demo's example clips in examples/ from material that may be redistributed.

    python scripts/make_examples.py [--out examples]

Photographs: scikit-image's ``astronaut`` (Eileen Collins, NASA, public domain) and matplotlib's
``grace_hopper`` sample (Grace Hopper, US Navy photograph, public domain). Speech: synthesised
with Debian's ``espeak-ng`` (GPL-3 program; its output is not covered by the licence). The clips
are small (a few seconds at 288x288, 10 fps) and deterministic up to the codec build.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from armer.extractors.samples import face_image, synthesize_speech, write_clip

SIZE = 288
FPS = 10

# file -> what it shows; text-only examples live in EXAMPLES only
HAPPY_LINE = "I am so happy to see you again! This is wonderful news."
SAD_LINE = "I lost my job today, and I feel very sad and tired."
TEXT_ONLY = "Nothing ever works out for me, and I am really worried about tomorrow."

# rows of gr.Examples: [video, audio, image, transcript]; paths relative to the repository root
EXAMPLES = [
    ["examples/astronaut_talking.mp4", None, None, ""],  # all modalities: face, speech, transcribed text
    ["examples/grace_hopper_silent.mp4", None, None, ""],  # a clip without speech: video only
    [None, "examples/sad_speech.wav", "examples/grace_hopper.jpg", ""],  # an audio file and an image
    [None, None, None, TEXT_ONLY],  # text only
]


def grace_hopper() -> np.ndarray:
    """matplotlib's grace_hopper sample photograph: RGB uint8 (600, 512, 3)."""
    import matplotlib.cbook
    from PIL import Image

    with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")) as im:
        return np.asarray(im.convert("RGB"))


def square(image: np.ndarray, top: int = 0) -> np.ndarray:
    from PIL import Image

    side = min(image.shape[:2])
    crop = image[top:top + side, :side]
    return np.asarray(Image.fromarray(crop).resize((SIZE, SIZE), Image.Resampling.LANCZOS))


def moving(image: np.ndarray, n: int) -> list[np.ndarray]:
    """A gentle horizontal sway, so the clip is a video rather than a still."""
    shifts = np.round(4 * np.sin(np.linspace(0, 2 * np.pi, n))).astype(int)
    return [np.roll(image, int(s), axis=1) for s in shifts]


def make_examples(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    astronaut, hopper = square(face_image()), square(grace_hopper(), top=20)
    happy = synthesize_speech(HAPPY_LINE)
    sad = synthesize_speech(SAD_LINE, words_per_minute=120)
    n_happy = int(np.ceil(happy.size / 16000 * FPS))
    paths = [
        write_clip(out / "astronaut_talking.mp4", moving(astronaut, n_happy), fps=FPS, audio=happy),
        write_clip(out / "grace_hopper_silent.mp4", moving(hopper, 3 * FPS), fps=FPS),
        write_clip(out / "sad_speech.wav", audio=sad),
    ]
    from PIL import Image

    Image.fromarray(hopper).save(out / "grace_hopper.jpg", quality=85)
    paths.append(out / "grace_hopper.jpg")
    (out / "examples.json").write_text(json.dumps(
        {"columns": ["video", "audio", "image", "transcript"], "rows": EXAMPLES,
         "sources": {"astronaut": "scikit-image data.astronaut(), NASA, public domain",
                     "grace_hopper": "matplotlib sample data grace_hopper.jpg, US Navy, public domain",
                     "speech": "espeak-ng (en-us)"}}, indent=1))
    paths.append(out / "examples.json")
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "examples"))
    args = parser.parse_args(argv)
    for path in make_examples(Path(args.out)):
        print(f"{path} ({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
