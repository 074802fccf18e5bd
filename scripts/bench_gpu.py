"""GPU benchmark: the same training through a raw PyTorch loop, transformers.Trainer (its defaults, then with the
speed options) and hf_lightning.Trainer (its defaults, then its fastest documented settings), on BERT-base
(batch 64, seq 128) and a ~300M-parameter Llama (batch 8, seq 1024), bf16.

    python scripts/bench_gpu.py --out runs/bench_gpu                 # a CUDA machine: both models, every variant
    python scripts/bench_gpu.py --cases llama-300m --variants hf_default hfl_fast
    python scripts/bench_gpu.py --quick --out /tmp/bench_gpu         # CPU: tiny models, fp32, a test runs it
    python scripts/bench_gpu.py --from-results runs/bench_gpu/results.json --update-docs

Every variant runs in a fresh process with its own empty TorchInductor cache (no variant compiles with another's
cached kernels). The data are synthetic token sequences of full length (no padding: every variant sees the same
tensors; a Llama sequence follows a fixed next-token rule, so its loss falls). Each variant reports samples/s and
tokens/s over the steps after a warm-up (the clock is read with one device synchronisation at the start and the end of
that window, none in between), MFU (the model's FLOPs per step, 6 x non-embedding parameters x tokens + the attention
term 12 x layers x hidden x sequence x tokens, against the bf16 matmul rate measured on the same GPU at the start of
the run), peak GPU memory, compile time (the first step's time beyond a warm step) and the logged loss curve.

Variants (``VARIANTS``): ``raw`` (hand-written loop: autocast bf16, fused AdamW, linear schedule, clipping at 1.0),
``hf_default`` / ``hfl_default`` (``bf16=True``, everything else at its default), ``hf_fast`` / ``hfl_fast`` (the same
speed options in both: tf32, torch_compile, Liger kernels for the Llama where ``liger-kernel`` is installed, two
persistent data-loader workers) and ``hfl_fast_blocks`` (``hfl_fast`` with ``torch_compile_scope="blocks"``: each
repeated block compiled once). ``--quick`` runs every variant on CPU with tiny models, fp32 and the ``eager`` compile
backend, to check the script and that every variant computes the same losses.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench_gpu:begin (written by scripts/bench_gpu.py --update-docs) -->", "<!-- bench_gpu:end -->"
VARIANTS = ["raw", "hf_default", "hf_fast", "hfl_default", "hfl_fast", "hfl_fast_blocks"]
NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


@dataclass(frozen=True)
class Case:
    """A model from a config (no download), its batch and sequence length, and the run's length."""

    name: str
    family: str  # "bert" (sequence classification) or "llama" (causal LM)
    config: dict[str, Any]
    batch: int
    seq: int
    lr: float
    steps: int = 40
    warmup: int = 10  # steps before the timed window (compilation and allocator warm-up)
    log_every: int = 5
    extra: dict[str, Any] = field(default_factory=dict)


CASES = {
    "bert-base": Case("bert-base", "bert", {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                                            "intermediate_size": 3072, "vocab_size": 30522, **NO_DROPOUT}, 64, 128, 5e-5),
    "llama-300m": Case("llama-300m", "llama", {"hidden_size": 1024, "num_hidden_layers": 16, "num_attention_heads": 16,
                                               "num_key_value_heads": 16, "intermediate_size": 2816,
                                               "vocab_size": 32000, "max_position_embeddings": 1024,
                                               "tie_word_embeddings": False}, 8, 1024, 3e-4),
}
QUICK = {
    "bert-base": Case("bert-base", "bert", {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                                            "intermediate_size": 128, "vocab_size": 1000, **NO_DROPOUT}, 4, 32, 5e-4,
                      steps=8, warmup=3, log_every=2),
    "llama-300m": Case("llama-300m", "llama", {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                                               "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 1000,
                                               "max_position_embeddings": 64, "tie_word_embeddings": False}, 2, 64,
                       3e-3, steps=8, warmup=3, log_every=2),
}


