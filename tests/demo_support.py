"""Shared helpers for the demo tests: a tiny untrained checkpoint wired to the offline extractors
(a random FER CNN stands in when extractors/weights/fer_cnn is absent), and a running app."""
from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TALK = EXAMPLES / "astronaut_talking.mp4"  # face + speech ("I am so happy to see you again! ...")
SILENT = EXAMPLES / "grace_hopper_silent.mp4"  # face, no audio stream
SPEECH = EXAMPLES / "sad_speech.wav"
PHOTO = EXAMPLES / "grace_hopper.jpg"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_demo_checkpoint(root: Path) -> tuple[Path, dict]:
    """(checkpoint dir, extractor overrides) for an untrained 2-member V2 on the offline extractors."""
    tiny = _script("make_tiny_checkpoint")
    from armer.extractors import create_extractor
    from armer.extractors.fer_cnn import FerCNNConfig

    fer = tiny.make_random_fer_cnn(root / "fer_cnn", seed=0)
    ckpt = tiny.make_tiny_checkpoint(root / "checkpoint", video_dim=FerCNNConfig().widths[-1], members=2)
    return ckpt, {"video": create_extractor("fer2013-cnn", modality="video", path=str(fer))}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_media_tools() -> None:
    if not TALK.is_file():
        pytest.skip("examples/ missing: run python scripts/make_examples.py")


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    require_media_tools()
    from armer.predict.predictor import Predictor

    ckpt, extractors = make_demo_checkpoint(tmp_path_factory.mktemp("demo"))
    p = Predictor.from_checkpoint(ckpt, extractors=extractors)
    p.warm_up()
    return p


@pytest.fixture(scope="module")
def app_url(predictor):
    """The demo app running on a free localhost port (torn down after the module)."""
    sys.path.insert(0, str(ROOT))
    import app

    demo = app.build_demo(predictor)
    app.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True)
    yield demo.local_url
    demo.close()


def artifacts_dir() -> Path:
    """$ARTIFACTS_DIR, else artifacts/ at the repository root (gitignored)."""
    d = Path(os.environ.get("ARTIFACTS_DIR", ROOT / "artifacts"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def has_espeak() -> bool:
    return shutil.which("espeak-ng") is not None
