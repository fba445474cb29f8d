"""Benchmarks: each prints ratios measured side by side in one process (``dense-face bench ...``)."""
