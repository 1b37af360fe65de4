"""The example clips: made by scripts/make_examples.py, small, covering what the demo promises."""
from __future__ import annotations

import json
import shutil

import pytest
from demo_support import EXAMPLES, ROOT, _script


def test_committed_examples_cover_every_case():
    from armer.extractors import load_media

    rows = json.loads((EXAMPLES / "examples.json").read_text())["rows"]
    assert len(rows) >= 3
    kinds = set()
    for video, audio, image, transcript in rows:
        files = [f for f in (video, audio, image) if f]
        for f in files:
            assert (ROOT / f).is_file() and (ROOT / f).stat().st_size < 300_000, f
        if video:
            m = load_media(ROOT / video)
            kinds.add("all modalities" if m.audio is not None and m.frames else "no speech" if m.frames else "?")
        if not files and transcript:
            kinds.add("text only")
    assert {"all modalities", "no speech", "text only"} <= kinds


def test_make_examples_rebuilds_them(tmp_path):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    pytest.importorskip("matplotlib")
    from armer.extractors import load_media

    paths = _script("make_examples").make_examples(tmp_path)
    names = {p.name for p in paths}
    assert names == {p.name for p in EXAMPLES.iterdir() if p.is_file()}
    talk = load_media(tmp_path / "astronaut_talking.mp4")
    assert talk.audio is not None and talk.audio.size > 3 * 16000 and len(talk.frames) >= 6
    assert load_media(tmp_path / "grace_hopper_silent.mp4").audio is None
