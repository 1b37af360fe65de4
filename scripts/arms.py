"""The trained arms the result scripts compare, in their order: V1, the seed author's recipe
(docs/training.md, "Recipes"), V2 at its defaults. ARMS: each arm's `python -m armer.train` flags;
ARM_NAMES: its name in a report's rows; ARM_LABELS: its short name in table headers and checks.
Shared by scripts/run_experiments.py and scripts/real_data.py."""
from __future__ import annotations

ARMS: dict[str, list[str]] = {
    "v1": ["--model", "attention_robust"],
    "seed": ["--model", "attention_robust_v2", "--recipe", "seed", "--degraded_views", "0"],
    "v2": ["--model", "attention_robust_v2"],
}
ARM_NAMES = {"v1": "V1 (attention_robust)", "seed": "seed recipe (--recipe seed)", "v2": "V2 (defaults)"}
ARM_LABELS = {"v1": "V1", "seed": "seed recipe", "v2": "V2"}


def arms_line(keys) -> str:
    """'V1 `--model attention_robust`; seed recipe `...`; V2 `...`': the arms `keys` with their flags."""
    return "; ".join(f"{ARM_LABELS[key]} `{' '.join(ARMS[key])}`" for key in keys)
