"""Layers holding E independent copies of their weights, run as one batched op: E is the ensemble dim.

Cross-validation trains one model per fold. The models are small, so a step of one is mostly
per-op overhead; stacked as the E members of one network, each layer is a single batched matmul
for all folds, which keeps MER-scale training to minutes. So every parameter here has a leading
dim E (member e's weights are `param[e]`) and every activation is (E, ...). Each member is
initialised on its own from its torch layer's distribution and, since the losses sum the members'
own means (`armer.model.losses`), trains as if it were alone. The same stack predicts as the fold
ensemble (`armer.model.Ensemble`).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class Linear(nn.Module):
    """E `nn.Linear` layers: (E, ..., in) -> (E, ..., out)."""

    def __init__(self, E: int, in_dim: int, out_dim: int):
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)
        self.weight = nn.Parameter(torch.empty(E, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(E, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1, x.shape[-1])
        return torch.baddbmm(self.bias, flat, self.weight).view(*x.shape[:-1], -1)


class ModalityLinear(nn.Module):
    """E x M `nn.Linear` layers, one per modality: (E, B, M, in) -> (E, B, M, out)."""

    def __init__(self, E: int, M: int, in_dim: int, out_dim: int):
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)
        self.weight = nn.Parameter(torch.empty(E, M, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(E, M, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        E, B, M, in_dim = x.shape
        flat = x.transpose(1, 2).reshape(E * M, B, in_dim)
        out = torch.baddbmm(self.bias.flatten(0, 1), flat, self.weight.flatten(0, 1))
        return out.view(E, M, B, -1).transpose(1, 2).contiguous()  # strided tensors slow later ops


class LayerNorm(nn.Module):
    """`nn.LayerNorm` over the last dim with E affine transforms: (E, B, H) -> (E, B, H)."""

    def __init__(self, E: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(E, 1, dim))
        self.bias = nn.Parameter(torch.zeros(E, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:]) * self.weight + self.bias


class LSTM(nn.Module):
    """E one-layer `nn.LSTM`s (batch_first): (E, B, T, D) -> outputs (E, B, T, H).

    The weights are stacked parameters named as `nn.LSTM` names them (`weight_ih_l0`, ...); a
    weightless `nn.LSTM` template runs them one member at a time (`torch.func.functional_call`),
    since torch has no batched LSTM kernel.
    """

    def __init__(self, E: int, in_dim: int, hidden_dim: int):
        super().__init__()
        template = nn.LSTM(in_dim, hidden_dim, batch_first=True)
        bound = 1 / math.sqrt(hidden_dim)
        stacked = {name: nn.Parameter(torch.stack([torch.empty_like(p).uniform_(-bound, bound) for _ in range(E)]))
                   for name, p in template.named_parameters()}
        # Registered in sorted order, as the nn.ParameterDict that used to hold them did: the
        # parameter order fixes the summation order of gradient clipping, so a run reproduces.
        for name in sorted(stacked):
            self.register_parameter(name, stacked[name])
        self._template = [template.requires_grad_(False)]  # a list: not a registered submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        template = self._template[0]
        return torch.stack([
            torch.func.functional_call(template, {name: p[e] for name, p in self.named_parameters()}, (x[e],))[0]
            for e in range(x.shape[0])
        ])


class Dropout(nn.Module):
    """Inverted dropout, as `nn.Dropout`, with the mask drawn from uniforms: on CPU torch's
    `bernoulli_` takes about twice as long at these sizes, and training calls dropout 9 times a step."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * (torch.rand_like(x) >= self.p) * (1.0 / (1.0 - self.p))
