"""MERBench plug-in: AttentionRobustV2 and its V1 baseline as MERBench models.

`python -m armer.merbench install PATH/TO/MERBench` registers `attention_robust_v2` and
`attention_robust` in a MERBench checkout (see `installer`); MERBench then builds
`adapter.AttentionRobustV2(args)` / `adapter.AttentionRobust(args)` through thin shims in
`toolkit/models/`. Importing this package does not import torch; `adapter` does.
"""
from armer.merbench.installer import (
    DEFAULT_MODELS,
    MERBenchError,
    NotMERBenchError,
    check,
    install,
    status,
    uninstall,
)

__all__ = ["DEFAULT_MODELS", "MERBenchError", "NotMERBenchError", "check", "install", "status", "uninstall"]
