"""The paired emotion benchmark (EmoDB speech + FER2013 faces + MELD text, paired by class).

    python -m armer.benchmark build --data_root ../shared/data --out ~/.cache/armer/bench
    python -m armer.benchmark info --data_root ../shared/data

See ``armer.benchmark.build`` for the pairing, the splits and the corpora of the label file.
"""
from armer.benchmark.build import (
    CORPUS_DESCRIPTIONS,
    NOISE_CORPORA,
    BuildOptions,
    build,
)
from armer.benchmark.sources import CLASSES, SourceError, data_root

__all__ = ["CLASSES", "CORPUS_DESCRIPTIONS", "NOISE_CORPORA", "BuildOptions", "SourceError", "build", "data_root"]
