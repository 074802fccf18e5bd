"""Helpers of ``scripts/bench.py``: the workloads and their runs (`workloads`), what every run shares (`common`), the
training runs of the five doors (`train`), their evaluation (`evaluate`), and the figures, ratios, targets and tables
(`report`). Each run imports only the libraries its door needs, so start-up times compare fairly."""
