#!/usr/bin/env bash
# bash scripts/gpu_checks.sh [OUT_DIR]
#
# Checks for a CUDA machine (not run where no GPU is available): for each strategy, trains the same tiny BERT
# classifier through the HF-style Trainer under torchrun on every visible GPU and records loss, peak memory and
# throughput in OUT_DIR/results.jsonl, then runs the GPU-only tests (pytest -m gpu, if any).
#   precision: fp32, bf16 (bf16-mixed), fp16 (16-mixed with the loss scaler; scaler.pt must appear in checkpoints)
#   strategy:  DDP, FSDP1 (fsdp_config version 1), FSDP2 (default version), DeepSpeed ZeRO-2, ZeRO-3 (+ CPU offload)
# Needs: the project installed, CUDA, and for DeepSpeed: pip install 'hf_lightning[deepspeed]'.
set -euo pipefail

OUT="${1:-gpu_checks_out}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "No CUDA device: nothing to check here (these checks need a GPU)." >&2
  exit 2
fi
NGPU="$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")"
HAS_DEEPSPEED="$("$PYTHON" -c "import importlib.util as u; print(int(u.find_spec('deepspeed') is not None))")"
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"

# One training run; its keyword arguments for TrainingArguments come as a JSON object in $2.
JOB="$OUT/gpu_job.py"
cat > "$JOB" <<'PY'
import json, os, sys, time

import datasets, torch, transformers
from transformers import BertConfig, BertForSequenceClassification

import hf_lightning

name, extra, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
steps, per_device, seq = 30, 16, 128
gen = torch.Generator().manual_seed(0)
ids = torch.randint(1, 30000, (per_device * steps * 8, seq), generator=gen)
data = datasets.Dataset.from_dict({"input_ids": ids.tolist(), "labels": (ids[:, 0] % 2).tolist()})
transformers.set_seed(0)
model = BertForSequenceClassification(BertConfig(hidden_size=512, num_hidden_layers=6, num_attention_heads=8,
                                                 intermediate_size=2048))
stamps = []

class Clock(transformers.TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        torch.cuda.synchronize()
        stamps.append(time.perf_counter())

args = hf_lightning.TrainingArguments(os.path.join(out, name), per_device_train_batch_size=per_device,
                                      max_steps=steps, save_strategy="steps", save_steps=steps, report_to=[],
                                      logging_steps=10, disable_tqdm=True, **extra)
trainer = hf_lightning.Trainer(model=model, args=args, train_dataset=data, callbacks=[Clock()])
torch.cuda.reset_peak_memory_stats()
output = trainer.train()
pl = trainer.pl_trainer
world = pl.world_size
timed = stamps[-1] - stamps[4]
checkpoint = os.path.join(args.output_dir, f"checkpoint-{steps}")
record = {
    "name": name, "strategy": type(pl.strategy).__name__, "precision": pl.precision, "world_size": world,
    "train_loss": output.training_loss, "final_loss": [r["loss"] for r in trainer.state.log_history if "loss" in r][-1],
    "samples_per_second": (steps - 5) * per_device * world / timed,
    "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
    "checkpoint_files": sorted(os.listdir(checkpoint)) if os.path.isdir(checkpoint) else [],
}
metrics = trainer.evaluate(data.select(range(101)))  # 101 samples: uneven across ranks, gathered exactly
record["eval_loss"] = metrics["eval_loss"]
if pl.is_global_zero:
    with open(os.path.join(out, "results.jsonl"), "a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record))
PY

run() {  # run NAME JSON_ARGS
  echo "== $1 ($NGPU GPU(s)): $2"
  if ! "$PYTHON" -m torch.distributed.run --nproc_per_node "$NGPU" --master_addr 127.0.0.1 \
      --master_port "$((29500 + RANDOM % 1000))" "$JOB" "$1" "$2" "$OUT" > "$OUT/$1.log" 2>&1; then
    echo "   FAILED, see $OUT/$1.log"; echo "{\"name\": \"$1\", \"failed\": true}" >> "$RESULTS"
  fi
}

ZERO2='{"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto", "gradient_clipping": "auto", "bf16": {"enabled": "auto"}}'
ZERO3='{"zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu"},
        "stage3_gather_16bit_weights_on_model_save": true}, "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto", "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"}}'
TUTORIAL='{"train_batch_size": "auto", "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
           "fp16": {"enabled": true}, "zero_optimization": {"stage": 2}}'

run ddp_fp32 '{}'
run ddp_bf16 '{"bf16": true}'
run ddp_fp16 '{"fp16": true}'
run fsdp2_bf16 '{"bf16": true, "fsdp": "full_shard auto_wrap"}'
run fsdp2_bf16_offload '{"bf16": true, "fsdp": "full_shard auto_wrap offload"}'
run fsdp1_bf16 '{"bf16": true, "fsdp": "full_shard auto_wrap", "fsdp_config": {"version": 1}}'
run fsdp1_fp16 '{"fp16": true, "fsdp": "shard_grad_op auto_wrap", "fsdp_config": {"version": 1}}'
if [ "$HAS_DEEPSPEED" = "1" ]; then
  run zero2_bf16 "{\"bf16\": true, \"deepspeed\": $ZERO2}"
  run zero3_bf16_offload "{\"bf16\": true, \"deepspeed\": $ZERO3}"
  run zero2_tutorial_fp16 "{\"fp16\": true, \"learning_rate\": 1e-4, \"deepspeed\": $TUTORIAL}"
else
  echo "DeepSpeed not installed: ZeRO-2 / ZeRO-3 skipped (pip install 'hf_lightning[deepspeed]')."
fi

# fp16 must leave scaler.pt in the checkpoint (transformers' layout); every run must have reached a finite loss.
"$PYTHON" - "$RESULTS" <<'PY'
import json, math, sys

rows = [json.loads(line) for line in open(sys.argv[1])]
print(f"{'run':24} {'strategy':22} {'precision':11} {'GPUs':>4} {'samples/s':>10} {'peak GiB':>9} {'loss':>8}")
problems = []
for r in rows:
    if r.get("failed"):
        problems.append(f"{r['name']}: failed"); continue
    print(f"{r['name']:24} {r['strategy']:22} {r['precision']:11} {r['world_size']:>4} "
          f"{r['samples_per_second']:>10.1f} {r['peak_memory_gib']:>9.2f} {r['final_loss']:>8.4f}")
    if not math.isfinite(r["final_loss"]):
        problems.append(f"{r['name']}: non-finite loss")
    if "fp16" in r["name"] and "DeepSpeed" not in r["strategy"] and "scaler.pt" not in r["checkpoint_files"]:
        problems.append(f"{r['name']}: no scaler.pt in the checkpoint")
print("\n".join(problems) or "all runs finished with finite losses")
sys.exit(1 if problems else 0)
PY

cd "$ROOT" && "$PYTHON" -m pytest -q -m gpu tests || [ $? -eq 5 ]  # 5: no gpu tests collected
