"""DDP throughput on this machine: 2 processes against 1 with the same global batch (not a test; prints a ratio).

    python tests/distributed/throughput.py            # runs both, prints samples/s of each and the ratio
    python tests/distributed/throughput.py --job OUT PER_DEVICE_BATCH   # one run (what the launcher starts)

A 2-layer BERT (hidden 128) classifies random 64-token sequences for 30 optimizer steps (the first 5 are warm-up and
not timed); the global batch is 32 in both runs. Throughput is samples per second over the timed steps. Three set-ups, run
forwards then backwards so that load from other work on the machine hits all alike: one process with one torch
thread, one process with two threads, two processes with one thread each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

GLOBAL_BATCH, STEPS, WARMUP, SEQ = 32, 30, 5, 64


def _job(out: str, per_device_batch: int) -> None:
    import datasets
    import torch
    import transformers
    from transformers import BertConfig, BertForSequenceClassification

    import hf_lightning

    torch.set_num_threads(int(os.environ["HFL_THREADS"]))
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 1000, (GLOBAL_BATCH * STEPS, SEQ), generator=gen)
    data = datasets.Dataset.from_dict({"input_ids": ids.tolist(), "labels": (ids[:, 0] % 2).tolist()})
    transformers.set_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=2,
                                                     num_attention_heads=4, intermediate_size=512))
    stamps: list[float] = []

    class Clock(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

    args = hf_lightning.TrainingArguments(out, per_device_train_batch_size=per_device_batch, max_steps=STEPS,
                                          use_cpu=True, report_to=[], save_strategy="no", disable_tqdm=True,
                                          logging_steps=STEPS)
    trainer = hf_lightning.Trainer(model=model, args=args, train_dataset=data, callbacks=[Clock()])
    trainer.train()
    timed = stamps[-1] - stamps[WARMUP - 1]
    if trainer.pl_trainer.is_global_zero:
        samples = (STEPS - WARMUP) * GLOBAL_BATCH
        with open(os.path.join(out, "speed.json"), "w") as f:
            json.dump({"world_size": trainer.pl_trainer.world_size, "samples_per_second": samples / timed}, f)


def _run(world: int, threads: int) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "HFL_THREADS": str(threads),
           "OMP_NUM_THREADS": str(threads)}
    out = tempfile.mkdtemp(prefix=f"hfl_ddp{world}_")
    launcher = [sys.executable] if world == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", "29677"]
    cmd = [*launcher, os.path.abspath(__file__), "--job", out, str(GLOBAL_BATCH // world)]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=1200)
    with open(os.path.join(out, "speed.json")) as f:
        return json.load(f)["samples_per_second"]


#: (processes, torch threads per process): one process on one core, on both cores, and two one-core processes.
SETUPS = ((1, 1), (1, 2), (2, 1))


def _measure() -> None:
    results: dict[tuple[int, int], list[float]] = {setup: [] for setup in SETUPS}
    for setup in (*SETUPS, *reversed(SETUPS)):
        results[setup].append(_run(*setup))
        print(f"{setup[0]} process(es) x {setup[1]} thread(s): {results[setup][-1]:.1f} samples/s", flush=True)
    mean = {setup: sum(v) / len(v) for setup, v in results.items()}
    print(f"means: {', '.join(f'{p}x{t}: {m:.1f}' for (p, t), m in mean.items())} samples/s; "
          f"2 processes / 1 process (1 thread): {mean[2, 1] / mean[1, 1]:.2f}, "
          f"2 processes / 1 process (2 threads): {mean[2, 1] / mean[1, 2]:.2f} "
          f"(cpu_count={os.cpu_count()}, load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--job"]:
        _job(sys.argv[2], int(sys.argv[3]))
    else:
        _measure()
