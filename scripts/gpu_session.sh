#!/usr/bin/env bash
# bash scripts/gpu_session.sh [--quick]
#
# Everything a short GPU lease should measure, in order of value, each step time-boxed so that the later ones still
# run and a stopped step keeps what it measured:
#   1. wheels found in .whl/ go to /tmp/site (on PYTHONPATH): a GPU image may lack datasets / jsonargparse or carry
#      a transformers older than pyproject.toml's lower bound (download them where the registry is reachable with
#      scripts/gpu_wheels.sh: docs/benchmarks.md, "GPU").
#   2. the GPU test tier: pytest -m gpu tests/gpu                                       (GPU_TESTS_S, default 150 s)
#   3. the GPU benchmark: scripts/bench_gpu.py, the Llama case first (MFU), then BERT   (GPU_BENCH_S, default 330 s)
#   4. the strategies: scripts/gpu_checks.sh (DDP / FSDP / DeepSpeed x precision)       (GPU_CHECKS_S, default 100 s)
# Results go to $OUT (the device machine's return folder; ./gpu_session_out elsewhere): summary.txt, the benchmark's
# results.json / results.md, and results.tgz with every log. Publish the benchmark here afterwards with
#   python scripts/bench_gpu.py --from-results <folder>/bench/results.json --update-docs
# --quick runs the same plumbing on CPU (tiny models; the GPU tests and checks skip, saying why): a test of this file.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/gpu_session_out}"
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
QUICK=""
[ "${1:-}" = "--quick" ] && QUICK="--quick"
mkdir -p "$OUT/logs"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

say() { echo "$*" | tee -a "$SUMMARY"; }

# Runs "$@" under a time limit, its output in logs/<name>.log; records status and seconds in the summary.
step() {
  local name="$1" limit="$2"
  shift 2
  local started=$SECONDS
  timeout --kill-after=10 "$limit" "$@" > "$OUT/logs/$name.log" 2>&1
  local rc=$?
  local state="ok"
  [ $rc -ne 0 ] && state="exit $rc"
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && state="stopped at its ${limit}s limit"
  say "$(printf '%-10s %-32s %4ss' "$name" "$state" "$((SECONDS - started))")"
  return 0
}

if ls "$ROOT"/.whl/*.whl > /dev/null 2>&1; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$ROOT"/.whl/*.whl > "$OUT/logs/wheels.log" 2>&1 && say "wheels     installed to /tmp/site" \
    || say "wheels     install failed (logs/wheels.log)"
  export PYTHONPATH="/tmp/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
  # DeepSpeed from its source archive, no ops compiled ahead, in a folder of its own that only the strategy checks
  # see: transformers.Trainer imports an importable deepspeed, so a broken one would stop the benchmark's baselines
  if ls "$ROOT"/.whl/deepspeed-*.tar.gz > /dev/null 2>&1; then
    DS_BUILD_OPS=0 "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir \
      --target /tmp/site-deepspeed "$ROOT"/.whl/deepspeed-*.tar.gz > "$OUT/logs/deepspeed.log" 2>&1 \
      && say "deepspeed  $(PYTHONPATH="/tmp/site-deepspeed:$PYTHONPATH" "$PYTHON" -c "import deepspeed; print(deepspeed.__version__, 'built from source, no ops (for the strategy checks)')" 2>&1 | tail -1)" \
      || say "deepspeed  build failed (logs/deepspeed.log): ZeRO checks skipped"
  fi
else
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
say "machine    $("$PYTHON" -c "import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')") | $("$PYTHON" -c "import torch, transformers, lightning; print('torch', torch.__version__, '| transformers', transformers.__version__, '| lightning', lightning.__version__)" 2>&1 | tail -1) | $(date -u +%Y-%m-%d)"

step gpu_tests "${GPU_TESTS_S:-150}" "$PYTHON" -m pytest -q -p no:cacheprovider -m gpu -rs tests/gpu
tail -n 3 "$OUT/logs/gpu_tests.log" | sed 's/^/           /' | tee -a "$SUMMARY"

if [ -n "$QUICK" ]; then
  step bench "${GPU_BENCH_S:-330}" "$PYTHON" scripts/bench_gpu.py --quick --cases llama-300m --out "$OUT/bench"
else
  step bench "${GPU_BENCH_S:-330}" "$PYTHON" scripts/bench_gpu.py --cases llama-300m bert-base --out "$OUT/bench"
fi
if [ -f "$OUT/bench/results.json" ]; then  # also what a stopped benchmark measured
  "$PYTHON" scripts/bench_gpu.py --from-results "$OUT/bench/results.json" --out "$OUT/bench" \
    > "$OUT/logs/bench_table.log" 2>&1
  grep '^|\|^####\|^Measured' "$OUT/logs/bench_table.log" | tee -a "$SUMMARY"
fi

step checks "${GPU_CHECKS_S:-100}" env PYTHON="$PYTHON" PYTHONPATH="/tmp/site-deepspeed:$PYTHONPATH" \
  bash scripts/gpu_checks.sh "$OUT/checks"
tail -n 5 "$OUT/logs/checks.log" | sed 's/^/           /' | tee -a "$SUMMARY"

tar czf "$OUT/results.tgz" -C "$OUT" logs $(cd "$OUT" && ls -d bench checks 2>/dev/null) 2>/dev/null
[ -f "$OUT/bench/results.json" ] && cp "$OUT/bench/results.json" "$OUT/bench_results.json"
echo
echo "==== summary ($SUMMARY)"
cat "$SUMMARY"
