"""Helpers of ``scripts/bench.py``: what every run shares (`common`), the training runs (`train`), the evaluation
runs (`evaluate`). Each run imports only the libraries its door needs, so start-up times compare fairly."""
