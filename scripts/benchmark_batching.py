"""One MER-scale training step: the explicit batched layers vs. plain layers batched by torch.func.vmap.

    python scripts/benchmark_batching.py

Issue 13 item 3 asks whether plain `nn.Linear` layers plus torch.func batching would keep
scripts/benchmark_train.py under 5 minutes. This script times one training step of the step loop
in `armer.train.loop.train_members` (forward, task loss + interloss, backward, optimizer step) for
E = 3 fold models (one training worker trains 3 of the 5 folds, single-threaded) at MER scale
(dims 1024 / 5120 / 768, hidden 128, batch 32, 6 classes):

  batched       `create_model(cfg, members=3)`: the layers of `armer.model.batched` (the trainer's model)
  vmap_plain    3 single-member models whose batched layers are swapped for plain torch layers
                (`nn.Linear`, M x `nn.Linear` per modality, `nn.LayerNorm`, `nn.Dropout`), their
                parameters stacked by `torch.func.stack_module_state` and run as
                `vmap(functional_call)` with randomness="different"; gradients by autograd
                through the vmap, the optimizer steps the stacked parameters
  vmap_plain_funcgrad  the same, gradients by `vmap(grad(...))` (per-member grads set as .grad)
  vmap_batched_layers  `create_model(cfg, members=1)` (batched layers with E = 1) under the same vmap

vmap cannot run the full model as written; the script records where it fails (`probes`) and runs
the vmap variants with two stand-ins, drawn to the same distribution:
  - `armer.model.missing.mix_with_noise` picks the noised rows with `nonzero()` (a data-dependent
    shape): replaced by a dense version that draws noise for every row and keeps it where alpha > 0;
  - the decoder block is drawn by `int(torch.randint(...))` inside forward (a batched tensor under
    randomness="different"): drawn once per step outside the vmap (the batched model also uses one
    block for all members).
A reduced configuration (no reconstruction decoders, no feature noise: the two parts that need
the stand-ins; encoders, variational heads, fusion, proxy attention, heads, KL / cross-KL /
calibration remain) is timed as well, with the unmodified code in every variant.

All variants run in one process, alternately in blocks of a few steps (the order rotates every
round), so that load from other work on the shared machine affects them alike; the load averages
are recorded. The projected benchmark_train time of a variant = results/benchmark_train.json
`wall_seconds` x (its median step time / the batched model's); the median of the per-round paired
ratios and the ratio of the 10th percentiles (least disturbed steps) are recorded beside it.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, grad, stack_module_state, vmap

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from report_files import git_commit  # noqa: E402  (scripts/)

from armer.config import ModelConfig  # noqa: E402
from armer.constants import FEATURE_KEYS  # noqa: E402
from armer.model import batched, losses, modeling  # noqa: E402
from armer.model.modeling import AttentionRobustV2, create_model  # noqa: E402

DIMS = (1024, 5120, 768)
BATCH_KEYS = (*FEATURE_KEYS, "present", "emos", "vals", "val_labelled")
# What vmap needs in place of the model's code (see the module docstring): a dense
# mix_with_noise, decoder blocks drawn outside vmap, one_hot as a comparison (vmap(grad) only).
ALL_STAND_INS = frozenset({"noise", "blocks", "one_hot"})


# ---------------------------------------------------------------- the vmap stand-ins

def dense_mix_with_noise(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """`armer.model.missing.mix_with_noise` without `nonzero()`: noise drawn for every row."""
    a = alpha.reshape(*alpha.shape, *([1] * (x.dim() - alpha.dim())))
    mixed = (torch.sqrt(1.0 - a.pow(2)) * x + a * torch.randn_like(x)) * (x != 0)
    return torch.where(a > 0, mixed, x)


class OneHotByComparison:
    """`torch.nn.functional` with `one_hot` as a comparison: F.one_hot checks its labels' range
    with `.item()`, which vmap(grad(...)) cannot run."""

    def __getattr__(self, name):
        return getattr(F, name)

    @staticmethod
    def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
        return (labels.unsqueeze(-1) == torch.arange(num_classes, device=labels.device)).long()


@contextlib.contextmanager
def stand_ins_for_vmap(names: frozenset):
    """Swap `armer.model.modeling`'s names for the vmap stand-ins `names` ("noise", "one_hot")."""
    saved = {"mix_with_noise": modeling.mix_with_noise, "F": modeling.F}
    if "noise" in names:
        modeling.mix_with_noise = dense_mix_with_noise
    if "one_hot" in names:
        modeling.F = OneHotByComparison()
    try:
        yield
    finally:
        modeling.mix_with_noise, modeling.F = saved["mix_with_noise"], saved["F"]


