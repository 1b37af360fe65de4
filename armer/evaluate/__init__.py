"""Scoring under missing and degraded modalities: the conditions (``conditions``), the metrics
(``metrics``), ``python -m armer.evaluate`` (``cli``) and ablation tables (``report``)."""
