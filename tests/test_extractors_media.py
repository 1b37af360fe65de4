"""Media decoding, face crops and degradations on real media built with PyAV."""

from __future__ import annotations

import shutil
import wave

import numpy as np
import pytest

from armer.extractors import (
    MediaError,
    add_noise,
    blur_frames,
    crop_faces,
    drop_words,
    load_audio,
    load_frames,
    load_media,
)
from armer.extractors.media import SUPPORTED_EXTS
from armer.extractors.samples import CODECS, face_image, write_clip

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng not installed (apt-get install -y espeak-ng)")
FPS = 10


def moving_face(n: int) -> list[np.ndarray]:
    """``n`` frames of the astronaut photograph panning slowly to the right."""
    img = face_image()
    return [np.roll(img, 3 * i, axis=1) for i in range(n)]


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory, speech):
    d = tmp_path_factory.mktemp("media")
    write_clip(d / "clip.mp4", moving_face(30), fps=FPS, audio=speech)
    write_clip(d / "silent.mp4", moving_face(20), fps=FPS)
    write_clip(d / "speech.wav", audio=speech)
    rng = np.random.default_rng(0)
    (d / "corrupt.mp4").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (d / "truncated.mp4").write_bytes((d / "clip.mp4").read_bytes()[:2000])
    (d / "empty.wav").write_bytes(b"")
    with wave.open(str(d / "nosamples.wav"), "wb") as w:  # a valid header and no samples
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
    (d / "notes.txt").write_text("not media")
    from PIL import Image

    Image.fromarray(face_image()).save(d / "face.png")
    return d


@pytest.mark.parametrize("ext", sorted(CODECS))
def test_every_supported_format_decodes(tmp_path, speech, ext):
    is_video = CODECS[ext][0] is not None
    path = write_clip(tmp_path / f"x{ext}", moving_face(20) if is_video else None, fps=FPS, audio=speech)
    media = load_media(path)
    assert media.kind == ("video" if is_video else "audio")
    assert media.audio.dtype == np.float32 and media.audio.ndim == 1
    # codecs pad a few ms; the speech itself must survive decoding at 16 kHz
    assert abs(media.audio.size - speech.size) < 0.05 * speech.size
    assert np.abs(media.audio).max() > 0.3
    if is_video:
        assert len(media.frames) == 4  # 2 s at 2 fps
        assert all(f.dtype == np.uint8 and f.shape == (512, 512, 3) for f in media.frames)
    else:
        assert media.frames == []


def test_clip_audio_and_frames(media_dir, speech):
    media = load_media(media_dir / "clip.mp4", fps=4, max_frames=100)
    assert media.frame_times == pytest.approx([0.0, 0.3, 0.5, 0.8, 1.0, 1.3, 1.5, 1.8, 2.0, 2.3, 2.5, 2.8], abs=0.06)
    assert media.duration == pytest.approx(speech.size / 16000, abs=0.15)
    # the decoded audio is the synthesised speech up to codec loss and the encoder's delay
    lag = int(np.argmax(np.correlate(media.audio[:4000 + speech.size], speech[:8000], mode="valid")))
    assert lag < 4000
    n = min(media.audio.size - lag, speech.size)
    assert np.corrcoef(media.audio[lag:lag + n], speech[:n])[0, 1] > 0.9
    assert media.notices == []


def test_image_gives_one_frame(media_dir):
    media = load_media(media_dir / "face.png")
    assert media.kind == "image" and media.audio is None and media.duration == 0.0
    assert len(media.frames) == 1
    np.testing.assert_array_equal(media.frames[0], face_image())


def test_limits_are_applied_with_notices(media_dir):
    media = load_media(media_dir / "clip.mp4", max_seconds=1.0, fps=10, max_frames=4, max_side=256)
    assert media.audio.size == 16000
    assert media.duration == pytest.approx(1.0)
    assert len(media.frames) == 4 and media.frames[0].shape == (256, 256, 3)
    assert max(media.frame_times) < 1.0
    text = " | ".join(media.notices)
    assert "only the first 1 s are used" in text
    assert "downscaled from 512x512 to 256x256" in text
    assert "10 frames sampled at 10 fps: kept 4" in text


