"""Compile time of ``torch_compile_scope`` ``model`` (the whole model) against ``blocks`` (regional compilation), by
depth: a BERT encoder of 4, 8 and 16 layers, each run in a fresh process with an empty TorchInductor cache.

    python scripts/compile_time.py                     # CPU or GPU, whatever torch sees; prints a markdown table
    python scripts/compile_time.py --layers 4 8 --device cuda

The first training step (forward + backward) holds the compilation; the next steps give the step time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(scope: str, layers: int, device: str) -> dict[str, float]:
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")
    import torch
    import transformers

    from hf_lightning.modules.loading import compile_blocks

    if device == "cpu":
        torch.set_num_threads(1)
    config = transformers.BertConfig(hidden_size=128, num_hidden_layers=layers, num_attention_heads=4,
                                     intermediate_size=256, vocab_size=1000, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0)
    model = transformers.BertForSequenceClassification(config).to(device)
    if scope == "model":
        model = torch.compile(model)
    elif scope == "blocks":
        compile_blocks(model, {})
    ids = torch.randint(1, 1000, (8, 64), device=device)
    labels = torch.randint(0, 2, (8,), device=device)

    def step() -> float:
        started = time.perf_counter()
        model(input_ids=ids, labels=labels).loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    first = step()
    steps = [step() for _ in range(10)]
    return {"first_step_s": first, "step_ms": 1000 * sorted(steps)[len(steps) // 2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", nargs=3, metavar=("SCOPE", "LAYERS", "DEVICE"))
    parser.add_argument("--layers", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    if args.child:
        scope, layers, device = args.child
        print("RESULT" + json.dumps(child(scope, int(layers), device)))
        return
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rows = ["| layers | scope | first step s (compiles) | step ms |", "|---:|---|---:|---:|"]
    for layers in args.layers:
        for scope in ("none", "model", "blocks"):
            proc = subprocess.run([sys.executable, __file__, "--child", scope, str(layers), device], env=env,
                                  capture_output=True, text=True, check=True)
            result = json.loads(proc.stdout.split("RESULT", 1)[1])
            rows.append(f"| {layers} | {scope} | {result['first_step_s']:.1f} | {result['step_ms']:.1f} |")
            print(rows[-1], flush=True)
    print(f"\n{device}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