# ----------------------------------------------------------------------------------------------- child side
def build_model(case: Case) -> Any:
    import transformers

    if case.family == "bert":
        return transformers.BertForSequenceClassification(transformers.BertConfig(num_labels=2, **case.config))
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**case.config))


class Synthetic:
    """Full-length sequences: BERT gets random tokens and a label from the first token; a Llama sequence follows
    ``next = (7 * token + 3) mod vocab`` from a random start (learnable, so the loss curve falls)."""

    def __init__(self, case: Case, length: int, seed: int = 0) -> None:
        import torch

        generator = torch.Generator().manual_seed(seed)
        vocab = case.config["vocab_size"]
        if case.family == "bert":
            self.ids = torch.randint(1, vocab, (length, case.seq), generator=generator)
            self.labels = self.ids[:, 0] % 2
        else:
            ids = [torch.randint(0, vocab, (length, 1), generator=generator)]
            for _ in range(case.seq - 1):
                ids.append((ids[-1] * 7 + 3) % vocab)
            self.ids = torch.cat(ids, dim=1)
            self.labels = self.ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def trainer_kwargs(case: Case, variant: str, cuda: bool, workdir: str) -> dict[str, Any]:
    """The TrainingArguments of one Trainer variant (the same for transformers and hf_lightning)."""
    args: dict[str, Any] = dict(
        output_dir=os.path.join(workdir, variant), per_device_train_batch_size=case.batch, max_steps=case.steps,
        learning_rate=case.lr, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        logging_steps=case.log_every, save_strategy="no", report_to=[], disable_tqdm=True, seed=0,
        use_cpu=not cuda, bf16=cuda, dataloader_drop_last=True,
    )
    if variant.endswith(("_fast", "_fast_blocks")):
        args.update(torch_compile=True, dataloader_num_workers=2, dataloader_persistent_workers=True)
        if cuda:
            args["tf32"] = True
            if case.family == "llama" and _liger_installed():
                args["use_liger_kernel"] = True
        else:  # CPU check: TorchDynamo's capture without Inductor's C++ code generation
            args["torch_compile_backend"] = "eager"
    if variant == "hfl_fast_blocks":
        args["torch_compile_scope"] = "blocks"
    return args


def _liger_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("liger_kernel") is not None


class Clock:
    """Wall time at the end of the first step, and of the timed window's first and last step, each read after one
    device synchronisation (none on the other steps)."""

    def __init__(self, warmup: int, steps: int, cuda: bool) -> None:
        self.warmup, self.steps, self.cuda = warmup, steps, cuda
        self.marks: dict[int, float] = {}
        self.started: float | None = None

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def begin(self) -> None:
        self.sync()
        self.started = time.perf_counter()

    def step_end(self, step: int) -> None:
        if step in (1, 2, self.warmup, self.steps):
            self.sync()
            self.marks[step] = time.perf_counter()


