"""ARMER: robust multimodal emotion recognition (AttentionRobustV2), laid out as the data flows.

    extractors/    clip -> utterance features (imported as ``armer.extractors``)
    data           MERBench feature folders and label files -> corpora
    model/         AttentionRobustV2 and the V1 baseline (``create_model``), losses, missing modalities
    train/         cross-validated training (``python -m armer.train``)
    evaluate/      the evaluation conditions and metrics (``python -m armer.evaluate``)
    checkpoint     safetensors + config.json
    predict/       clip -> emotion with a checkpoint (``Predictor``, ``python -m armer.predict``)
    benchmark/     the paired benchmark builder; merbench/: the MERBench plug-in
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

# A checkout keeps the extractors in its top-level extractors/ folder; an installed armer has them
# as armer/extractors (pyproject.toml maps one onto the other). Either way the import name is
# armer.extractors, so no generic top-level "extractors" package lands in site-packages.
_CHECKOUT_EXTRACTORS = Path(__file__).resolve().parent.parent / "extractors"


class _CheckoutExtractorsFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):  # noqa: D102 (importlib protocol)
        if name != "armer.extractors":
            return None
        return importlib.util.spec_from_file_location(name, _CHECKOUT_EXTRACTORS / "__init__.py",
                                                      submodule_search_locations=[str(_CHECKOUT_EXTRACTORS)])


if not (Path(__file__).parent / "extractors").is_dir() and (_CHECKOUT_EXTRACTORS / "__init__.py").is_file():
    sys.meta_path.append(_CheckoutExtractorsFinder())
