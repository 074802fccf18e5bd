#!/usr/bin/env bash
# bash scripts/gpu_wheels.sh [PYTHON_VERSION]
#
# Downloads into .whl/ (git-ignored) the wheels that scripts/gpu_session.sh installs on the lent GPU machine, whose
# image (as last listed, 2026-11) has torch 2.11, lightning 2.6.6, transformers 5.17 with huggingface_hub 1.33, pandas,
# pyarrow and xxhash, but no datasets, jsonargparse, liger-kernel, pydantic or deepspeed. transformers 5.25 (pyproject's lower bound is
# 5.23) checks huggingface_hub >= 2.4 when it is imported, and hub 2.4 needs httpx2 / httpcore2 / truststore, a newer
# hf-xet and click: without them `import transformers` fails there and nothing runs. About 22 MB (the device call
# carries at most 64 MiB). PYTHON_VERSION: the machine's Python (3.12 there; 3.11 to try the set here, with a venv
# holding those versions: see docs/benchmarks.md, "GPU").
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-3.12}"
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d .whl \
  transformers==5.25.0 datasets==5.2.0 "dill<0.4.2" "multiprocess<0.70.20" jsonargparse docstring-parser hjson \
  liger-kernel huggingface-hub==2.4.0 httpx2==2.17.0 httpcore2==2.17.0 truststore "idna>=3.18" "hf-xet>=1.6,<2" \
  "click>=8.4.2" "regex>=2025.10.22" \
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types typing-inspection "typing-extensions>=4.16"
# DeepSpeed (for scripts/gpu_checks.sh's ZeRO-2 / ZeRO-3 runs) travels as its source archive: gpu_session.sh builds it
# there with DS_BUILD_OPS=0 (no CUDA ops compiled ahead; about 10 s) and --no-build-isolation (the image's torch)
python3 -m pip download -q --no-deps --no-binary=:all: -d .whl deepspeed==0.19.8
ls .whl
du -sh .whl
