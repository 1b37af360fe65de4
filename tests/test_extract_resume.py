"""The extraction CLI survives interruption: records are written per clip, features atomically,
and a rerun verifies what exists, redoes corrupt files and ends where a clean run ends."""
from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from armer.extractors.__main__ import feature_problem, read_transcripts
from armer.extractors.__main__ import main as cli_main
from armer.extractors.samples import face_image, write_clip

REPO = Path(__file__).resolve().parents[1]
N_CLIPS = 10
VIDEO_DIR = "fer2013-cnn-UTT"
VIDEO_DIM = 256
# video features only (about a second a clip); the given transcripts still go to the records
BACKENDS = ["--audio", "none", "--text", "none", "--video", "fer2013-cnn", "--no-asr"]


@pytest.fixture(autouse=True)
def no_collector_pauses():
    """The tests signal a child after its first record, while it has a few seconds of clips left; a
    full garbage collection of everything earlier tests left in this process can take about as
    long, and the child then finished before its Ctrl-C was sent."""
    gc.collect()
    gc.disable()
    yield
    gc.enable()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    """N_CLIPS two-second face clips with a tone, and a transcript table (commas, quotes, non-ASCII)."""
    root = tmp_path_factory.mktemp("resume")
    (root / "clips").mkdir()
    face, t = face_image(), np.arange(32_000) / 16_000
    texts = {}
    for i in range(N_CLIPS):
        frames = [np.roll(face, 8 * j + 3 * i, axis=1) for j in range(20)]
        write_clip(root / "clips" / f"clip{i}.mp4", frames, fps=10,
                   audio=(0.3 * np.sin(2 * np.pi * (200 + 40 * i) * t)).astype(np.float32))
        texts[f"clip{i}"] = f'Clip {i}, said "here" — café {i}'
    table = root / "transcripts_in.csv"
    table.write_text("name,english\n" + "".join(f'{k},"{v.replace(chr(34), 2 * chr(34))}"\n' for k, v in texts.items()),
                     encoding="utf-8")
    assert read_transcripts(str(table)) == texts
    return root / "clips", table, texts


def ctrl_c_as_in_a_terminal() -> None:
    """In the child before it runs the CLI: Ctrl-C neither ignored nor blocked, whatever earlier tests
    left in this process (a child inherits both, and then never sees the SIGINT the test sends)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])


def start(clips: Path, table: Path, out: Path, batching: list[str]) -> tuple[subprocess.Popen, Path]:
    """The CLI as a child process (one thread) and the file its stderr goes to."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "armer.extractors", str(clips), "--out", str(out), "--transcripts", str(table),
           *BACKENDS, *batching]
    err = out.parent / f"{out.name}-{time.monotonic_ns()}.err"
    with open(err, "w") as err_file:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err_file,
                                preexec_fn=ctrl_c_as_in_a_terminal), err


def wait_for_records(out: Path, proc: subprocess.Popen, err: Path, count: int, timeout: float = 180.0) -> None:
    """Poll until extract_log.jsonl holds ``count`` complete lines."""
    log, deadline = out / "extract_log.jsonl", time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and log.read_text(encoding="utf-8").count("\n") >= count:
            return
        assert proc.poll() is None, f"the run ended early (rc {proc.returncode}): {err.read_text()}"
        time.sleep(0.01)
    proc.kill()
    pytest.fail(f"no {count} records in {timeout} s")


def children(pid: int) -> list[int]:
    """The ids of a process's child processes (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie, exited but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def check_consistent(out: Path, texts: dict[str, str]) -> list[str]:
    """Every record is whole and backed by its feature and transcript; every .npy present is usable."""
    lines = (out / "extract_log.jsonl").read_text(encoding="utf-8").splitlines()
    logged = [json.loads(line)["clip"] for line in lines]
    assert len(set(logged)) == len(logged), logged
    kept = read_transcripts(str(out / "transcripts.csv"))
    for clip in logged:
        assert (out / VIDEO_DIR / f"{clip}.npy").is_file() and kept[clip] == texts[clip]
    assert kept.items() <= texts.items()
    for f in (out / VIDEO_DIR).glob("*.npy"):
        assert feature_problem(f, VIDEO_DIM) is None, f
    return logged


@pytest.mark.parametrize("batching", [["--batch_size", "1", "--decode_workers", "0"],  # one clip at a time
                                      ["--batch_size", "2", "--decode_workers", "1"]])  # batches, decoded ahead
def test_interrupted_and_killed_runs_resume_to_the_clean_result(corpus, tmp_path, batching):
    clips, table, texts = corpus
    clean = tmp_path / "clean"
    assert cli_main([str(clips), "--out", str(clean), "--transcripts", str(table), *BACKENDS]) == 0
    out = tmp_path / "out"

    # Ctrl-C after the first record: a clean stop that keeps what is finished
    proc, err = start(clips, table, out, batching)
    wait_for_records(out, proc, err, 1)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130, err.read_text()
    assert "interrupted: " in err.read_text() and "Traceback" not in err.read_text()
    first = check_consistent(out, texts)
    assert 1 <= len(first) < N_CLIPS

    # kill -9 after one more record: the finished clips' records survive, no half-written feature,
    # and no decode worker outlives the run
    proc, err = start(clips, table, out, batching)
    wait_for_records(out, proc, err, len(first) + 1)
    workers = children(proc.pid)
    proc.kill()
    proc.wait(timeout=60)
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if alive(pid)], "decode workers outlived the killed run"
    finished = check_consistent(out, texts)
    assert first == finished[:len(first)] and len(first) < len(finished) <= N_CLIPS - 2

    # damage two unfinished clips and leave a dead run's temporary file
    video = out / VIDEO_DIR
    good = (clean / VIDEO_DIR / "clip0.npy").read_bytes()
    (video / "clip5.npy").write_bytes(good[:len(good) // 2])
    np.save(video / "clip4.npy", np.full(VIDEO_DIM, np.nan, np.float32))
    (video / f".clip3.npy.{proc.pid}.tmp").write_bytes(good[:10])

    proc, err = start(clips, table, out, batching)
    assert proc.wait(timeout=180) == 0, err.read_text()
    said = err.read_text()
    assert "clip5.npy is truncated or corrupt" in said and "clip4.npy is truncated or corrupt" in said
    assert sorted(check_consistent(out, texts)) == sorted(texts)  # each clip's record exactly once
    assert read_transcripts(str(out / "transcripts.csv")) == texts
    assert (out / "transcripts.csv").read_bytes() == (clean / "transcripts.csv").read_bytes()
    assert sorted(p.name for p in video.iterdir()) == [f"clip{i}.npy" for i in range(N_CLIPS)]
    for i in range(N_CLIPS):
        np.testing.assert_allclose(np.load(video / f"clip{i}.npy"), np.load(clean / VIDEO_DIR / f"clip{i}.npy"),
                                   rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("damage, problem", [
    (lambda p: p.write_bytes(p.read_bytes()[:-40]), "unreadable"),
    (lambda p: p.write_bytes(b"not a numpy file"), "unreadable"),
    (lambda p: np.save(p, np.zeros((2, 4), np.float32)), "shape (2, 4)"),
    (lambda p: np.save(p, np.array([1.0, np.inf, 0, 0], np.float32)), "NaN or inf"),
    (lambda p: np.save(p, np.array([None] * 4, dtype=object)), "unreadable"),
])
def test_feature_check_names_the_problem(tmp_path, damage, problem):
    path = tmp_path / "clip.npy"
    np.save(path, np.ones(4, np.float32))
    assert feature_problem(path, 4) is None
    damage(path)
    assert problem in feature_problem(path, 4)
