"""Scoring masks against ground truth (DSC, NSD) for ``medsam-eval``, the benchmarks and training; the app never
calls it (and the packaged app leaves it out, with scipy)."""