def test_missing_streams(media_dir):
    silent = load_media(media_dir / "silent.mp4")
    assert silent.audio is None and len(silent.frames) == 4
    assert any("no audio stream" in n for n in silent.notices)
    with pytest.raises(MediaError, match="silent.mp4: has no audio stream"):
        load_audio(media_dir / "silent.mp4")
    with pytest.raises(MediaError, match="speech.wav: has no video stream"):
        load_frames(media_dir / "speech.wav")
    with pytest.raises(MediaError, match="has no audio stream"):
        load_media(media_dir / "silent.mp4", require=["audio", "video"])


@pytest.mark.parametrize("name, problem", [
    ("corrupt.mp4", "cannot be decoded: corrupt"),
    ("truncated.mp4", "corrupt"),
    ("empty.wav", "zero-length file"),
    ("nosamples.wav", "zero-length media"),
    ("notes.txt", "unsupported format '.txt'"),
    ("missing.mp4", "file not found"),
])
def test_bad_files_raise_media_error(media_dir, name, problem):
    with pytest.raises(MediaError, match=problem) as info:
        load_media(media_dir / name)
    assert isinstance(info.value, ValueError)
    assert name in str(info.value)


def test_invalid_limits_are_rejected(media_dir):
    for bad in ({"fps": 0}, {"max_frames": 0}, {"max_seconds": -1.0}):
        with pytest.raises(ValueError, match="need fps > 0"):
            load_media(media_dir / "clip.mp4", **bad)
    with pytest.raises(ValueError, match="require must name"):
        load_media(media_dir / "clip.mp4", require=["text"])


def test_supported_extensions_listed_in_error(media_dir):
    with pytest.raises(MediaError) as info:
        load_media(media_dir / "notes.txt")
    assert all(ext in str(info.value) for ext in SUPPORTED_EXTS)


def test_crop_faces_finds_the_astronaut():
    img = face_image()
    blank = np.full_like(img, 128)
    crops, share = crop_faces([img, blank])
    assert share == 0.5
    face, whole = crops
    assert whole is blank  # no face: the frame is kept whole
    h, w = face.shape[:2]
    assert h == w and 100 < h < 300  # a square crop of the face, not the whole 512x512 photograph
    # the crop lies on the face: skin tones dominate its centre
    centre = face[h // 3: 2 * h // 3, w // 3: 2 * w // 3].astype(int)
    assert (centre[..., 0] > centre[..., 2]).mean() > 0.8
    assert crop_faces([]) == ([], 0.0)


def test_add_noise_hits_the_snr_and_is_seeded(speech):
    for snr in (5.0, 10.0):
        noisy = add_noise(speech, snr, seed=1)
        noise = noisy - speech
        measured = 10 * np.log10(np.mean(speech.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2))
        assert measured == pytest.approx(snr, abs=0.1)
    np.testing.assert_array_equal(add_noise(speech, 5, seed=3), add_noise(speech, 5, seed=3))
    assert not np.array_equal(add_noise(speech, 5, seed=3), add_noise(speech, 5, seed=4))
    silence = np.zeros(100, np.float32)
    np.testing.assert_array_equal(add_noise(silence, 5, seed=0), silence)


def test_blur_frames_removes_detail():
    img = face_image()

    def detail(x: np.ndarray) -> float:
        return float(np.abs(np.diff(x.astype(float), axis=1)).mean())

    b2, b4 = blur_frames([img], 2)[0], blur_frames([img], 4)[0]
    assert b2.shape == img.shape and b2.dtype == np.uint8
    assert detail(img) > detail(b2) > detail(b4)
    np.testing.assert_array_equal(blur_frames([img], 1)[0], img)
    with pytest.raises(ValueError, match="positive integer"):
        blur_frames([img], 1.5)


def test_drop_words_is_seeded():
    text = "one two three four five six seven eight nine ten"
    assert drop_words(text, 0.5, seed=7) == drop_words(text, 0.5, seed=7)
    assert drop_words(text, 0.0) == text and drop_words(text, 1.0) == ""
    kept = drop_words(text, 0.5, seed=7).split()
    assert 0 < len(kept) < 10 and kept == [w for w in text.split() if w in kept]
    with pytest.raises(ValueError):
        drop_words(text, 1.5)
