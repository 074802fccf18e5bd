"""Runs the shipped recipes as users would and prints the measured figures as a markdown table.

    python scripts/recipe_figures.py                      # every recipe (about 25 minutes on 2 idle CPU cores)
    python scripts/recipe_figures.py --only ner_wnut16 lora
    python scripts/recipe_figures.py --out runs/recipe_figures --json figures.json

Each recipe runs in fresh processes through the CLI, exactly as its yaml header says: first ``validate`` (the
starting point: same config, same seed, so the same initial weights), then ``fit``. The figures come from the result
files the CLI writes into the run's log folder (``eval_results.json``, ``train_results.json``), and the wall time is
the ``fit`` process' own, start-up included. The distillation recipe needs the quickstart's export as its teacher,
so ``quickstart`` always runs before ``distillation``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEACHER = "models/minilm_movie_reviews"


@dataclass
class Recipe:
    name: str
    configs: list[str]
    metrics: list[str]
    extra: list[str] = field(default_factory=list)
    export: str = "none"


RECIPES = [
    Recipe("quickstart", ["quickstart.yaml"], ["eval_accuracy", "eval_f1", "eval_loss"], export=TEACHER),
    Recipe("sms_spam", ["sms_spam.yaml"], ["eval_accuracy", "eval_f1", "eval_loss"]),
    Recipe("regression_movie_reviews", ["regression_movie_reviews.yaml"],
           ["eval_mse", "eval_mae", "eval_pearson", "eval_spearman", "eval_loss"]),
    Recipe("checkpointing", ["quickstart.yaml", "checkpointing.yaml"], ["eval_accuracy", "eval_loss"]),
    Recipe("llrd", ["llrd.yaml"], ["eval_accuracy", "eval_loss"]),
    Recipe("lora", ["lora.yaml"], ["eval_accuracy", "eval_loss"]),
    Recipe("adversarial_fgm", ["adversarial_fgm.yaml"], ["eval_accuracy", "eval_loss"]),
    Recipe("adversarial_fgm_eps0", ["adversarial_fgm.yaml"], ["eval_accuracy", "eval_loss"],
           ["--model.init_args.epsilon", "0"]),
    Recipe("distillation", ["distillation.yaml"], ["eval_accuracy", "eval_loss"]),
    Recipe("distillation_alpha0", ["distillation.yaml"], ["eval_accuracy", "eval_loss"],
           ["--model.init_args.alpha", "0"]),
    Recipe("ner_wnut16", ["ner_wnut16.yaml"], ["eval_f1", "eval_precision", "eval_recall", "eval_loss"]),
    Recipe("mlm_movie_reviews", ["mlm_movie_reviews.yaml"], ["eval_perplexity", "eval_loss"]),
    Recipe("causal_lm_tiny", ["causal_lm_tiny.yaml"], ["eval_perplexity", "eval_loss"]),
    Recipe("summarization_aclsum", ["summarization_aclsum.yaml"],
           ["eval_rouge1", "eval_rouge2", "eval_rougeL", "eval_loss"]),
    Recipe("summarization_bert2bert", ["summarization_bert2bert.yaml"],
           ["eval_rouge1", "eval_rouge2", "eval_rougeL", "eval_gen_len", "eval_loss"]),
]


def _run(subcommand: str, recipe: Recipe, out: Path) -> tuple[dict, float]:
    save_dir = out / recipe.name / subcommand
    cmd = [sys.executable, "-m", "hf_lightning", subcommand]
    for config in recipe.configs:
        cmd += ["--config", f"configs/{config}"]
    cmd += recipe.extra + ["--trainer.logger.init_args.save_dir", str(save_dir)]
    if subcommand == "fit":
        cmd += ["--export_dir", recipe.export]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    results = {}
    for path in sorted(save_dir.glob("*/version_*/all_results.json"), key=os.path.getmtime)[-1:]:
        results = json.loads(path.read_text())
    return results, wall


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.3f}"
    return "-" if value is None else str(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="recipe names (default: all)")
    parser.add_argument("--out", default="runs/recipe_figures", help="folder for the runs' logs")
    parser.add_argument("--json", help="also write the figures to this file")
    opts = parser.parse_args(argv)
    chosen = [r for r in RECIPES if not opts.only or r.name in opts.only]
    if any(r.name.startswith("distillation") for r in chosen) and not (ROOT / TEACHER).exists():
        chosen = [r for r in RECIPES if r.name == "quickstart"] + [r for r in chosen if r.name != "quickstart"]
    out = Path(opts.out).resolve()
    rows = []
    for recipe in chosen:
        before, _ = _run("validate", recipe, out)
        after, wall = _run("fit", recipe, out)
        row = {"recipe": recipe.name, "global_step": None, "fit_wall_s": round(wall, 1),
               "train_runtime": after.get("train_runtime"), "train_loss": after.get("train_loss")}
        state = sorted((out / recipe.name / "fit").glob("*/version_*/trainer_state.json"), key=os.path.getmtime)
        if state:
            row["global_step"] = json.loads(state[-1].read_text())["global_step"]
        for name in recipe.metrics:
            row[f"{name} (start)"] = before.get(name)
            row[name] = after.get(name)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    for row in rows:
        print(f"| {row['recipe']} | {row['global_step']} | {_cell(row['fit_wall_s'])} s | "
              + " | ".join(f"{k}: {_cell(row.get(k + ' (start)'))} -> {_cell(v)}" for k, v in row.items()
                           if k.startswith("eval_") and not k.endswith("(start)")) + " |")
    if opts.json:
        Path(opts.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