def run_raw(case: Case, cuda: bool, clock: Clock) -> list[tuple[int, float]]:
    import torch

    torch.manual_seed(0)
    device = torch.device("cuda" if cuda else "cpu")
    model = build_model(case).to(device).train()
    data = Synthetic(case, case.batch * case.steps)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0)).tolist()
    optimizer = torch.optim.AdamW(model.parameters(), lr=case.lr, weight_decay=0.0, fused=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, (case.steps - s) / case.steps))
    losses, pending = [], torch.zeros((), device=device)
    clock.begin()
    for step in range(1, case.steps + 1):
        index = order[(step - 1) * case.batch: step * case.batch]
        batch = {k: v.to(device, non_blocking=True) for k, v in
                 torch.utils.data.default_collate([data[i] for i in index]).items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        pending += loss.detach()
        if step % case.log_every == 0:  # the one host read, at logging steps (as the Trainers)
            losses.append((step, round(float(pending) / case.log_every, 4)))
            pending.zero_()
        clock.step_end(step)
    return losses


def run_trainer(case: Case, variant: str, cuda: bool, clock: Clock, workdir: str) -> list[tuple[int, float]]:
    import transformers

    if variant.startswith("hfl"):
        import hf_lightning as lib
    else:
        lib = transformers

    class Timed(transformers.TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            clock.begin()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            clock.step_end(state.global_step)

    transformers.set_seed(0)
    trainer = lib.Trainer(model=build_model(case), args=lib.TrainingArguments(**trainer_kwargs(case, variant, cuda,
                                                                                              workdir)),
                          train_dataset=Synthetic(case, case.batch * case.steps), callbacks=[Timed()],
                          data_collator=transformers.default_data_collator)
    trainer.train()
    return [(r["step"], round(r["loss"], 4)) for r in trainer.state.log_history if "loss" in r]


def child(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(spec["workdir"], "inductor")  # no kernels of another run
    import torch

    case, variant = Case(**spec["case"]), spec["variant"]
    cuda = torch.cuda.is_available() and not spec["quick"]
    if not cuda:
        torch.set_num_threads(1)
    clock = Clock(case.warmup, case.steps, cuda)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    losses = run_raw(case, cuda, clock) if variant == "raw" else run_trainer(case, variant, cuda, clock,
                                                                               spec["workdir"])
    marks = clock.marks
    window = marks[case.steps] - marks[case.warmup]
    step_s = window / (case.steps - case.warmup)
    first_step = marks[1] - clock.started
    result = {
        "variant": variant, "case": case.name, "losses": losses, "step_ms": step_s * 1000,
        "samples_per_s": case.batch / step_s, "tokens_per_s": case.batch * case.seq / step_s,
        "compile_s": max(0.0, first_step - (marks[2] - marks[1])), "startup_s": time.time() - spec["spawned"]
        - (time.perf_counter() - marks[1]),
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
    }
    Path(spec["out"]).write_text(json.dumps(result))


# ----------------------------------------------------------------------------------------------- parent side
def flops_per_step(case: Case) -> float:
    """6 x non-embedding parameters x tokens + 12 x layers x hidden x sequence x tokens (attention scores)."""
    import torch

    with torch.device("meta"):
        model = build_model(case)
    embedding = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    params = sum(p.numel() for p in model.parameters()) - embedding
    tokens = case.batch * case.seq
    c = case.config
    return 6 * params * tokens + 12 * c["num_hidden_layers"] * c["hidden_size"] * case.seq * tokens


def matmul_peak_tflops() -> float | None:
    """The bf16 matmul rate of this GPU (8192^3, median of 20), the MFU denominator; None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(20):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return 2 * 8192**3 / statistics.median(times) / 1e12


def spawn(case: Case, variant: str, quick: bool, log_dir: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hfl-gpu-") as tmp:
        spec = {"case": asdict(case), "variant": variant, "quick": quick, "workdir": tmp,
                "out": os.path.join(tmp, "result.json"), "spawned": time.time()}
        Path(tmp, "spec.json").write_text(json.dumps(spec))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}
        log = log_dir / f"{case.name}-{variant}.log"
        with open(log, "w") as out:
            proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(Path(tmp, "spec.json"))],
                                  stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp, check=False)
        if proc.returncode != 0:
            return {"variant": variant, "case": case.name, "error": log.read_text()[-1500:]}
        return json.loads(Path(spec["out"]).read_text())


def render(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [(f"Measured {meta['date']} on {meta['device']} (torch {meta['torch']}, transformers {meta['transformers']}, "
             f"lightning {meta['lightning']}; liger-kernel {meta['liger'] or 'not installed'}; bf16 matmul rate "
             f"{meta['peak_tflops'] or 0:.0f} TFLOP/s measured)."), ""]
    for case_name, runs in results["cases"].items():
        case = runs["case"]
        lines += [(f"#### {case_name} (batch {case['batch']}, seq {case['seq']}; {runs['flops'] / 1e12:.2f} TFLOP "
                  f"per step; steps {case['warmup'] + 1}-{case['steps']} timed)"), "",
                  ("| variant | samples/s | tokens/s | ms/step | MFU | vs hf_default | vs hf_fast | peak GiB | "
                  "compile s | start-up s | last logged loss |"),
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        base = {k: runs["variants"].get(k, {}).get("samples_per_s") for k in ("hf_default", "hf_fast")}
        for variant, r in runs["variants"].items():
            if "error" in r:
                lines.append(f"| {variant} | failed: see its log | | | | | | | | | |")
                continue
            mfu = runs["flops"] * r["samples_per_s"] / case["batch"] / (meta["peak_tflops"] * 1e12) \
                if meta["peak_tflops"] else None
            ratio = {k: f"{r['samples_per_s'] / v:.2f}x" if v else "-" for k, v in base.items()}
            memory = f"{r['peak_mem_gib']:.2f}" if r["peak_mem_gib"] is not None else "-"
            lines.append(
                f"| {variant} | {r['samples_per_s']:,.1f} | {r['tokens_per_s']:,.0f} | {r['step_ms']:.1f} | "
                f"{f'{mfu:.1%}' if mfu is not None else '-'} | {ratio['hf_default']} | {ratio['hf_fast']} | {memory} | "
                f"{r['compile_s']:.1f} | {r['startup_s']:.1f} | {r['losses'][-1][1] if r['losses'] else '-'} |")
        lines.append("")
    return "\n".join(lines)


def update_docs(markdown: str) -> None:
    text = DOC.read_text()
    head, rest = text.split(BEGIN, 1)
    DOC.write_text(head + BEGIN + "\n" + markdown.rstrip() + "\n" + END + rest.split(END, 1)[1])


def plot(results: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    cases = results["cases"]
    fig, axes = plt.subplots(1, len(cases), figsize=(6 * len(cases), 4), squeeze=False)
    for ax, (name, runs) in zip(axes[0], cases.items()):
        for variant, r in runs["variants"].items():
            if r.get("losses"):
                ax.plot(*zip(*r["losses"]), label=variant, marker=".")
        ax.set(title=name, xlabel="step", ylabel="training loss")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child")
    parser.add_argument("--quick", action="store_true", help="CPU, tiny models, fp32, eager compile backend")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_gpu")
    parser.add_argument("--from-results", type=Path)
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    if args.from_results:
        results = json.loads(args.from_results.read_text())
    else:
        from importlib.metadata import PackageNotFoundError, version

        import lightning
        import torch
        import transformers

        try:
            liger = version("liger-kernel")
        except PackageNotFoundError:
            liger = None
        cuda = torch.cuda.is_available() and not args.quick
        results = {"meta": {
            "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "transformers": transformers.__version__,
            "lightning": lightning.__version__, "liger": liger, "quick": args.quick,
            "device": torch.cuda.get_device_name() if cuda else f"CPU ({os.cpu_count()} cores, {platform.machine()})",
            "peak_tflops": matmul_peak_tflops() if cuda else None}, "cases": {}}
        args.out.mkdir(parents=True, exist_ok=True)
        for name in args.cases:
            case = (QUICK if args.quick else CASES)[name]
            runs = results["cases"][name] = {"case": asdict(case), "flops": flops_per_step(case), "variants": {}}
            for variant in args.variants:
                started = time.time()
                runs["variants"][variant] = spawn(case, variant, args.quick, args.out)
                status = "failed" if "error" in runs["variants"][variant] else "ok"
                print(f"[{name}] {variant:<16} {status} {time.time() - started:6.1f}s", flush=True)
                # after every run: a time limit that stops the benchmark keeps what it measured (--from-results)
                (args.out / "results.json").write_text(json.dumps(results, indent=1))
        plot(results, args.out / "loss_curves.png")
    markdown = render(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(markdown + "\n")
    print(markdown)
    if args.update_docs:
        update_docs(markdown)
    if any("error" in r for runs in results["cases"].values() for r in runs["variants"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
