"""torch_compile on the shipped quickstart recipe (shrunk to a 2-layer BERT): no graph breaks, no recompilation after
the first step (dynamic padding included), evaluation and export keep working, and the export has the model's keys.

The ``eager`` backend runs TorchDynamo's capture (where graph breaks and recompilations happen) without Inductor's
code generation, so the counts are those of any backend, in seconds on CPU.
"""

from __future__ import annotations

import json

import lightning as L
import torch
import torch._dynamo.utils as dynamo_utils
import transformers
from safetensors.torch import load_file

from tests.integration.test_tasks import cli_for

TINY = json.dumps({"model_type": "bert", "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2,
                   "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 128})


class CompileCounter(L.Callback):
    """TorchDynamo's graph and graph-break counts after each training batch."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def on_fit_start(self, trainer, pl_module) -> None:
        import torch

        torch._dynamo.reset()
        dynamo_utils.counters.clear()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        counters = dynamo_utils.counters
        self.seen.append((counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())))


def test_compiled_quickstart_has_no_graph_breaks_or_per_step_recompilation(tmp_path):
    counter = json.dumps({"class_path": "tests.integration.test_compile.CompileCounter"})
    cli = cli_for(tmp_path, "fit", "quickstart.yaml", "--model.init_args.model", TINY,
                  "--model.init_args.tokenizer", "minilm", "--model.init_args.compilation.torch_compile", "true",
                  "--model.init_args.compilation.torch_compile_backend", "eager",
                  "--data.init_args.max_train_samples", "96",
                  "--data.init_args.max_eval_samples", "32", "--trainer.max_steps", "8",
                  "--trainer.callbacks+", counter)
    seen = next(cb for cb in cli.trainer.callbacks if isinstance(cb, CompileCounter)).seen
    assert len(seen) == 8
    assert all(breaks == 0 for _, breaks in seen), seen  # no graph break, ever
    # Compiled once the shapes turn dynamic (step 2); at most one more graph after that, not one per step: a batch
    # without any padding takes transformers' attention-mask shortcut, a different graph, compiled once.
    assert seen[-1][0] - seen[1][0] <= 1, str(seen)
    assert hasattr(cli.model.model, "_orig_mod")  # it really ran compiled
    assert {"eval_loss", "eval_accuracy"} <= set(cli.model.eval_results)  # the recipe's evaluation ran compiled
    export = tmp_path / "export"
    cli.model.save_pretrained(str(export))
    assert not [k for k in load_file(export / "model.safetensors") if "_orig_mod" in k]


def _fit_tiny(tmp_path, layers: int, *compile_flags: str):
    model = json.dumps({**json.loads(TINY), "num_hidden_layers": layers})
    counter = json.dumps({"class_path": "tests.integration.test_compile.CompileCounter"})
    cli = cli_for(tmp_path, "fit", "quickstart.yaml", "--model.init_args.model", model,
                  "--model.init_args.tokenizer", "minilm", *compile_flags, "--data.init_args.max_train_samples", "64",
                  "--data.init_args.max_eval_samples", "16", "--trainer.max_steps", "8", "--trainer.callbacks+", counter)
    return cli, next(cb for cb in cli.trainer.callbacks if isinstance(cb, CompileCounter)).seen


def test_compiling_the_blocks_compiles_one_block_for_any_depth_and_trains_the_same_weights(tmp_path):
    """torch_compile_scope=blocks (regional compilation): no graph break; a 4-layer stack compiles no more graphs than
    a 2-layer one (the first block's code is re-used by the others); the weights after 8 steps equal the uncompiled
    run's; the export has the uncompiled model's keys and loads with from_pretrained."""
    blocks = ("--model.init_args.compilation.torch_compile", "true",
              "--model.init_args.compilation.torch_compile_backend", "eager",
              "--model.init_args.compilation.torch_compile_scope", "blocks")
    eager, _ = _fit_tiny(tmp_path / "eager", 2)
    two, seen_two = _fit_tiny(tmp_path / "two", 2, *blocks)
    _, seen_four = _fit_tiny(tmp_path / "four", 4, *blocks)
    for seen in (seen_two, seen_four):
        assert len(seen) == 8 and all(breaks == 0 for _, breaks in seen), seen
        # after the shapes turn dynamic (step 2), new graphs on one later step at most (a batch without padding takes
        # transformers' attention-mask shortcut, compiled once for each region it reaches), not on every step
        assert len([i for i in range(2, 8) if seen[i][0] > seen[i - 1][0]]) <= 1, seen
    assert seen_four[-1][0] == seen_two[-1][0] > 0, (seen_two, seen_four)  # graphs do not grow with depth
    assert not hasattr(two.model.model, "_orig_mod")  # compiled in place: the module tree is the model's own
    theirs = eager.model.model.state_dict()
    ours = two.model.model.state_dict()
    assert list(ours) == list(theirs)
    for name, value in theirs.items():
        torch.testing.assert_close(ours[name], value, rtol=1e-6, atol=1e-7, msg=name)
    two.model.save_pretrained(str(tmp_path / "export"))
    eager.model.save_pretrained(str(tmp_path / "export_eager"))
    assert set(load_file(tmp_path / "export" / "model.safetensors")) == set(
        load_file(tmp_path / "export_eager" / "model.safetensors"))
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "export"))
    torch.testing.assert_close(reloaded.state_dict()["classifier.weight"], ours["classifier.weight"])
