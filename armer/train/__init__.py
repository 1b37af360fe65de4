"""Cross-validated training on MERBench-format features: ``python -m armer.train`` (``cli``),
the folds (``folds``) and the batched fold-ensemble training loop (``loop``)."""
