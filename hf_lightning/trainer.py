"""The HF-style door: ``from hf_lightning import Trainer, TrainingArguments``.

`Trainer` holds no training loop. It translates `TrainingArguments` (hf_lightning/args.py) into an `HFModule`, an
`HFDataModule`, the `HFFlow` callback (HF's state, control and TrainerCallbacks) and a `lightning.Trainer`, and delegates.
Methods a subclass overrides (``compute_loss``, ``prediction_step``, ``training_step``, ``create_optimizer``,
``create_scheduler``, ``get_train_dataloader``, ``get_eval_dataloader``, ``log``...) are called back from the module and
data module, so Trainer code written for ``transformers.Trainer`` runs after changing its import line.
``evaluate`` / ``predict`` are its `TrainerEvaluation` mixin (``trainer_evaluation.py``), the other transformers
methods its `TrainerMethods` mixin (``trainer_methods.py``).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import os
import signal
import threading
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import nn
from torch.utils.data import IterableDataset
from transformers import PreTrainedTokenizerBase, TrainerControl, TrainerState
from transformers.debug_utils import DebugOption, DebugUnderflowOverflow
from transformers.trainer_callback import (
    CallbackHandler,
    DefaultFlowCallback,
    ExportableState,
    PrinterCallback,
    ProgressCallback,
)
from transformers.trainer_pt_utils import LabelSmoother
from transformers.trainer_utils import TrainOutput, enable_full_determinism, has_length, set_seed, unwrap_peft_model
from transformers.utils import can_return_loss, find_labels
from transformers.utils import logging as hf_logging

from hf_lightning import progress
from hf_lightning.args import TrainingArguments, ensure_args, translate
from hf_lightning.callbacks.checkpoint import HFCheckpoint
from hf_lightning.callbacks.flow_records import (
    MemoryTracker,
    process_log_level,
    schedule_metric_missing,
    write_to_loggers,
)
from hf_lightning.callbacks.hf_flow import HFFlow, find_saver
from hf_lightning.checkpoint import resolve_checkpoint
from hf_lightning.checkpoint import resume as resuming
from hf_lightning.checkpoint.folder import has_adapter_weights, is_peft_model
from hf_lightning.checkpoint.resume import load_weights_into
from hf_lightning.data.collators import trainer_default_collator
from hf_lightning.facade import (
    FacadeDataModule,
    FacadeModule,
    TrainerHooks,
    build_loggers,
    reporting_callbacks,
    weak_method,
)
from hf_lightning.lightning_internals import quiet_lightning
from hf_lightning.modules.base import HFModule
from hf_lightning.modules.loading import uncompiled
from hf_lightning.optim import trainer_scheduler
from hf_lightning.shared_state import ensure_accelerate_state
from hf_lightning.strategies.layout import launched_rank
from hf_lightning.trainer_evaluation import TrainerEvaluation
from hf_lightning.trainer_methods import TrainerMethods

log = hf_logging.get_logger("transformers.trainer")


_HOOKS = ("compute_loss", "prediction_step", "training_step", "create_optimizer", "create_scheduler",
          "get_decay_parameter_names", "get_train_dataloader", "get_eval_dataloader", "get_test_dataloader",
          "evaluation_loop", "log", "evaluate", "_prepare_inputs", "_prepare_input", "floating_point_ops",
          "_get_train_sampler", "_get_eval_sampler", "get_optimizer_cls_and_kwargs", "save_model", "_save",
          "compute_loss_context_manager", "autocast_smart_context_manager", "_maybe_log_save_evaluate", "_evaluate",
          "_save_checkpoint", "_load_best_model", "_load_from_checkpoint",
          "_set_signature_columns_if_needed", "_remove_unused_columns", "get_batch_samples")


#: transformers.Trainer methods its own loop calls that hf_lightning's engine (Lightning's loops, `HFFlow`,
#: `HFCheckpoint`) does not: a subclass overriding one is warned, with what to use instead.
_NOT_CALLED = {
    "_inner_training_loop": "override training_step / compute_loss, or add a TrainerCallback",
    "_load_optimizer_and_scheduler": "pass optimizers=(optimizer, scheduler) or override create_optimizer",
    "_load_rng_state": "seed in a TrainerCallback's on_train_begin",
    "_wrap_model": "Lightning's strategy wraps the model; choose it with the arguments (fsdp, deepspeed, ddp_*)",
    "_hp_search_setup": "set the trial's values in hp_space / model_init",
    "_report_to_hp_search": "compute the objective with compute_objective",
    "store_flos": "override floating_point_ops",
    "prediction_loop": "override evaluation_loop or prediction_step",
    "get_resumed_dataloader": "hf_lightning skips a resumed epoch's first batches itself (transformers' order); for a "
                              "loader that cannot be skipped, set ignore_data_skip=True and position it yourself",
    "set_initial_training_values": "set max_steps / num_train_epochs in the arguments",
}


def _field_values(args: Any) -> dict[str, Any]:
    """A copy of every field value of a ``TrainingArguments``."""
    return {f.name: copy.deepcopy(getattr(args, f.name)) for f in dataclasses.fields(args) if hasattr(args, f.name)}


def _warn_of_overrides_not_called(cls: type, door: type) -> None:
    """A warning per transformers method a subclass overrides that hf_lightning never calls (`_NOT_CALLED`)."""
    for name, instead in _NOT_CALLED.items():
        mine = getattr(cls, name, None)
        if mine is not None and mine is not getattr(door, name, None):
            warnings.warn(f"{cls.__name__} overrides {name}, which hf_lightning's training loop does not call, so "
                          f"the override changes nothing there: {instead}.", UserWarning, stacklevel=3)


class Trainer(TrainerEvaluation, TrainerMethods):
    """``transformers.Trainer``'s interface, run by Lightning.

    Args:
        model: The model to train (a ``PreTrainedModel`` or any ``nn.Module`` returning the loss first).
        args: `TrainingArguments` (or a ``transformers.TrainingArguments``); defaults to ``output_dir="trainer_output"``.
        data_collator: Batches examples; defaults to transformers.Trainer's: dynamic padding with a tokenizer or a
            sequence feature extractor (`PaddingCollator`: the same batches, padded in numpy), else
            ``default_data_collator``.
        train_dataset: A ``datasets.Dataset``, torch map-style or iterable data set.
        eval_dataset: A data set, or a dict of them (metrics prefixed ``eval_<name>_``).
        processing_class: The tokenizer / processor, saved with checkpoints.
        model_init: Builds a fresh model (called after seeding, at init and at each ``train``).
        compute_loss_func: ``fn(outputs, labels, num_items_in_batch) -> loss``.
        compute_metrics: ``fn(EvalPrediction) -> dict``.
        callbacks: ``transformers.TrainerCallback`` instances or classes.
        optimizers: ``(optimizer, lr_scheduler)`` to use instead of the built ones.
        optimizer_cls_and_kwargs: ``(optimizer class, kwargs)`` used with HF's parameter groups.
        preprocess_logits_for_metrics: ``fn(logits, labels)`` run on each evaluation batch.
    """

    #: transformers' switch for a loss computed by a subclass: True, already normalised over the accumulation window;
    #: False, divided by the accumulation steps; None, found out on the first window (docs/parity.md, difference 1)
    loss_is_scaled_for_ga: bool | None = None

    def __init__(
        self,
        model: nn.Module | None = None,
        args: TrainingArguments | Any = None,
        data_collator: Callable[..., Any] | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        model_init: Callable[..., nn.Module] | None = None,
        compute_loss_func: Callable[..., torch.Tensor] | None = None,
        compute_metrics: Callable[..., dict[str, float]] | None = None,
        callbacks: list[Any] | None = None,
        optimizers: tuple[Any, Any] = (None, None),
        optimizer_cls_and_kwargs: tuple[type, dict[str, Any]] | None = None,
        preprocess_logits_for_metrics: Callable[..., Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if "tokenizer" in kwargs:
            warnings.warn("`tokenizer` is deprecated: use `processing_class`.", FutureWarning, stacklevel=2)
            processing_class = processing_class or kwargs.pop("tokenizer")
        if kwargs:
            raise TypeError(f"Trainer got unexpected arguments {sorted(kwargs)}.")
        self.pl_trainer: L.Trainer | None = None
        self.args = ensure_args(args)
        if args is not None and args is not self.args:  # a transformers.TrainingArguments, copied: its later changes
            self._given_args = (args, _field_values(args))  # count, as transformers reads the object it was given
        self.translated = translate(self.args)  # raises on fields that cannot be honoured, before any training
        ensure_accelerate_state(self.args)  # a transformers.Trainer in the same process keeps working
        main = self.is_local_process_zero() if self.args.log_on_each_node else self.is_world_process_zero()
        hf_logging.set_verbosity(process_log_level(self.args, main))  # as transformers: log_level(_replica)
        self._memory_tracker = MemoryTracker(self.args.skip_memory_metrics)
        self._memory_tracker.start_stage("init")
        enable_full_determinism(self.args.seed) if self.args.full_determinism else set_seed(self.args.seed)
        self._model_prepared = False  # an evaluation before training then reports model_preparation_time
        self.model_init = model_init
        if model is None and model_init is None:
            raise RuntimeError("`Trainer` requires either a `model` or `model_init` argument.")
        if model is not None and model_init is not None:  # as transformers 5
            raise ValueError("`Trainer` requires either a `model` or `model_init` argument, but not both.")
        if model is None:
            model = self.call_model_init()
        self.model = model
        self.label_smoother = self._label_smoother(model)
        inspected = type(unwrap_peft_model(model))  # as transformers: the label names its forward takes
        self.label_names = find_labels(inspected) if self.args.label_names is None else list(self.args.label_names)
        self.can_return_loss = can_return_loss(inspected)
        self.data_collator = data_collator if data_collator is not None else trainer_default_collator(processing_class)
        self.train_dataset, self.eval_dataset = train_dataset, eval_dataset
        self.processing_class = processing_class
        self.compute_loss_func = compute_loss_func
        self.compute_metrics = compute_metrics
        self.preprocess_logits_for_metrics = preprocess_logits_for_metrics
        self.optimizer, self.lr_scheduler = optimizers
        self._created_lr_scheduler = False  # True when the scheduler is the trainer's own (rebuilt at each train())
        self._train_batch_size = self.args.per_device_train_batch_size  # auto_find_batch_size may lower it
        self._datamodule: FacadeDataModule | None = None
        self.create_accelerator_and_postprocess()
        self.optimizer_cls_and_kwargs = optimizer_cls_and_kwargs
        if self.optimizer is not None and optimizer_cls_and_kwargs is not None:
            raise RuntimeError("Passing both `optimizers` and `optimizer_cls_and_kwargs` arguments is incompatible.")
        self._check_arguments()
        if self.optimizer is None and self.lr_scheduler is not None:
            raise ValueError("optimizers=(None, scheduler): the scheduler steps an optimizer the Trainer would not train "
                             "(it builds its own). Pass optimizers=(optimizer, scheduler) with the optimizer the "
                             "scheduler was built on, or override create_scheduler to build it on trainer.optimizer.")
        if self.is_world_process_zero():  # as transformers: save_metrics / save_state work before any checkpoint
            os.makedirs(self.args.output_dir, exist_ok=True)
        self.control = TrainerControl()
        progress = [PrinterCallback] if self.args.disable_tqdm else [ProgressCallback]  # transformers' bars
        self.callback_handler = CallbackHandler(
            [DefaultFlowCallback, *reporting_callbacks(self.args), *(callbacks or []), *progress], self.model,
            processing_class, self.optimizer, self.lr_scheduler)
        self.state = TrainerState(  # as transformers: save_state() before train() writes the callbacks' states
            is_local_process_zero=self.is_local_process_zero(), is_world_process_zero=self.is_world_process_zero(),
            stateful_callbacks=[cb for cb in [*self.callback_handler.callbacks, self.control]
                                if isinstance(cb, ExportableState)])
        # the user's overrides: hooks of a class below hf_lightning's own (Seq2SeqTrainer's hooks are defaults)
        door = next(c for c in type(self).__mro__ if c.__module__.startswith("hf_lightning."))
        self.overridden = {name for name in _HOOKS if getattr(type(self), name) is not getattr(door, name)}
        _warn_of_overrides_not_called(type(self), door)
        self.module: FacadeModule | None = None
        # transformers' attributes scripts read: the search's backend and naming (set during hyperparameter_search),
        # DeepSpeed's engine (Lightning's strategy holds it here)
        self.hp_search_backend: Any = None
        self.hp_name: Callable[[Any], str] | None = None
        self.deepspeed: Any = None
        #: where a hyper-parameter search trial's checkpoints go (None outside a search)
        self.trial_output_dir: str | None = None
        self._flow: HFFlow | None = None
        self.control = self.callback_handler.on_init_end(self.args, self.state, self.control)
        if getattr(self.model, "config", None) is not None:  # as transformers (use_cache defaults to False)
            self.model.config.use_cache = self.args.use_cache
        self._memory_tracker.stop_stage("init")

    def _fitting(self) -> bool:
        """Whether this Trainer's ``train()`` is inside its Lightning fit (its HFFlow holds the live state)."""
        trainer = self.__dict__.get("pl_trainer")
        return self.__dict__.get("_flow") is not None and trainer is not None and trainer.state.fn == "fit" \
            and trainer.state.status == "running"

    @property
    def state(self) -> TrainerState:
        """transformers' ``TrainerState``: during ``train()``, the one training writes (a resume replaces it with the
        checkpoint's, as transformers does), so overrides and callbacks read the live step, epoch and history."""
        return self._flow.state if self._fitting() else self.__dict__["_state"]

    @state.setter
    def state(self, value: TrainerState) -> None:
        if self._fitting():
            self._flow.state = value
        self.__dict__["_state"] = value

    @property
    def control(self) -> TrainerControl:
        """transformers' ``TrainerControl``: while ``train()`` runs, the one training answers to (an ``evaluate()``
        called then, from an override or a callback, resets its ``should_evaluate`` as in transformers)."""
        return self._flow.control if self._fitting() else self.__dict__["_control"]

    @control.setter
    def control(self, value: TrainerControl) -> None:
        if self._fitting():
            self._flow.control = value
        else:
            self.__dict__["_control"] = value

    def _sync_given_args(self) -> None:
        """A ``transformers.TrainingArguments`` given to the Trainer is copied into ``self.args``; the fields a script
        changed on that object since are copied again, so they count as in transformers (``args.num_train_epochs =
        2`` before a second ``train()``). Changes made on ``trainer.args`` stay."""
        given = self.__dict__.get("_given_args")
        if given is None:
            return
        original, seen = given
        now = _field_values(original)
        for name, value in now.items():
            if name in seen and value != seen[name]:
                setattr(self.args, name, copy.deepcopy(value))
        self._given_args = (original, now)

    def _check_arguments(self) -> None:
        """transformers.Trainer's own checks of the arguments against what it was given, before any training."""
        args = self.args
        if args.eval_strategy not in (None, "no") and self.eval_dataset is None:
            raise ValueError(f"You have set `args.eval_strategy` to {args.eval_strategy} but you didn't pass an "
                             "`eval_dataset` to `Trainer`. Either set `args.eval_strategy` to `no` or pass an "
                             "`eval_dataset`. ")
        if (args.save_strategy == "best" or args.load_best_model_at_end) and args.metric_for_best_model is None:
            raise ValueError("`args.metric_for_best_model` must be provided when using 'best' save_strategy or if "
                             "`args.load_best_model_at_end` is set to `True`.")
        if args.max_steps > 0 and args.num_train_epochs > 0:
            log.info("max_steps is given, it will override any value given in num_train_epochs")
        if self.train_dataset is not None and not has_length(self.train_dataset) and args.max_steps <= 0:
            raise ValueError("The train_dataset does not implement __len__, so the number of training steps cannot be "
                             "inferred; max_steps has to be specified. The total number of steps must be known in "
                             "advance to bound the training loop and to configure the learning rate scheduler.")
        if DebugOption.TPU_METRICS_DEBUG in args.debug:
            raise ValueError("debug='tpu_metrics_debug' prints torch_xla's TPU metrics: hf_lightning does not run on "
                             "TPUs. Remove it from `debug` (underflow_overflow is supported).")
        if self.model_init is not None and (self.optimizer is not None or self.lr_scheduler is not None):
            raise RuntimeError("Passing a `model_init` is incompatible with providing the `optimizers` argument. You "
                               "should subclass `Trainer` and override the `create_optimizer_and_scheduler` method.")

    # ----------------------------------------------------------------------------------------------- processes
    def is_world_process_zero(self) -> bool:
        if self.pl_trainer is not None:
            return self.pl_trainer.is_global_zero
        return launched_rank() == 0  # torchrun / srun

    def is_local_process_zero(self) -> bool:
        if self.pl_trainer is not None:
            return self.pl_trainer.local_rank == 0
        return int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0"))) == 0

    def _fresh_state(self, trial: Any) -> TrainerState:
        """A new TrainerState for a ``train()`` (as transformers; a resume then loads the checkpoint's), keeping
        the trial's name and parameters a hyper-parameter search set."""
        state = TrainerState(is_local_process_zero=self.is_local_process_zero(),
                             is_world_process_zero=self.is_world_process_zero())
        if trial is not None:
            state.is_hyper_param_search = True
            from transformers.integrations import hp_params

            # as transformers: the trial's parameters (an optuna trial's, or a dict given to train(trial=...))
            state.trial_name, state.trial_params = self.state.trial_name, hp_params(trial)
        return state

    def call_model_init(self, trial: Any = None) -> nn.Module:
        """Builds the model with `model_init` (given the trial when it takes one)."""
        params = inspect.signature(self.model_init).parameters
        model = self.model_init(trial) if len(params) == 1 else self.model_init()
        if model is None:
            raise RuntimeError("model_init should not return None.")
        return model

    # ----------------------------------------------------------------------------------------------- building
    #: The LightningModule class the facade trains (Seq2SeqTrainer uses the generating one).
    module_class: type[FacadeModule] = FacadeModule

    def _label_smoother(self, model: Any) -> LabelSmoother | None:
        """transformers' ``label_smoother``, off (with its warning, once) for a multi-label model."""
        factor = self.args.label_smoothing_factor
        if factor and getattr(getattr(model, "config", None), "problem_type", None) == "multi_label_classification":
            warnings.warn("Label smoothing is not compatible with multi-label classification. Disabling label "
                          "smoothing for this training run.", UserWarning, stacklevel=3)
            return None
        return LabelSmoother(epsilon=factor) if factor else None

    def _module_kwargs(self) -> dict[str, Any]:
        # Seq2SeqTrainingArguments given to the plain Trainer: transformers ignores the generation fields, so do we.
        accepted = set(inspect.signature(HFModule.__init__).parameters)
        kwargs = {k: v for k, v in self.translated.module.items() if k in accepted}
        if self.label_smoother is None:  # disabled at init (a multi-label model): not warned about again
            kwargs["label_smoothing_factor"] = 0.0
        if "label_names" in accepted:
            kwargs["label_names"] = self.label_names
        return kwargs

    def _hand_over_functions(self, module: FacadeModule) -> None:
        """The user's functions, as they are set on the Trainer now (transformers reads its attributes at each use:
        ``trainer.compute_metrics = ...`` after the first evaluation counts in the next)."""
        module.compute_loss_func = self.compute_loss_func
        module.compute_metrics = self.compute_metrics
        module.preprocess_logits_for_metrics = self.preprocess_logits_for_metrics
        module.accepts_loss_kwargs_given = self.__dict__.get("_given_accepts_loss_kwargs")

    def _build_module(self) -> FacadeModule:
        module = self.module_class(TrainerHooks.of(self), model=self.model, **self._module_kwargs())
        self._hand_over_functions(module)
        module.optimizer_cls_and_kwargs = self.optimizer_cls_and_kwargs
        if self.loss_is_scaled_for_ga is not None:
            module.loss_is_scaled_for_ga = self.loss_is_scaled_for_ga
        if self.processing_class is not None:
            module.tokenizer = self.processing_class
        else:  # as transformers: the collator's tokenizer is saved when no processing class is given (and only saved)
            module.saved_tokenizer = getattr(self.data_collator, "tokenizer", None)
        return module

    def _build_datamodule(self, splits: dict[str, Any], eval_name: str | None = None) -> FacadeDataModule:
        """The data module over the given splits; a dict of eval sets becomes its named validation sets.
        ``eval_name``: the name of the trainer's eval set given as the validation split."""
        tokenizer = self.processing_class if isinstance(self.processing_class, PreTrainedTokenizerBase) else None
        dataset = {k: v for k, v in splits.items() if v is not None}
        kwargs: dict[str, Any] = {}
        if isinstance(dataset.get("validation"), dict):
            named = dataset.pop("validation")
            dataset.update({f"validation/{name}": ds for name, ds in named.items()})
            kwargs["validation_split"] = {name: f"validation/{name}" for name in named}
        if dataset.get("train") is not None and self.args.data_seed is None:
            # as accelerate's seedable sampler, which transformers' training loader gets: the order is seeded with
            # the global RNG's seed when the loader is built (args.seed, unless something reseeded torch since)
            kwargs["seed"] = torch.initial_seed()
        settings = {**self.translated.datamodule, "batch_size": self._train_batch_size, **kwargs}
        return FacadeDataModule(TrainerHooks.of(self), eval_name=eval_name, dataset=dataset, tokenizer=tokenizer,
                                collator=self.data_collator, tokenize=False, validation_size=0.0, test_size=0.0,
                                kept_eval_loaders=self.__dict__.setdefault("_kept_eval_loaders", {}), **settings)

    def _max_steps(self, datamodule: FacadeDataModule) -> tuple[int, int]:
        """(max_steps, max_epochs) with HF's rule: max_steps, else ceil(epochs * updates per epoch); a max_steps of 0
        or no epochs (``num_train_epochs`` 0 or below) trains nothing, as in transformers. With max_steps, the passes
        are bounded as transformers bounds them (ceil(max_steps / updates per epoch), none for an iterable data set),
        so a stop of the epoch (``should_epoch_stop``) in the last of them ends training."""
        args = self.args
        if args.max_steps >= 0:
            updates = self._updates_per_epoch(sized_only=True)
            return args.max_steps, -1 if not updates else max(1, math.ceil(args.max_steps / updates))
        updates = self._updates_per_epoch()
        epochs = max(args.num_train_epochs, 0)
        return progress.total_updates(epochs, updates), math.ceil(epochs)

    def _updates_per_epoch(self, sized_only: bool = False) -> int | None:
        """Optimizer steps per pass over the training data (per rank: global batches of per_device x processes
        samples, as HFBatchSampler cuts them); None for a data set without a length when ``sized_only``."""
        args = self.args
        if sized_only and "get_train_dataloader" in self.overridden:
            return None  # not asked for an extra loader (transformers builds one per train())
        try:
            if "get_train_dataloader" in self.overridden:
                batches = len(self.get_train_dataloader())
            else:
                # the launcher's layout (torchrun or srun), as the Lightning Trainer will see it
                from hf_lightning.strategies import launch_layout

                devices, nodes = launch_layout()
                # as transformers (and the loaders): drop_last cuts a sampler's batches, not a stream's
                drop_last = args.dataloader_drop_last and not isinstance(self.train_dataset, IterableDataset)
                if args.train_sampling_strategy == "batch_rebalance":  # per step: batch x GA x processes samples
                    accumulate = args.gradient_accumulation_steps
                    batches = accumulate * progress.batches_per_epoch(
                        len(self.train_dataset), self._train_batch_size * accumulate * devices * nodes, drop_last)
                else:
                    batches = progress.batches_per_epoch(len(self.train_dataset),
                                                         self._train_batch_size * devices * nodes, drop_last)
        except TypeError:
            if sized_only:
                return None
            raise ValueError("args.max_steps must be set to a positive value if dataloader does not have a length, was"
                             f" {args.max_steps}") from None
        return progress.updates_per_epoch(batches, args.gradient_accumulation_steps)

    def _report_loggers(self) -> list[Any] | bool:
        """The Lightning loggers of ``report_to`` (``csv``), built once per arguments object: training and every
        later ``evaluate()`` write to the same run folder, as transformers' reporting callbacks do; each trial of a
        hyper-parameter search gets its own, in its folder."""
        key = (self.args, self.trial_output_dir)
        kept = self.__dict__.get("_built_loggers")
        if kept is None or kept[0][0] is not key[0] or kept[0][1] != key[1]:
            args = self.args
            if self.trial_output_dir is not None:  # in the trial's folder
                args = copy.copy(args)
                args.output_dir = self.trial_output_dir
            kept = self.__dict__["_built_loggers"] = (key, build_loggers(args))
        return kept[1]

    def _lightning_trainer(self, callbacks: list[Any], **overrides: Any) -> L.Trainer:
        kwargs = dict(self.translated.trainer)
        kwargs.update(
            callbacks=callbacks, logger=self._report_loggers(), enable_model_summary=False,
            enable_progress_bar=False,  # transformers' ProgressCallback draws the bars (disable_tqdm: none)
            num_sanity_val_steps=0, use_distributed_sampler=False,
            enable_checkpointing=any(isinstance(cb, Checkpoint) for cb in callbacks),
        )
        # strategy / devices / num_nodes from the arguments and the launcher (torchrun, srun; else one process)
        from hf_lightning.strategies import trainer_kwargs

        kwargs.update(trainer_kwargs(self.args, self.model, overrides.get("max_steps")))
        kwargs.update(overrides)
        with quiet_lightning():
            trainer = L.Trainer(**kwargs)
        if self.args.full_determinism:  # Lightning's deterministic=True set ":4096:8"; transformers' value stays
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":16:8"
        return trainer

    # ----------------------------------------------------------------------------------------------- train
    def train(self, resume_from_checkpoint: str | bool | None = None, trial: Any = None,
              ignore_keys_for_eval: list[str] | None = None) -> TrainOutput:
        """Trains through ``lightning.Trainer.fit``; returns HF's `TrainOutput`."""
        if self.train_dataset is None:
            raise ValueError("Trainer: training requires a train_dataset.")
        # Translated again: as transformers reads its arguments when training, changes made since __init__ count.
        self._sync_given_args()
        self.translated = translate(self.args)
        if self.model_init is not None:
            enable_full_determinism(self.args.seed) if self.args.full_determinism else set_seed(self.args.seed)
            self.model = self.call_model_init(trial)
            self.callback_handler.model = self.model
            self.optimizer, self.lr_scheduler = None, None  # as transformers: a new model gets a new optimizer
        if DebugOption.UNDERFLOW_OVERFLOW in self.args.debug:  # as transformers: hooks that stop at the first inf/nan
            DebugUnderflowOverflow(self.model)
        # HF's errors for a bad path / no checkpoint in output_dir, before anything is built.
        resume = resolve_checkpoint(self.args.output_dir, resume_from_checkpoint)
        batch_size = self.args.per_device_train_batch_size
        if not self.args.auto_find_batch_size:
            return self._train_with(batch_size, resume, trial, ignore_keys_for_eval)
        if resume is not None:  # as transformers: resume with the batch size the checkpoint settled on
            batch_size = TrainerState.load_from_json(os.path.join(resume, "trainer_state.json")).train_batch_size \
                or batch_size
        # transformers' own retry (accelerate's): on an out-of-memory error, again with 0.9 x the batch size
        from accelerate.utils import find_executable_batch_size

        return find_executable_batch_size(self._train_with, starting_batch_size=batch_size)(
            resume, trial, ignore_keys_for_eval)

    def _train_with(self, batch_size: int, resume: str | None, trial: Any,
                    ignore_keys_for_eval: list[str] | None) -> TrainOutput:
        """One ``fit`` with a per-device batch size (``auto_find_batch_size`` retries with smaller ones)."""
        if self.args.auto_find_batch_size:
            log.info(f"auto_find_batch_size: training with a per-device batch size of {batch_size}")
        self._train_batch_size = batch_size
        self._model_prepared = True  # transformers' accelerator prepares the model here
        if self._created_lr_scheduler:  # as transformers: its own scheduler is rebuilt (the step count may differ)
            self.lr_scheduler, self._created_lr_scheduler = None, False
        given_scheduler = self.lr_scheduler is not None
        datamodule = self._datamodule = self._build_datamodule(
            {"train": self.train_dataset, "validation": self.eval_dataset})
        self._datamodule_sources = self._data_sources()
        self.module = module = self._build_module()
        module.ignore_keys = ignore_keys_for_eval
        # The translated settings drive both callbacks; the user's arguments are what transformers' callbacks see.
        self._flow = flow = HFFlow(settings=self.translated.flow, args=self.args, handler=self.callback_handler,
                                   control_validation=True)
        flow.hold_handler_weakly()  # this Trainer owns the handler
        flow.memory_tracker = self._memory_tracker  # one tracker: the init metrics come with the first stage's
        flow.state = self.state = self._fresh_state(trial)
        flow.control = self.__dict__["_control"]  # as transformers: one TrainerControl across train() calls
        me = weakref.proxy(self)  # the flow lives in the Lightning trainer this Trainer holds: no cycle
        if "log" in self.overridden:
            flow.log_override = weak_method(self.log)
        if {"evaluate", "evaluation_loop"} & self.overridden:  # as transformers: each evaluation in training calls them
            flow.evaluate_override = lambda: me.evaluate(ignore_keys=ignore_keys_for_eval)
        self._route_step_end_overrides(flow, trial, ignore_keys_for_eval)
        if self.eval_dataset is None and "get_eval_dataloader" not in self.overridden:
            flow.no_eval_data = "Trainer: evaluation requires an eval_dataset."  # transformers' get_eval_dataloader
        max_steps, max_epochs = self._max_steps(datamodule)
        self.pl_trainer = self._lightning_trainer(self._train_callbacks(flow, resume), max_steps=max_steps,
                                                  max_epochs=max_epochs)
        self._fit(module, datamodule, flow)
        self.model = uncompiled(module.model)  # transformers keeps `model` uncompiled
        self._keep_model_on(self.pl_trainer)
        self.state, self.control = flow.state, flow.control
        self._leave_mode_as_transformers(flow)
        self.optimizer = self.pl_trainer.optimizers[0] if self.pl_trainer.optimizers else None
        self.lr_scheduler = trainer_scheduler(self.pl_trainer)
        self._created_lr_scheduler = not given_scheduler and self.lr_scheduler is not None
        metrics = dict(getattr(flow, "train_metrics", {}))
        return TrainOutput(self.state.global_step, metrics.get("train_loss", 0.0), metrics)

    def _leave_mode_as_transformers(self, flow: HFFlow) -> None:
        """The model's mode after ``train()``, as transformers leaves it: in eval mode where an evaluation came after
        the last training step (its evaluation loop sets it; only a next training step would set train mode again) or
        a peft model's best adapter was loaded (peft loads it as not trainable, in eval mode); else in train mode."""
        best = self.state.best_model_checkpoint
        peft_best = (self.args.load_best_model_at_end and best is not None and is_peft_model(self.model)
                     and has_adapter_weights(best))
        self.model.train(not (flow.evaluated_at_step == self.state.global_step or peft_best))

    def _fit(self, module: FacadeModule, datamodule: FacadeDataModule, flow: HFFlow) -> None:
        """``lightning.Trainer.fit``, with Ctrl+C behaving as in transformers.Trainer.

        Lightning answers a KeyboardInterrupt by tearing down, ignoring SIGINT from then on and calling
        ``sys.exit(1)``; transformers lets the KeyboardInterrupt through. Here the interrupt comes back as a
        KeyboardInterrupt, the SIGINT handler is restored (a notebook can be interrupted again), and the trainer keeps
        the model and state of the last finished step.
        """
        main_thread = threading.current_thread() is threading.main_thread()
        handler = signal.getsignal(signal.SIGINT) if main_thread else None
        try:
            with quiet_lightning():
                self.pl_trainer.fit(module, datamodule=datamodule)
        except SystemExit as stop:
            if not self.pl_trainer.interrupted:
                raise
            if main_thread and handler is not None:
                signal.signal(signal.SIGINT, handler)
            self.model, self.state = uncompiled(module.model), flow.state
            if isinstance(stop, SIGTERMException):  # terminated, as SIGTERM's default: status 143, not success
                log.warning(f"SIGTERM: training stopped after global step {flow.state.global_step} without a "
                            "checkpoint (enable_jit_checkpoint=True writes one first).")
                raise SystemExit(128 + signal.SIGTERM) from None
            raise KeyboardInterrupt(f"training interrupted after global step {flow.state.global_step}") from None

    def _train_callbacks(self, flow: HFFlow, resume: str | None) -> list[Any]:
        # HFCheckpoint also resumes and loads the best model at the end, so it is there even with save_strategy "no".
        settings = self.translated.checkpoint
        if self.trial_output_dir is not None:  # a hyper-parameter search trial's folder (transformers' _get_output_dir)
            settings = settings.replace(output_dir=self.trial_output_dir)
        checkpoint = HFCheckpoint(settings=settings, resume_from_checkpoint=resume)
        if {"save_model", "_save"} & self.overridden:  # as transformers' _save_checkpoint: the model files through it
            me = weakref.proxy(self)  # the checkpoint callback lives in the Lightning trainer this Trainer holds
            checkpoint.save_model_override = lambda folder: me.save_model(folder, _internal_call=True)
        if "_load_best_model" in self.overridden:
            checkpoint.load_best_override = weak_method(self._load_best_model)
        if "_load_from_checkpoint" in self.overridden:
            checkpoint.load_resumed_override = weak_method(self._load_from_checkpoint)
        return [flow, checkpoint]

    # ----------------------------------------------------------------------------------------------- step end
    def _route_step_end_overrides(self, flow: HFFlow, trial: Any, ignore_keys_for_eval: list[str] | None) -> None:
        """A subclass's ``_maybe_log_save_evaluate`` / ``_evaluate`` / ``_save_checkpoint`` is called where
        transformers' loop calls it, with transformers' arguments; the base methods below do HFFlow's work."""
        me = weakref.proxy(self)  # the flow lives in the Lightning trainer this Trainer holds: no cycle
        if "_maybe_log_save_evaluate" in self.overridden:
            def log_save_evaluate() -> None:
                record = flow._record
                tr_loss = flow._tr_loss if flow._tr_loss is not None else torch.zeros(())
                me._maybe_log_save_evaluate(
                    tr_loss, None if record is None else record.grad_norm, me.model_wrapped, trial,
                    me.pl_trainer.current_epoch, ignore_keys_for_eval, flow._start_time,
                    None if record is None else record.learning_rate)
            flow.log_save_evaluate_override = log_save_evaluate
        if "_evaluate" in self.overridden:
            flow.evaluate_step_override = lambda skip_scheduler=False: me._evaluate(
                trial, ignore_keys_for_eval, skip_scheduler=skip_scheduler)
        if "_save_checkpoint" in self.overridden:
            flow.save_checkpoint_override = lambda: me._save_checkpoint(me.model_wrapped, trial)

    def _running_flow(self, method: str) -> HFFlow:
        flow = self._flow
        if flow is None or not self._training_now():
            raise RuntimeError(f"Trainer.{method} runs inside train() (at the end of each step and epoch); outside "
                               "it, use evaluate(), save_model(output_dir) and save_state().")
        return flow

    def _maybe_log_save_evaluate(self, tr_loss: torch.Tensor, grad_norm: Any, model: nn.Module, trial: Any,
                                 epoch: float, ignore_keys_for_eval: list[str] | None, start_time: float,
                                 learning_rate: float | None = None) -> None:
        """transformers' step end: logs the training loss, evaluates and saves a checkpoint as ``self.control``
        says (``should_log`` / ``should_evaluate`` / ``should_save``). ``train()`` calls it at the end of each
        optimizer step and epoch; a subclass may override it (and call ``super()``) as in transformers."""
        flow = self._running_flow("_maybe_log_save_evaluate")
        flow.log_evaluate_save(self.pl_trainer, self.pl_trainer.lightning_module)

    def _evaluate(self, trial: Any, ignore_keys_for_eval: list[str] | None,
                  skip_scheduler: bool = False) -> dict[str, float]:
        """transformers' ``_evaluate``: evaluates, then steps a ``reduce_lr_on_plateau`` schedule with
        ``metric_for_best_model`` unless ``skip_scheduler``. During ``train()`` the evaluation runs in the fit."""
        if self._flow is not None and self._training_now():
            return self._flow.evaluate_and_schedule(self.pl_trainer, self.pl_trainer.lightning_module,
                                                    skip_scheduler)
        metrics = self.evaluate(ignore_keys=ignore_keys_for_eval)
        if not skip_scheduler and isinstance(self.lr_scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            name = self.args.metric_for_best_model or "loss"
            key = name if name.startswith("eval_") else f"eval_{name}"
            if key not in metrics:
                raise schedule_metric_missing(key, metrics)
            self.lr_scheduler.step(metrics[key])
        return metrics

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        """transformers' ``_save_checkpoint``: writes ``checkpoint-{global_step}`` (model files through
        ``save_model``, optimizer, scheduler, RNG and trainer state) and rotates; called inside ``train()`` when
        ``control.should_save`` is set. A subclass may override it and call ``super()`` (the folder then exists)."""
        flow = self._running_flow("_save_checkpoint")
        flow.save_checkpoint(self.pl_trainer, self.pl_trainer.lightning_module)

    def _load_best_model(self) -> None:
        """transformers' ``_load_best_model``: loads ``state.best_model_checkpoint``'s weights (or adapter) into the
        model; ``train()`` calls it at the end with ``load_best_model_at_end``, and a subclass may override it."""
        best = self.state.best_model_checkpoint
        if self._flow is not None and self._training_now():
            saver = find_saver(self.pl_trainer)
            if saver is not None:
                saver.load_best(self.pl_trainer)
                return
        if best is None:
            raise ValueError("There is no best model to load: state.best_model_checkpoint is None (train with "
                             "eval_strategy, save_strategy and metric_for_best_model set).")
        log.info(f"Loading best model from {best} (score: {self.state.best_metric}).")
        load_weights_into(self.model, best, best=True)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        """transformers' ``_load_from_checkpoint``: loads a checkpoint folder's weights (or adapter) into ``model``
        (default: the trained model). ``train(resume_from_checkpoint=...)`` calls it before the first step; a
        subclass may override it."""
        if model is None and self._fitting():
            resuming.load_model_weights(self.pl_trainer, resume_from_checkpoint)  # sharded strategies place them
            return
        load_weights_into(self.model if model is None else model, resume_from_checkpoint)

    @property
    def _globalstep_last_logged(self) -> int:
        """transformers' step of the last training-loss record (what ``_maybe_log_save_evaluate`` compares)."""
        flow = self._flow
        return flow._last_logged if flow is not None else self.state.global_step

    @_globalstep_last_logged.setter
    def _globalstep_last_logged(self, step: int) -> None:
        if self._flow is not None:
            self._flow._last_logged = step

    # ----------------------------------------------------------------------------------------------- logging
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """HF's ``log``: adds epoch and step, appends to ``state.log_history``, calls ``on_log``."""
        if self._flow is not None and self.pl_trainer is not None and self.pl_trainer.training:
            self._flow.record_log(logs, None, start_time)  # during training: HFFlow's state and loggers
            return
        if self.state.epoch is not None:
            logs["epoch"] = self.state.epoch
        if self.args.include_num_input_tokens_seen not in ("no", False):
            logs["num_input_tokens_seen"] = self.state.num_input_tokens_seen
        self.state.log_history.append({**logs, "step": self.state.global_step})
        loggers = self._report_loggers()
        if loggers and self.is_world_process_zero():  # evaluate() after training: eval/loss, ... as transformers
            # before the callbacks' on_log, as transformers' reporting callbacks come before the user's
            write_to_loggers(loggers, logs, self.state.global_step)
            for logger in loggers:
                logger.save()
        self.control = self.callback_handler.on_log(self.args, self.state, self.control, logs)
