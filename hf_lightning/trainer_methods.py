"""The public and overridable methods of ``transformers.Trainer`` (steps, optimizer, loaders, callbacks, saving) with
their default behaviour, as a mixin of the HF-style `Trainer`.

A subclass overrides any of them (``compute_loss``, ``prediction_step``, ``training_step``, ``create_optimizer``,
``create_scheduler``, ``get_train_dataloader``...) and its ``super()`` call lands here. Each works before ``train()``
as in transformers (scripts build the optimizer up front, or size a schedule with ``len(get_train_dataloader())``):
the module and data module they need are built on demand.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers.trainer import Trainer as HFTrainer
from transformers.trainer_pt_utils import (
    get_learning_rates,
    get_num_trainable_parameters,
    get_optimizer_group,
    log_metrics,
    metrics_format,
    save_metrics,
)
from transformers.trainer_utils import has_length
from transformers.utils import logging as hf_logging

from hf_lightning.checkpoint import folder
from hf_lightning.data.datamodule import HFDataModule, model_signature_columns
from hf_lightning.data.loader import count_label_items
from hf_lightning.facade import FacadeAccelerator, FacadeModule
from hf_lightning.optim import build_optimizer, build_scheduler

if TYPE_CHECKING:
    from hf_lightning.facade import FacadeDataModule

log = hf_logging.get_logger("transformers.trainer")


class TrainerMethods:
    """transformers.Trainer's overridable methods; mixed into `hf_lightning.Trainer`."""

    model: nn.Module
    optimizer: torch.optim.Optimizer | None
    lr_scheduler: Any
    optimizer_cls_and_kwargs: Any
    train_dataset: Any
    eval_dataset: Any
    args: Any
    overridden: set[str]
    module: FacadeModule | None
    accelerator: Any
    state: Any
    model_accepts_loss_kwargs: bool
    compute_loss_func: Any
    processing_class: Any

    # transformers' own helpers (they read self.model / self.optimizer / self.args / self.state)
    get_learning_rates = get_learning_rates
    get_num_trainable_parameters = get_num_trainable_parameters
    get_optimizer_group = get_optimizer_group
    log_metrics = log_metrics
    save_metrics = save_metrics
    metrics_format = metrics_format

    def _evaluation_module(self) -> FacadeModule:  # provided by Trainer
        raise NotImplementedError

    def _build_datamodule(self, splits: dict[str, Any]) -> FacadeDataModule:  # provided by Trainer
        raise NotImplementedError

    @property
    def model_wrapped(self) -> nn.Module:
        """transformers' ``model_wrapped``: the model being trained. Lightning's strategies shard or wrap the
        LightningModule that holds it (FSDP2 shards it in place), so this is ``model``."""
        return self.model

    @property
    def gather_function(self) -> Callable[..., Any]:
        """transformers' ``gather_function``: the accelerator's ``gather_for_metrics``, with Python objects where
        ``eval_use_gather_object`` (for evaluation loops written against transformers.Trainer). A script may set it."""
        given = self.__dict__.get("_given_gather_function")
        return given if given is not None else functools.partial(
            self.accelerator.gather_for_metrics, use_gather_object=self.args.eval_use_gather_object)

    @gather_function.setter
    def gather_function(self, value: Callable[..., Any]) -> None:
        self.__dict__["_given_gather_function"] = value

    #: transformers sets it when ``push_to_hub`` creates the repository, which hf_lightning does not do
    hub_model_id: str | None = None

    # transformers' read-only flags that scripts consult
    # (XLA FSDP is refused when the Trainer is built; these answer transformers' expressions, falsy values included)
    @property
    def is_fsdp_xla_enabled(self) -> Any:
        return self.args.fsdp and self.args.fsdp_config.get("xla", False)

    @property
    def is_fsdp_xla_v2_enabled(self) -> Any:
        return self.args.fsdp and self.args.fsdp_config.get("xla_fsdp_v2", False)

    @property
    def is_fsdp_xla_v1_enabled(self) -> Any:
        return self.is_fsdp_xla_enabled and not self.is_fsdp_xla_v2_enabled

    @property
    def is_distributed_loading_by_transformers(self) -> bool:
        """As transformers: the model was loaded sharded by transformers itself (its ``tp_plan`` / device mesh)."""
        return bool(getattr(self.model, "is_distributed_loading_by_transformers", False))

    @property
    def is_deepspeed_enabled(self) -> bool:
        """Whether training runs under DeepSpeed (``args.deepspeed``; Lightning's DeepSpeedStrategy)."""
        return bool(self.args.deepspeed)

    @property
    def is_fsdp_enabled(self) -> bool:
        """Whether training runs under FSDP (``args.fsdp``; Lightning's FSDP / ModelParallel strategy)."""
        return bool(self.args.fsdp)

    @property
    def is_in_train(self) -> bool:
        """True while ``train()`` runs (callbacks and overridden hooks can tell training's evaluations apart)."""
        return self._training_now()

    @property
    def is_model_parallel(self) -> bool:
        """As transformers: a model spread over several devices by ``device_map`` (``hf_device_map``)."""
        device_map = getattr(self.model, "hf_device_map", None) or {}
        return len({d for d in device_map.values() if d not in ("cpu", "disk")}) > 1

    @property
    def place_model_on_device(self) -> bool:
        """transformers' rule: the arguments' ``place_model_on_device`` where set, else whether the model is moved to
        the device as a whole (not when a strategy shards it, it is spread, or it evaluates in half precision)."""
        args = self.args
        if args.place_model_on_device is not None:
            return args.place_model_on_device
        return not (self.is_deepspeed_enabled or self.is_fsdp_enabled or self.is_model_parallel
                    or args.fp16_full_eval or args.bf16_full_eval)

    @property
    def model_accepts_loss_kwargs(self) -> bool:
        """transformers' rule: the model's forward takes ``**kwargs`` (``num_items_in_batch`` is passed to it). As in
        transformers, a script may set it (False: the loss is a mean, divided by the accumulation steps)."""
        given = self.__dict__.get("_given_accepts_loss_kwargs")
        return given if given is not None else self._evaluation_module().model_accepts_loss_kwargs

    @model_accepts_loss_kwargs.setter
    def model_accepts_loss_kwargs(self, value: bool) -> None:
        self.__dict__["_given_accepts_loss_kwargs"] = bool(value)

    @property
    def neftune_noise_alpha(self) -> float | None:
        return self.args.neftune_noise_alpha

    # ----------------------------------------------------------------------------------------------- loss / steps
    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        return FacadeModule.base_compute_loss(self._evaluation_module(), model, inputs, return_outputs,
                                              num_items_in_batch)

    def prediction_step(self, model: nn.Module, inputs: dict[str, Any], prediction_loss_only: bool,
                        ignore_keys: list[str] | None = None) -> tuple[Any, Any, Any]:
        return FacadeModule.base_prediction_step(self._evaluation_module(), model, inputs, prediction_loss_only,
                                                 ignore_keys)

    def training_step(self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        return self._evaluation_module().facade_training_step(model, inputs, num_items_in_batch)

    # ----------------------------------------------------------------------------------------------- optimisation
    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """HF's ``create_optimizer``: AdamW (or ``optim``) over HF's decay / no-decay groups, kept once built."""
        if self.optimizer is None:
            module = self._evaluation_module()
            config = {**module.optim_config, "warmup_steps": module.warmup_steps}
            model = model or self.model
            cls_and_kwargs = self.optimizer_cls_and_kwargs
            if cls_and_kwargs is None and "get_optimizer_cls_and_kwargs" in self.overridden:
                cls_and_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)  # as transformers asks it
            self.optimizer = build_optimizer(model, **config, optimizer_cls_and_kwargs=cls_and_kwargs,
                                             decay_names=self.get_decay_parameter_names(model))
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None) -> Any:
        """HF's ``create_scheduler``: ``get_scheduler(lr_scheduler_type, ...)``, kept once built."""
        if self.lr_scheduler is None:
            module = self._evaluation_module()
            self.lr_scheduler = build_scheduler(optimizer or self.optimizer, lr_scheduler_type=module.lr_scheduler_type,
                                                num_training_steps=num_training_steps,
                                                warmup_steps=module.warmup_steps,
                                                lr_scheduler_kwargs=module.lr_scheduler_kwargs)
            self._created_lr_scheduler = True
        return self.lr_scheduler

    get_optimizer_cls_and_kwargs = staticmethod(HFTrainer.get_optimizer_cls_and_kwargs)

    # ----------------------------------------------------------------------------------------------- batches
    @property
    def _signature_columns(self) -> list[str] | None:
        """transformers' ``_signature_columns``: the columns loaders keep, once a loader was built (None before,
        and with ``remove_unused_columns`` off); what ``_set_signature_columns_if_needed`` (or a script) set."""
        if "_signature_columns_set" in self.__dict__:
            return self.__dict__["_signature_columns_set"]
        if "_set_signature_columns_if_needed" in self.overridden:  # as transformers: None until the override sets it
            return None
        if self.__dict__.get("_datamodule") is None and not self.__dict__.get("_eval_parts"):
            return None
        columns = self._run_datamodule().signature_columns()
        return columns[0] if columns else None

    @_signature_columns.setter
    def _signature_columns(self, columns: list[str] | None) -> None:
        self.__dict__["_signature_columns_set"] = columns

    def _set_signature_columns_if_needed(self) -> None:
        """transformers' ``_set_signature_columns_if_needed``: sets ``_signature_columns`` to the columns the model
        takes (its forward's arguments, ``label``, ``label_ids`` and the label names) if nothing set it. A subclass
        may override it to keep more columns: loaders then keep the ``_signature_columns`` it sets."""
        if self.__dict__.get("_signature_columns_set") is None:
            module = self._evaluation_module()
            self._signature_columns = model_signature_columns(module.model, getattr(module, "label_names", None))

    def _remove_unused_columns(self, dataset: Any, description: str | None = None) -> Any:
        """transformers' ``_remove_unused_columns``: the ``datasets.Dataset`` without the columns the model does not
        take (``_signature_columns``); unchanged with ``remove_unused_columns`` off. A subclass may override it:
        every loader's ``datasets.Dataset`` then goes through the override (the description ``Training`` /
        ``Evaluation`` / ``test``)."""
        role = {"Training": "train", "test": "predict"}.get(description or "", "validation")
        return HFDataModule._remove_unused(self._run_datamodule(), dataset, role)

    def _columns_set(self) -> list[str] | None:
        """The ``_signature_columns`` a subclass or script set (None: the model's): an overridden
        ``_set_signature_columns_if_needed`` is called first, as transformers calls it before removing columns."""
        if "_set_signature_columns_if_needed" in self.overridden:
            self._set_signature_columns_if_needed()
        return self.__dict__.get("_signature_columns_set")

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        """transformers' ``_get_train_sampler``: the training order of the arguments (``train_sampling_strategy``,
        seeded per epoch), None for a data set without a length. A subclass may override it: training then reads
        its sampler's order, cut into batches."""
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if dataset is None or not has_length(dataset):
            return None
        return self._run_datamodule().train_sampler(dataset)

    def _get_eval_sampler(self, eval_dataset: Any) -> Any:
        """transformers' ``_get_eval_sampler``: the data set's order (None without a length). A subclass may
        override it (one process): evaluation and prediction then read its order."""
        if eval_dataset is None or not has_length(eval_dataset):
            return None
        return torch.utils.data.SequentialSampler(eval_dataset)

    def _prepare_input(self, data: Any) -> Any:
        """transformers' ``_prepare_input``: tensors (in dicts, lists, tuples) moved to the training device. A
        subclass may override it or `_prepare_inputs`: every batch then goes through it once it is on the device."""
        device = self.accelerator.device
        if isinstance(data, Mapping):
            return type(data)({k: self._prepare_input(v) for k, v in data.items()})
        if isinstance(data, (tuple, list)):
            return type(data)(self._prepare_input(v) for v in data)
        return data.to(device) if torch.is_tensor(data) else data

    def _prepare_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """transformers' ``_prepare_inputs``: `_prepare_input`, refusing an empty batch."""
        inputs = self._prepare_input(inputs)
        if len(inputs) == 0:
            columns = ",".join(self._signature_columns or [])
            raise ValueError("The batch received was empty, your model won't be able to train on it. Double-check "
                             f"that your training dataset contains keys expected by the model: {columns}.")
        return inputs

    def get_batch_samples(self, epoch_iterator: Iterator[Any], num_batches: int,
                          device: torch.device | None = None) -> tuple[list[Any], torch.Tensor | None]:
        """transformers' ``get_batch_samples``: the next ``num_batches`` batches of ``epoch_iterator`` and the label
        tokens they hold, summed over processes (``average_tokens_across_devices``), as transformers counts them.
        Training calls an override of it once per accumulation window, as transformers does (the override's
        ``num_items_in_batch`` goes to the loss); without one it counts each window itself, the same way."""
        batches = [batch for _, batch in zip(range(num_batches), epoch_iterator)]
        if not batches or "labels" not in batches[0] or not (self.model_accepts_loss_kwargs
                                                             or self.compute_loss_func is not None):
            return batches, None
        shift = bool(getattr(self.module, "loss_shifts_labels", False))
        counts = [count_label_items(batch, shift_labels=shift) for batch in batches]
        if any(count is None for count in counts):
            return batches, None
        total = torch.tensor(sum(counts), device=device)
        module = self.module
        lightning = getattr(module, "_trainer", None)
        if self.args.average_tokens_across_devices and lightning is not None and lightning.world_size > 1:
            total = lightning.strategy.reduce(total.to(module.device), reduce_op="sum")
        return batches, total

    @property
    def current_flos(self) -> float:
        """transformers' ``current_flos``: the operations counted since they were last stored in the state."""
        record = getattr(self.module, "step_record", None)
        return float(record.flos) if record is not None else 0.0

    @current_flos.setter
    def current_flos(self, value: float) -> None:
        record = getattr(self.module, "step_record", None)
        if record is not None:
            record.flos = float(value)

    def store_flos(self) -> None:
        """transformers' ``store_flos``: the operations counted so far (summed over processes) added to
        ``state.total_flos``, and the count started again."""
        flow, pl_trainer = self.__dict__.get("_flow"), self.__dict__.get("pl_trainer")
        if flow is not None and self._training_now():
            flow.store_flos(pl_trainer, pl_trainer.lightning_module)
            self.state = flow.state
            return
        self.state.total_flos += self.current_flos
        self.current_flos = 0.0

    def num_examples(self, dataloader: Any) -> int:
        """transformers' ``num_examples``: the loader's data set length, else its batches x the batch size."""
        return HFTrainer.num_examples(self, dataloader)

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        """transformers' ``floating_point_ops``: 6 x main-input elements x non-embedding parameters (0 for a model
        without ``num_parameters``); the training loop counts the same (``HFModule.floating_point_ops``)."""
        return HFTrainer.floating_point_ops(self, inputs)

    def get_total_train_batch_size(self, args: Any) -> int:
        """Samples per optimizer step over all processes: per-device batch x accumulation x processes."""
        return self._train_batch_size * args.gradient_accumulation_steps * self.accelerator.num_processes

    def get_tp_size(self) -> int:
        """Tensor-parallel degree: 1 (Lightning's strategies shard data and parameters, not layers)."""
        return 1

    get_cp_size = get_sp_size = get_tp_size

    def autocast_smart_context_manager(self, cache_enabled: bool | None = True) -> Any:
        """A no-op context, as in transformers: the precision plugin (Lightning here, accelerate there) autocasts."""
        return contextlib.nullcontext()

    def compute_loss_context_manager(self) -> contextlib.ExitStack:
        """The context an overridden ``training_step`` computes its loss in, as transformers' (autocast is the
        precision plugin's)."""
        stack = contextlib.ExitStack()
        autocast = self.autocast_smart_context_manager()
        if not isinstance(autocast, contextlib.nullcontext):
            stack.enter_context(autocast)
        return stack

    def create_model_card(self, **kwargs: Any) -> None:
        """transformers' ``create_model_card``: a draft ``README.md`` in ``output_dir`` from the run's arguments,
        log history and evaluation results (language, license, tags, model_name, finetuned_from, tasks, dataset...
        as in transformers)."""
        HFTrainer.create_model_card(self, **kwargs)

    def push_to_hub(self, *args: Any, **kwargs: Any) -> Any:
        """Not supported: hf_lightning does not upload. Save, then upload with transformers' own methods."""
        raise NotImplementedError(
            "Trainer.push_to_hub is not supported by hf_lightning: call trainer.save_model(folder), then "
            "trainer.model.push_to_hub(repo_id) (and processing_class.push_to_hub(repo_id)), or upload the folder "
            "with huggingface_hub.upload_folder.")

    init_hf_repo = push_to_hub

    def create_accelerator_and_postprocess(self) -> None:
        """Sets ``trainer.accelerator``: what code written for transformers reads there (processes, gather,
        backward...), answered by Lightning's engine (hf_lightning trains without accelerate's ``Accelerator``)."""
        self.accelerator = FacadeAccelerator(self)

    def end(self) -> None:
        """transformers' ``end``: called once at the very end of a script. Ends the distributed process group of a
        multi-process run (``train`` / ``evaluate`` / ``predict`` / ``save_model`` communicate between processes and
        must come before it); the trackers already finished with each run."""
        from hf_lightning.strategies.layout import leave_process_group

        leave_process_group()  # the ranks meet first: a gloo rank leaving while its peer tears down can abort

    def get_resumed_dataloader(self, dataloader: Any, num_batches: int) -> Any:
        """transformers' ``get_resumed_dataloader``: ``dataloader`` without its first ``num_batches`` batches
        (accelerate's ``skip_first_batches``). hf_lightning's resume skips batches itself and does not call it."""
        from accelerate import skip_first_batches

        return skip_first_batches(dataloader, num_batches)

    def set_initial_training_values(self, args: Any, dataloader: Any) -> tuple[Any, ...]:
        """transformers' ``set_initial_training_values``: ``(num_train_epochs, num_update_steps_per_epoch,
        num_examples, num_train_samples, total_train_batch_size, steps_in_epoch, max_steps)`` for ``dataloader``."""
        return HFTrainer.set_initial_training_values(self, args, dataloader)

    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        """transformers' ``get_decay_parameter_names``: the parameters weight decay applies to (not biases, not norm
        layers), the split the default optimizer uses."""
        return HFTrainer.get_decay_parameter_names(self, model)

    def create_optimizer_and_scheduler(self, num_training_steps: int) -> None:
        self.create_optimizer()
        self.create_scheduler(num_training_steps, self.optimizer)

    # ----------------------------------------------------------------------------------------------- data
    def _run_datamodule(self) -> FacadeDataModule:
        """The data module of the running (or last) ``train()``, else one over the trainer's data sets. Outside
        training, as transformers builds its loaders at each call: built again once the data sets, the collator,
        the processing class or the arguments (``trainer.args``) changed."""
        datamodule = getattr(self, "_datamodule", None)
        if datamodule is not None and self._training_now():
            return datamodule
        self._refresh_arguments()
        sources = self._data_sources()
        kept = self.__dict__.get("_datamodule_sources")
        if datamodule is None or kept is None or any(a is not b for a, b in zip(kept, sources, strict=True)):
            datamodule = self._datamodule = self._build_datamodule(
                {"train": self.train_dataset, "validation": self.eval_dataset})
            self._datamodule_sources = sources
        return datamodule

    def _data_sources(self) -> tuple[Any, ...]:
        """What the run data module is built from (compared by identity)."""
        return self.train_dataset, self.eval_dataset, self.data_collator, self.processing_class, self.translated

    def get_train_dataloader(self) -> Any:
        """The training DataLoader of micro-batches (HF's sample order, collator and unused columns removed)."""
        if self.train_dataset is None:
            raise ValueError("Trainer: training requires a train_dataset.")
        return self._with_total_batch_size(self._run_datamodule().base_train_dataloader(), self._train_batch_size)

    def get_eval_dataloader(self, eval_dataset: Any = None) -> Any:
        """The evaluation DataLoader of ``eval_dataset``: a data set, the name of one of a dict of eval sets, or None
        (the trainer's ``eval_dataset``). With ``dataloader_persistent_workers``, as transformers, the loader of each
        name (``eval`` for any data set) is built once and returned again, so its workers stay alive."""
        key = eval_dataset if isinstance(eval_dataset, str) else "eval"
        cache = self.__dict__.setdefault("_eval_dataloaders", {})
        if self.args.dataloader_persistent_workers and key in cache:
            return cache[key]
        loader = self._with_total_batch_size(self._new_eval_dataloader(eval_dataset),
                                             self.args.per_device_eval_batch_size)
        if self.args.dataloader_persistent_workers:
            cache[key] = loader
        return loader

    def _new_eval_dataloader(self, eval_dataset: Any) -> Any:
        if eval_dataset is None or isinstance(eval_dataset, str):
            datamodule = self._run_datamodule()
            if isinstance(eval_dataset, str):
                if datamodule.validation_sets is None or eval_dataset not in datamodule.validation_sets:
                    raise ValueError(f"get_eval_dataloader('{eval_dataset}'): eval_dataset is not a dict with that "
                                     "name.")
                role = f"validation/{eval_dataset}"
            elif self.eval_dataset is None:
                raise ValueError("Trainer: evaluation requires an eval_dataset.")
            else:
                role = "validation"
        else:
            datamodule, role = self._build_datamodule({"validation": eval_dataset}), "validation"
        loader = datamodule.base_eval_dataloader(role)
        datamodule.announce_columns(role)  # as transformers: the columns the set lost, at each loader built
        return loader

    def get_test_dataloader(self, test_dataset: Any) -> Any:
        """The DataLoader ``predict`` uses for ``test_dataset``."""
        return self._with_total_batch_size(self._build_datamodule({"test": test_dataset}).base_eval_dataloader(
            "predict"), self.args.per_device_eval_batch_size)

    def _with_total_batch_size(self, loader: Any, per_device: int) -> Any:
        """The loader with the ``total_batch_size`` that accelerate's prepared loaders of transformers carry (the
        samples of one step over all processes); Lightning shards the loaders itself, so these are plain ones."""
        if isinstance(loader, torch.utils.data.DataLoader):
            loader.total_batch_size = per_device * self.accelerator.num_processes
        return loader

    # ----------------------------------------------------------------------------------------------- callbacks
    def add_callback(self, callback: Any) -> None:
        self.callback_handler.add_callback(callback)

    def pop_callback(self, callback: Any) -> Any:
        return self.callback_handler.pop_callback(callback)

    def remove_callback(self, callback: Any) -> None:
        self.callback_handler.remove_callback(callback)

    # ----------------------------------------------------------------------------------------------- saving
    def save_state(self) -> None:
        """Writes ``trainer_state.json`` to output_dir (world process zero only)."""
        if self.is_world_process_zero():
            os.makedirs(self.args.output_dir, exist_ok=True)
            self.state.save_to_json(os.path.join(self.args.output_dir, "trainer_state.json"))

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Saves the model (safetensors + config), the processing class and the training arguments (``_save``).
        Every process calls it (sharded weights are gathered); an overridden ``_save`` runs where transformers runs
        it, on the process that saves (``args.should_save``). With ``save_model`` or ``_save`` overridden, each
        checkpoint's model files come from ``save_model(checkpoint_folder, _internal_call=True)``, as in
        transformers."""
        output_dir = output_dir or self.args.output_dir
        if "_save" in self.overridden:
            if self.args.should_save:
                self._save(output_dir)
            return
        self._save(output_dir)

    def _save(self, output_dir: str | None = None, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """transformers' ``_save``: the model's files, the processing class and ``training_args.bin``."""
        output_dir = output_dir or self.args.output_dir
        if self.is_world_process_zero():
            log.info(f"Saving model checkpoint to {output_dir}")
        module = self._evaluation_module()
        if state_dict is None:
            module.save_pretrained(output_dir)  # every rank: sharded weights are gathered, rank zero writes
        elif self.is_world_process_zero():  # the weights given (an override's ``super()._save(dir, state_dict)``)
            os.makedirs(output_dir, exist_ok=True)
            folder.save_model_files(self.model, output_dir, state_dict, self.processing_class)
        if self.is_world_process_zero():
            folder.save_training_args(self.args, output_dir, readable=False)

    # ----------------------------------------------------------------------------------------------- search
    def hyperparameter_search(self, hp_space: Callable[[Any], dict[str, Any]] | None = None,
                              compute_objective: Callable[[dict[str, float]], float] | None = None,
                              n_trials: int = 20, direction: str | list[str] = "minimize", backend: str | None = None,
                              hp_name: Callable[[Any], str] | None = None, **kwargs: Any) -> Any:
        """transformers' ``hyperparameter_search`` with optuna: each trial re-runs ``model_init`` and ``train``
        (output in ``output_dir/run-<trial>``), reports the objective at each evaluation and may be pruned.

        Returns:
            ``transformers.trainer_utils.BestRun`` (run_id, objective, hyperparameters).
        """
        from hf_lightning.hpo import hyperparameter_search

        return hyperparameter_search(self, hp_space, compute_objective, n_trials, direction, backend, hp_name,
                                     **kwargs)