class BlocksDrawnOutside(AttentionRobustV2):
    """AttentionRobustV2 with the decoder blocks of a step set from outside (`fixed_blocks`), as vmap
    cannot draw them inside; the original's draw otherwise."""

    fixed_blocks: list[int] | None = None

    def recon_block(self, modality, decoder):
        if self.fixed_blocks is None:
            return super().recon_block(modality, decoder)
        return self.fixed_blocks[modality]


def draw_blocks(model: AttentionRobustV2) -> list[int] | None:
    if model.config.recon_weight <= 0:
        return None
    return [int(torch.randint(len(decoder.blocks), ())) for decoder in model.decoders]


# ---------------------------------------------------------------- plain layers

class PlainModalityLinear(nn.Module):
    """M plain `nn.Linear`s, one per modality: (..., M, in) -> (..., M, out)."""

    def __init__(self, layers: list[nn.Linear]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([layer(x[..., m, :]) for m, layer in enumerate(self.layers)], dim=-2)


def plain_linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    """nn.Linear with a batched member's weights: weight (in, out), bias (1, out)."""
    layer = nn.Linear(weight.shape[0], weight.shape[1])
    with torch.no_grad():
        layer.weight.copy_(weight.T)
        layer.bias.copy_(bias.reshape(-1))
    return layer


def to_plain(module: nn.Module) -> nn.Module:
    """Swap every layer of `armer.model.batched` (E = 1) for its plain torch layer, weights kept."""
    for name, child in list(module.named_children()):
        if isinstance(child, batched.Linear):
            new = plain_linear(child.weight[0], child.bias[0])
        elif isinstance(child, batched.ModalityLinear):
            new = PlainModalityLinear([plain_linear(child.weight[0, m], child.bias[0, m])
                                       for m in range(child.weight.shape[1])])
        elif isinstance(child, batched.LayerNorm):
            new = nn.LayerNorm(child.weight.shape[-1])
            with torch.no_grad():
                new.weight.copy_(child.weight.reshape(-1))
                new.bias.copy_(child.bias.reshape(-1))
        elif isinstance(child, batched.Dropout):
            new = nn.Dropout(child.p)
        elif isinstance(child, batched.LSTM):
            raise NotImplementedError("LSTM encoders (frame-level features) are not part of this benchmark")
        else:
            new = to_plain(child)
        setattr(module, name, new)
    return module


# ---------------------------------------------------------------- the steps

def make_batches(count: int, E: int, B: int, classes: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """Random MER-scale batches (E, B, ...): about 10% of each modality missing (zeroed), never all."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        present = torch.rand(E, B, 3, generator=g) >= 0.1
        present[..., 1] |= ~present.any(dim=-1)
        batch = {key: torch.randn(E, B, dim, generator=g) * present[..., i, None]
                 for i, (key, dim) in enumerate(zip(FEATURE_KEYS, DIMS))}
        batch.update(present=present, emos=torch.randint(classes, (E, B), generator=g),
                     vals=torch.randn(E, B, generator=g), val_labelled=torch.rand(E, B, generator=g) < 0.9)
        batches.append(batch)
    return batches


def adam(params) -> torch.optim.Optimizer:
    """The trainer's optimizer (armer.train.loop.train_members, TrainConfig defaults lr / l2)."""
    return torch.optim.Adam(params, lr=1e-3, weight_decay=1e-5, fused=True)


class BatchedStep:
    """The trainer's step on `create_model(cfg, members=E)`."""

    def __init__(self, cfg: ModelConfig, E: int, epoch: int):
        self.model = create_model(cfg, members=E)
        self.model.set_epoch(epoch)
        self.model.train()
        self.optimizer = adam(self.model.parameters())

    def __call__(self, batch: dict) -> float:
        out = self.model(batch, check_inputs=False)
        loss = losses.task_loss(out.logits, out.valence, batch["emos"], batch["vals"], batch["val_labelled"])
        loss = loss + out.interloss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


class VmapStep:
    """E single-member models, parameters stacked, run as vmap(functional_call) over the member dim."""

    def __init__(self, cfg: ModelConfig, E: int, epoch: int, plain: bool, func_grad: bool = False,
                 stand_ins: frozenset = ALL_STAND_INS):
        self.stand_ins = frozenset(stand_ins)
        model_class = BlocksDrawnOutside if "blocks" in self.stand_ins else AttentionRobustV2
        members = []
        for _ in range(E):
            m = model_class(cfg, members=1)
            m.set_epoch(epoch)
            members.append(to_plain(m) if plain else m)
        for m in members:
            m.train()
        self.params, self.buffers = stack_module_state(members)
        self.base = copy.deepcopy(members[0]).to("meta")
        self.base.train()
        self.func_grad = func_grad
        self.optimizer = adam(list(self.params.values()))

        def member_loss(params, buffers, batch):
            batch = {k: v.unsqueeze(0) for k, v in batch.items()}  # one member: (1, B, ...)
            out = functional_call(self.base, (params, buffers), (batch,), {"check_inputs": False})
            loss = losses.task_loss(out.logits, out.valence, batch["emos"], batch["vals"], batch["val_labelled"])
            return loss + out.interloss

        self.losses = vmap(member_loss, randomness="different")
        self.grads = vmap(grad(member_loss), randomness="different")

    def __call__(self, batch: dict) -> float:
        batch = {k: batch[k] for k in BATCH_KEYS}
        if isinstance(self.base, BlocksDrawnOutside):
            self.base.fixed_blocks = draw_blocks(self.base)
        with stand_ins_for_vmap(self.stand_ins):
            self.optimizer.zero_grad(set_to_none=True)
            if self.func_grad:
                grads = self.grads(self.params, self.buffers, batch)
                for name, p in self.params.items():
                    p.grad = grads[name]
                loss = float("nan")
            else:
                total = self.losses(self.params, self.buffers, batch).sum()
                total.backward()
                loss = float(total.detach())
        self.optimizer.step()
        return loss


# ---------------------------------------------------------------- checks

def probe(cfg: ModelConfig, E: int, epoch: int, batch: dict) -> list[dict]:
    """One vmap step of the unmodified model, then with the stand-ins added one at a time; the
    error of each attempt (file:line in armer where it failed)."""
    steps = [("unmodified model", frozenset()), ("+ dense mix_with_noise", frozenset({"noise"})),
             ("+ decoder blocks drawn outside vmap", frozenset({"noise", "blocks"})),
             ("+ one_hot as a comparison", ALL_STAND_INS)]
    results = []
    for layers, plain, func_grad in (("plain", True, False), ("plain", True, True), ("batched (E=1)", False, False)):
        gradients = "vmap(grad(loss))" if func_grad else "autograd through vmap(loss)"
        for label, names in steps:
            torch.manual_seed(0)
            try:
                VmapStep(cfg, E, epoch, plain=plain, func_grad=func_grad, stand_ins=names)(batch)
                error, where = None, None
            except Exception as exc:  # noqa: BLE001 (recorded)
                error = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
                frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/armer/" in f.filename]
                where = f"{Path(frames[-1].filename).relative_to(ROOT)}:{frames[-1].lineno}: {frames[-1].line}" if frames else None
            results.append({"layers": layers, "gradients": gradients, "attempt": label, "stand_ins": sorted(names),
                            "ok": error is None, "error": error, "where": where})
            print(f"probe [{layers}, {gradients}] {label}: {'ok' if error is None else error[:120]}", flush=True)
            if error is None:
                break
    return results


def equivalence(cfg: ModelConfig, E: int, batch: dict) -> float:
    """Max |logit difference| in eval mode between the batched model and vmap over plain layers
    holding the same member weights (checks that the two variants compute the same network)."""
    torch.manual_seed(0)
    network = create_model(cfg, members=E).eval()
    members = []
    for e in range(E):
        m = create_model(cfg, members=1)
        m.load_state_dict({k: (v[e:e + 1] if v.dim() else v) for k, v in network.state_dict().items()})
        members.append(to_plain(m).eval())
    params, buffers = stack_module_state(members)
    base = copy.deepcopy(members[0]).to("meta").eval()
    features = {k: batch[k] for k in (*FEATURE_KEYS, "present")}
    with torch.no_grad():
        reference = network(features, check_inputs=False).logits
        logits = vmap(lambda p, b, x: functional_call(base, (p, b), ({k: v.unsqueeze(0) for k, v in x.items()},),
                                                      {"check_inputs": False}).logits[0])(params, buffers, features)
    return float((reference - logits).abs().max())


# ---------------------------------------------------------------- main

def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def time_variants(variants: dict, batches: list[dict], block: int, rounds: int, warmup: int) -> dict:
    """`rounds` rounds; in each, every variant runs `block` steps in turn (the order rotates), so
    that variants share the machine's load at a grain of a few steps."""
    for name, step in variants.items():
        for i in range(warmup):
            step(batches[i % len(batches)])
        print(f"warmed up {name}", flush=True)
    names = list(variants)
    times = {name: [] for name in names}
    per_round = []
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        row = {"round": r + 1}
        for name in order:
            for i in range(block):
                batch = batches[(r * block + i) % len(batches)]
                start = time.perf_counter()
                variants[name](batch)
                times[name].append((time.perf_counter() - start) * 1000)
            row[name] = round(statistics.fmean(times[name][-block:]), 2)
        per_round.append(row)
        if (r + 1) % 10 == 0:
            print(f"round {r + 1}/{rounds} load {os.getloadavg()[0]:.2f}: {row}", flush=True)
    return {"times": times, "per_round": per_round}


def summarize(measured: dict, reference: str, wall: float) -> dict:
    """Per variant: step-time statistics and the ratio to `reference` (the batched model): of the
    medians, the median of the per-round ratios (each round's blocks ran back to back), and of the
    10th percentiles (the least disturbed steps, nearest to an idle machine's speed)."""
    times, per_round = measured["times"], measured["per_round"]
    ref = times[reference]
    ref_median, ref_p10 = statistics.median(ref), statistics.quantiles(ref, n=10)[0]
    out = {}
    for name, values in times.items():
        median, p10 = statistics.median(values), statistics.quantiles(values, n=10)[0]
        paired = statistics.median(row[name] / row[reference] for row in per_round)
        out[name] = {
            "steps": len(values),
            "median_ms_per_step": round(median, 2),
            "p10_ms_per_step": round(p10, 2),
            "p90_ms_per_step": round(statistics.quantiles(values, n=10)[-1], 2),
            "ratio_of_medians": round(median / ref_median, 3),
            "median_paired_round_ratio": round(paired, 3),
            "ratio_of_p10": round(p10 / ref_p10, 3),
            "projected_benchmark_train_wall_seconds": round(wall * median / ref_median, 1),
            "projected_benchmark_train_wall_seconds_paired": round(wall * paired, 1),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--block", type=int, default=5, help="steps a variant runs before the next one's turn")
    parser.add_argument("--rounds", type=int, default=40, help="rounds of one block per variant (timed steps = block x rounds)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--members", type=int, default=3, help="E: folds one worker trains (3 of 5 on 2 cores)")
    parser.add_argument("--epoch", type=int, default=50,
                        help="model epoch: past the 20-epoch warm-up, so modality dropout and noise are on")
    parser.add_argument("--out", default=str(ROOT / "results" / "benchmark_batching.json"))
    args = parser.parse_args()

    torch.set_num_threads(1)  # a training worker: armer.train.loop.train_folds, 2 workers on 2 cores
    torch.manual_seed(0)
    load_before = [round(x, 2) for x in os.getloadavg()]
    train_json = json.loads((ROOT / "results" / "benchmark_train.json").read_text())
    wall = train_json["wall_seconds"]
    E, B = args.members, 32
    full = ModelConfig()  # attention_robust_v2, utt, 1024/5120/768, hidden 128, 6 classes
    reduced = ModelConfig(recon_weight=0.0, modality_noise=0.0)
    batches = make_batches(8, E, B, full.output_dim1, seed=0)

    probes = {"full": probe(full, E, args.epoch, batches[0]), "reduced": probe(reduced, E, args.epoch, batches[0])}
    max_logit_diff = equivalence(full, E, batches[0])
    print(f"eval logits, batched vs vmap over plain layers: max |diff| {max_logit_diff:.2e}", flush=True)

    results = {}
    started = time.time()
    for label, cfg in (("full", full), ("reduced", reduced)):
        load_start = [round(x, 2) for x in os.getloadavg()]
        needed = {(p["layers"], p["gradients"]): frozenset(p["stand_ins"]) for p in probes[label] if p["ok"]}
        plans = {
            "vmap_plain": {"plain": True, "func_grad": False, "key": ("plain", "autograd through vmap(loss)")},
            "vmap_plain_funcgrad": {"plain": True, "func_grad": True, "key": ("plain", "vmap(grad(loss))")},
            "vmap_batched_layers": {"plain": False, "func_grad": False,
                                    "key": ("batched (E=1)", "autograd through vmap(loss)")},
        }
        torch.manual_seed(1)
        variants = {"batched": BatchedStep(cfg, E, args.epoch)}
        stand_ins = {"batched": []}
        for name, plan in plans.items():
            if plan["key"] in needed:  # a variant no probe could run is left out
                variants[name] = VmapStep(cfg, E, args.epoch, plain=plan["plain"], func_grad=plan["func_grad"],
                                          stand_ins=needed[plan["key"]])
                stand_ins[name] = sorted(needed[plan["key"]])
        print(f"== {label}: stand-ins {stand_ins}", flush=True)
        measured = time_variants(variants, batches, args.block, args.rounds, args.warmup)
        results[label] = {"config": {"recon_weight": cfg.recon_weight, "modality_noise": cfg.modality_noise},
                          "load_average_start": load_start, "load_average_end": [round(x, 2) for x in os.getloadavg()],
                          "stand_ins": stand_ins, "summary": summarize(measured, "batched", wall),
                          "per_round": measured["per_round"]}
    load_after = [round(x, 2) for x in os.getloadavg()]

    result = {
        "command": "python scripts/benchmark_batching.py " + " ".join(sys.argv[1:]),
        "commit": git_commit(),
        "measured": time.strftime("%Y-%m-%d %H:%M:%S"),
        "seconds": round(time.time() - started, 1),
        "machine": {"cpus": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version(),
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "load_average_before": load_before, "load_average_after": load_after},
        "workload": {"model": full.model, "dims": list(DIMS), "hidden_dim": full.hidden_dim, "batch_size": B,
                     "classes": full.output_dim1, "members": E, "model_epoch": args.epoch,
                     "optimizer": "torch.optim.Adam(lr=1e-3, weight_decay=1e-5, fused=True), as armer.train.loop",
                     "block_steps": args.block, "rounds": args.rounds, "warmup_steps": args.warmup},
        "benchmark_train": {"wall_seconds": wall, "measured": train_json.get("measured"),
                            "target_seconds": train_json.get("targets", {}).get("wall_seconds")},
        "probes": probes,
        "stand_ins": {
            "mix_with_noise": "dense: noise drawn for every row, kept where alpha > 0 (vmap cannot batch nonzero())",
            "decoder_block": "drawn once per step outside vmap (int(torch.randint) of a batched tensor fails)",
            "one_hot": "labels == arange(C) (F.one_hot's range check calls .item(), which vmap(grad) rejects)",
            "applied": "each vmap variant runs with the stand-ins of its first probe attempt that ran "
                       "(results.<config>.stand_ins)",
        },
        "eval_logits_max_abs_diff_batched_vs_vmap_plain": max_logit_diff,
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    Path(args.out).with_suffix(".md").write_text(markdown(result), encoding="utf-8")
    print(json.dumps({k: v["summary"] for k, v in results.items()}, indent=1))


def markdown(result: dict) -> str:
    """The report: per configuration, ms/step of each variant, its ratio to the batched layers and
    the projected benchmark_train time; which ops vmap could not run; the conclusion."""
    wall, target = result["benchmark_train"]["wall_seconds"], result["benchmark_train"]["target_seconds"]
    lines = ["# Batched layers vs. plain layers + torch.func.vmap", "",
             f"Generated by `{result['command']}` at commit `{result['commit']}` on {result['measured']}; "
             "do not edit. Data: the JSON file beside this one.", "",
             f"One training step (forward, loss with interloss, backward, Adam) at MER scale: "
             f"{result['workload']}. Load average {result['machine']['load_average_before']} -> "
             f"{result['machine']['load_average_after']}. Projection: benchmark_train's measured {wall} s "
             f"x the paired step-time ratio (target {target} s).", ""]
    fastest_vmap = None
    for name, run in result["results"].items():
        lines += [f"## {name} model ({run['config']})", "",
                  "| variant | median ms/step | p10 | paired ratio | projected benchmark_train (s) | stand-ins |",
                  "|---|---|---|---|---|---|"]
        for variant, row in run["summary"].items():
            lines.append(f"| {variant} | {row['median_ms_per_step']} | {row['p10_ms_per_step']} | "
                         f"{row['median_paired_round_ratio']} | {row['projected_benchmark_train_wall_seconds_paired']} | "
                         f"{', '.join(run['stand_ins'][variant]) or '-'} |")
            if variant != "batched":
                projected = row["projected_benchmark_train_wall_seconds_paired"]
                fastest_vmap = projected if fastest_vmap is None else min(fastest_vmap, projected)
        lines.append("")
    lines += ["## What vmap could not run", ""]
    lines += sorted({f"- `{p['where']}`: {p['error'][:100]}..." for probes in result["probes"].values()
                     for p in probes if not p["ok"]})
    keep = fastest_vmap is not None and fastest_vmap > wall
    lines += ["", "## Conclusion", "",
              (f"Keep the batched layers: every vmap variant is slower per step (fastest projected "
               f"{fastest_vmap} s against {wall} s measured)." if keep else
               f"A vmap variant is projected at {fastest_vmap} s against {wall} s measured: consider switching."), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
