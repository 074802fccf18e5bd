"""Optimizers and schedules (hf_lightning/optim/__init__.py) against transformers' own factories."""

from __future__ import annotations

import pytest
import torch
import transformers

from hf_lightning.optim import build_scheduler, resolve_warmup_steps
from hf_lightning.settings import OptimizerSettings
from tests.unit.modules.helpers import _bert


def test_optimizer_groups_equal_transformers_trainer(tmp_path):
    module = _bert(optimization=OptimizerSettings(weight_decay=0.1, learning_rate=3e-4))
    ours = module.create_optimizer()
    args = transformers.TrainingArguments(tmp_path, weight_decay=0.1, learning_rate=3e-4, report_to=[], use_cpu=True)
    theirs = transformers.Trainer(model=module.model, args=args).create_optimizer()
    assert type(ours) is type(theirs)
    for a, b in zip(ours.param_groups, theirs.param_groups, strict=True):
        assert [id(p) for p in a["params"]] == [id(p) for p in b["params"]]
        assert {k: v for k, v in a.items() if k != "params"} == {k: v for k, v in b.items() if k != "params"}
    assert ours.param_groups[1]["weight_decay"] == 0.0 and len(ours.param_groups[1]["params"]) > 0


@pytest.mark.parametrize("name", [s.value for s in transformers.SchedulerType
                                  if s.value not in ("reduce_lr_on_plateau", "greedy")])
def test_every_scheduler_matches_get_scheduler(name):
    kwargs = {"warmup_stable_decay": {"num_decay_steps": 4}, "cosine_with_min_lr": {"min_lr_rate": 0.1},
              "cosine_warmup_with_min_lr": {"min_lr_rate": 0.1}}.get(name)

    def lrs(build):
        param = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([param], lr=1.0)
        sched = build(opt)
        out = []
        for _ in range(10):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    ours = lrs(lambda o: build_scheduler(o, lr_scheduler_type=name, num_training_steps=10, warmup_steps=0.2,
                                         lr_scheduler_kwargs=kwargs))
    theirs = lrs(lambda o: transformers.get_scheduler(name, o, num_warmup_steps=2, num_training_steps=10,
                                                      scheduler_specific_kwargs=kwargs))
    assert ours == theirs


def test_warmup_rule_count_or_ratio():
    assert resolve_warmup_steps(3, 100) == 3
    assert resolve_warmup_steps(0.05, 30) == 2  # ceil(1.5)
    # a count with a fraction keeps its integer part, as transformers' TrainingArguments.get_warmup_steps
    args = transformers.TrainingArguments(output_dir="unused", warmup_steps=2.5, report_to="none")
    assert resolve_warmup_steps(2.5, 100) == args.get_warmup_steps(100) == 2
    with pytest.raises(ValueError, match="warmup_steps"):
        resolve_warmup_steps(-1, 100)


@pytest.mark.parametrize("optim", ["lomo", "adalomo", "galore_adamw_layerwise"])
def test_optimizers_that_step_inside_backward_are_refused_when_the_trainer_is_built(tmp_path, optim):
    """Before anything runs, naming the TrainingArguments field (`optim`) and the alternative."""
    import hf_lightning

    args = hf_lightning.TrainingArguments(str(tmp_path), report_to=[], use_cpu=True, optim=optim)
    with pytest.raises(ValueError, match=rf"cannot be honoured[\s\S]*- optim='{optim}': updates the weights inside "
                                         r"backward.*'galore_adamw'"):
        hf_lightning.Trainer(model=_bert(), args=args)
