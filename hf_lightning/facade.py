"""The glue between the HF-style `Trainer` and the Lightning parts: overridden hooks are called back from here."""

from __future__ import annotations

import contextlib
import inspect
import os
import types
import weakref
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import datasets
import torch
from lightning.pytorch.loggers import CSVLogger, Logger
from torch.utils.data import SequentialSampler

from hf_lightning.data.datamodule import HFDataModule, description_of
from hf_lightning.data.loader import WINDOW_KEY, WindowedBatch, split_window, window_of
from hf_lightning.modules.autocast import forward_only_autocast
from hf_lightning.modules.base import HFModule
from hf_lightning.modules.evaluation import EvaluationMixin

if TYPE_CHECKING:
    from hf_lightning.trainer import Trainer


def weak_method(method: Any) -> Any:
    """``method`` (a bound method of the Trainer) holding its object weakly, with its signature: the hooks live in
    the module and data module the Trainer owns, and a cycle would keep the Trainer (its model, its trackers' runs)
    alive after the script drops it, until the garbage collector runs (transformers' Trainer is freed at once)."""
    if method is None or not isinstance(method, types.MethodType):
        return method
    ref, name = weakref.WeakMethod(method), method.__name__  # nothing below may hold ``method`` itself

    def call(*args: Any, **kwargs: Any) -> Any:
        bound = ref()
        if bound is None:
            raise ReferenceError(f"{name}: the hf_lightning.Trainer this belongs to was deleted; keep a reference to "
                                 "the Trainer while its module, Lightning trainer or accelerator is used.")
        return bound(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = method.__doc__
    call.__signature__ = inspect.signature(method)  # type: ignore[attr-defined]
    return call


def takes_keyword(fn: Any, name: str) -> bool:
    params = inspect.signature(fn).parameters
    return name in params or any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values())


class FacadeAccelerator:
    """``trainer.accelerator`` for code written against transformers.Trainer (whose accelerator is accelerate's
    ``Accelerator``): the questions callbacks and overridden steps ask of it, answered by the Lightning trainer.

    Inside an overridden ``training_step``, ``backward(loss)`` hands the loss to Lightning, whose automatic
    optimisation runs the backward pass (with precision scaling and gradient sync) on what ``training_step`` returns.
    """

    def __init__(self, facade: Trainer) -> None:
        self._facade = weakref.ref(facade)  # the Trainer holds its accelerator: no cycle keeps either alive

    @property
    def facade(self) -> Trainer:
        return self._facade()

    @property
    def _trainer(self) -> Any:
        return self.facade.pl_trainer

    def backward(self, loss: torch.Tensor, **kwargs: Any) -> None:
        module = self.facade.module
        if module is None:
            raise RuntimeError("accelerator.backward runs inside training_step, while hf_lightning trains.")
        module.defer_backward(loss)

    def unwrap_model(self, model: Any, keep_fp32_wrapper: bool = True, keep_torch_compile: bool = True) -> Any:
        """accelerate's ``unwrap_model``: the model out of DataParallel / DDP / DeepSpeed / compile wrappers (the
        trainer's own model is never wrapped: Lightning wraps the LightningModule that holds it)."""
        from accelerate.utils import extract_model_from_parallel

        return extract_model_from_parallel(model, keep_fp32_wrapper, keep_torch_compile)

    @property
    def num_processes(self) -> int:
        if self._trainer is not None:
            return self._trainer.world_size
        from hf_lightning.strategies import launch_layout

        devices, nodes = launch_layout()
        return devices * nodes

    @property
    def process_index(self) -> int:
        if self._trainer is not None:
            return self._trainer.global_rank
        from hf_lightning.strategies import launched_rank

        return launched_rank()

    @property
    def distributed_type(self) -> Any:
        """accelerate's ``DistributedType`` of the run, as transformers' accelerator reports it (``NO`` in one
        process; ``MULTI_GPU`` / ``MULTI_CPU`` under DDP; ``FSDP``; ``DEEPSPEED``)."""
        from accelerate.utils import DistributedType

        facade = self.facade
        if facade.is_deepspeed_enabled:
            return DistributedType.DEEPSPEED
        if self.num_processes == 1:
            return DistributedType.NO
        if facade.is_fsdp_enabled:
            return DistributedType.FSDP
        return DistributedType.MULTI_GPU if self.device.type == "cuda" else DistributedType.MULTI_CPU

    @property
    def local_process_index(self) -> int:
        return self._trainer.local_rank if self._trainer is not None else int(os.environ.get("LOCAL_RANK", "0"))

    @property
    def is_main_process(self) -> bool:
        return self.process_index == 0

    @property
    def is_local_main_process(self) -> bool:
        return self.local_process_index == 0

    @property
    def use_distributed(self) -> bool:
        return self.num_processes > 1

    @property
    def device(self) -> torch.device:
        if self._trainer is not None:
            return self._trainer.strategy.root_device
        return next(self.facade.model.parameters(), torch.empty(0)).device

    def gather(self, tensor: Any) -> Any:
        """Every process's tensors concatenated along the first dimension (accelerate's ``gather``)."""
        if self._trainer is None or self._trainer.world_size == 1:
            return tensor
        from torch.utils._pytree import tree_map

        def one(t: torch.Tensor) -> torch.Tensor:
            gathered = self._trainer.strategy.all_gather(t)
            return gathered.reshape(-1, *t.shape[1:]) if t.dim() > 0 else gathered

        return tree_map(lambda t: one(t) if torch.is_tensor(t) else t, tensor)

    def gather_for_metrics(self, input_data: Any, use_gather_object: bool = False) -> Any:
        """accelerate's ``gather_for_metrics``: tensors gathered as `gather` does; Python objects (or
        ``use_gather_object``) gathered with ``all_gather_object``, each process's list joined in rank order."""
        if self._trainer is None or self._trainer.world_size == 1:
            return input_data
        from torch.utils._pytree import tree_leaves

        if not use_gather_object and all(torch.is_tensor(t) for t in tree_leaves(input_data)):
            return self.gather(input_data)
        parts: list[Any] = [None] * self._trainer.world_size
        torch.distributed.all_gather_object(parts, input_data)
        return [item for part in parts for item in part]

    def pad_across_processes(self, tensor: Any, dim: int = 0, pad_index: int = 0, pad_first: bool = False) -> Any:
        """accelerate's ``pad_across_processes``: each tensor padded with ``pad_index`` along ``dim`` to the largest
        size any process has there (before a gather of tensors whose sizes differ)."""
        if self._trainer is None or self._trainer.world_size == 1:
            return tensor
        from torch.utils._pytree import tree_map

        def one(t: Any) -> Any:
            if not torch.is_tensor(t) or dim >= t.dim() or dim < -t.dim():
                return t
            axis = dim % t.dim()
            sizes = self._trainer.strategy.all_gather(torch.tensor(t.shape[axis], device=t.device))
            largest = int(sizes.max())
            if largest == t.shape[axis]:
                return t
            padded = t.new_full((*t.shape[:axis], largest, *t.shape[axis + 1:]), pad_index)
            start = largest - t.shape[axis] if pad_first else 0
            padded.narrow(axis, start, t.shape[axis]).copy_(t)
            return padded

        return tree_map(one, tensor)

    def reduce(self, tensor: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        if self._trainer is None or self._trainer.world_size == 1:
            return tensor
        return self._trainer.strategy.reduce(tensor, reduce_op=reduction)

    def wait_for_everyone(self) -> None:
        if self._trainer is not None:
            self._trainer.strategy.barrier("accelerator.wait_for_everyone")

    def print(self, *args: Any, **kwargs: Any) -> None:
        if self.is_local_main_process:
            print(*args, **kwargs)


@dataclass(frozen=True)
class TrainerHooks:
    """The ``transformers.Trainer`` methods a subclass overrode, resolved once per ``train()`` / evaluation as bound
    callables (None: the default applies). `FacadeModule` and `FacadeDataModule` call these and hold no reference to
    the Trainer.

    Attributes:
        compute_loss: ``(model, inputs, return_outputs=..., [num_items_in_batch=...])``.
        compute_loss_takes_num_items: Whether the override accepts ``num_items_in_batch`` (the pre-5.x signature
            does not).
        prediction_step: ``(model, inputs, prediction_loss_only, ignore_keys=...)``.
        training_step: ``(model, inputs, num_items_in_batch)``; it calls ``trainer.accelerator.backward(loss)``.
        create_optimizer: ``(model) -> optimizer or None``: an override's, or the one given in ``optimizers=``; None
            when neither (the module builds transformers' default).
        create_scheduler: ``(num_training_steps, optimizer) -> scheduler or None``: likewise.
        get_train_dataloader: ``() -> DataLoader``.
        get_eval_dataloader: ``(eval_dataset or its name) -> DataLoader``.
        get_test_dataloader: ``(test_dataset) -> DataLoader``.
        columns_module: ``() -> HFModule``: the module whose forward decides which columns loaders keep, also before
            ``train()``.
        optimizers_built: ``(optimizer, scheduler)``: told when Lightning has the run's optimizer and schedule, so
            ``trainer.optimizer`` / ``trainer.lr_scheduler`` are the live ones during training, as in transformers.
        model_preparation_time: ``() -> seconds or None``: the Trainer's ``model_preparation_time`` (set by an
            evaluation before any training, as transformers); every later evaluation reports it.
        prepare_inputs: ``(inputs) -> inputs``: an overridden ``_prepare_inputs`` / ``_prepare_input``, applied to
            every batch once it is on the device (training, evaluation, prediction), as transformers applies it.
        loss_context: ``() -> context manager``: an overridden ``compute_loss_context_manager`` (or
            ``autocast_smart_context_manager``), entered around each ``compute_loss`` call, as transformers does.
        floating_point_ops: ``(inputs) -> flos``: an overridden ``floating_point_ops`` (``total_flos``).
        train_sampler: ``(train_dataset) -> Sampler or None``: an overridden ``_get_train_sampler``.
        eval_sampler: ``(eval_dataset) -> Sampler or None``: an overridden ``_get_eval_sampler``.
        remove_unused_columns: ``(dataset, description) -> dataset``: an overridden ``_remove_unused_columns``,
            given each ``datasets.Dataset`` a loader is built from (description ``Training`` / ``Evaluation`` /
            ``test``), as transformers gives it.
        signature_columns: ``() -> columns or None``: the ``_signature_columns`` an overridden
            ``_set_signature_columns_if_needed`` (or a script) set: the columns loaders keep (None: the model's).
        batch_samples: ``(epoch_iterator, num_batches) -> (batches, num_items_in_batch)``: an overridden
            ``get_batch_samples``, called with the training device for each accumulation window, as transformers
            calls it; the loss then takes its ``num_items_in_batch``.
        window_size: ``(micro_batches)``: told the size of the accumulation window each training micro-batch belongs
            to (``trainer.current_gradient_accumulation_steps``, which transformers' ``training_step`` divides by).
    """

    compute_loss: Callable[..., Any] | None = None
    compute_loss_takes_num_items: bool = True
    prediction_step: Callable[..., Any] | None = None
    training_step: Callable[..., Any] | None = None
    create_optimizer: Callable[[Any], torch.optim.Optimizer | None] | None = None
    create_scheduler: Callable[[int, torch.optim.Optimizer], Any] | None = None
    get_train_dataloader: Callable[[], Any] | None = None
    get_eval_dataloader: Callable[[Any], Any] | None = None
    get_test_dataloader: Callable[[Any], Any] | None = None
    columns_module: Callable[[], Any] | None = None
    optimizers_built: Callable[[Any, Any], None] | None = None
    model_preparation_time: Callable[[], float | None] | None = None
    prepare_inputs: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    loss_context: Callable[[], Any] | None = None
    floating_point_ops: Callable[[dict[str, Any]], float] | None = None
    train_sampler: Callable[[Any], Any] | None = None
    eval_sampler: Callable[[Any], Any] | None = None
    signature_columns: Callable[[], list[str] | None] | None = None
    remove_unused_columns: Callable[..., Any] | None = None
    batch_samples: Callable[[Any, int], tuple[list[Any], Any]] | None = None
    window_size: Callable[[int], None] | None = None

    @classmethod
    def of(cls, trainer: Trainer) -> TrainerHooks:
        """The hooks of an HF-style Trainer: its class's overrides (``trainer.overridden``, found once when it was
        built), its given optimizer / scheduler (looked up when Lightning asks for them), its evaluation module."""
        def overridden(name: str) -> Any:
            return weak_method(getattr(trainer, name)) if name in trainer.overridden else None

        compute_loss_takes_num_items = takes_keyword(trainer.compute_loss, "num_items_in_batch")
        trainer = weakref.proxy(trainer)  # the closures below must not keep the Trainer alive (`weak_method`)

        def given_optimizer(model: Any) -> torch.optim.Optimizer | None:
            own = {"create_optimizer", "get_decay_parameter_names", "get_optimizer_cls_and_kwargs"}
            if not own & trainer.overridden and trainer.optimizer is None:
                return None  # transformers' default, built by the module
            trainer.model = model
            return trainer.create_optimizer()

        def given_scheduler(num_training_steps: int, optimizer: torch.optim.Optimizer) -> Any:
            if "create_scheduler" not in trainer.overridden and trainer.lr_scheduler is None:
                return None
            return trainer.create_scheduler(num_training_steps, optimizer)

        def optimizers_built(optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
            if trainer.lr_scheduler is None and scheduler is not None:
                trainer._created_lr_scheduler = True  # its own: rebuilt by the next train()
            trainer.optimizer, trainer.lr_scheduler = optimizer, scheduler

        return cls(
            compute_loss=overridden("compute_loss"),
            compute_loss_takes_num_items=compute_loss_takes_num_items,
            prediction_step=overridden("prediction_step"), training_step=overridden("training_step"),
            create_optimizer=given_optimizer, create_scheduler=given_scheduler,
            get_train_dataloader=overridden("get_train_dataloader"),
            get_eval_dataloader=overridden("get_eval_dataloader"),
            get_test_dataloader=overridden("get_test_dataloader"),
            columns_module=weak_method(trainer._evaluation_module),
            optimizers_built=optimizers_built,
            model_preparation_time=lambda: getattr(trainer, "model_preparation_time", None),
            prepare_inputs=weak_method(trainer._prepare_inputs)
            if {"_prepare_inputs", "_prepare_input"} & trainer.overridden else None,
            loss_context=weak_method(trainer.compute_loss_context_manager)
            if {"compute_loss_context_manager", "autocast_smart_context_manager"} & trainer.overridden else None,
            floating_point_ops=overridden("floating_point_ops"), train_sampler=overridden("_get_train_sampler"),
            eval_sampler=overridden("_get_eval_sampler"),
            signature_columns=weak_method(trainer._columns_set),
            remove_unused_columns=overridden("_remove_unused_columns"),
            batch_samples=(lambda iterator, num_batches: trainer.get_batch_samples(  # drawn in training: module built
                iterator, num_batches, trainer.module.device)) if "get_batch_samples" in trainer.overridden else None,
            window_size=lambda size: setattr(trainer, "current_gradient_accumulation_steps", size),
        )


class FacadeModule(HFModule):
    """HFModule whose hooks call the HF-style Trainer's overrides (``compute_loss``, ``prediction_step``, ...)."""

    base_compute_loss = HFModule.compute_loss
    base_prediction_step = EvaluationMixin.prediction_step
    #: the HF-style Trainer logs its evaluations itself (``Trainer.log``: log_history, on_log, HF's tags)
    logs_eval_to_lightning = False
    loss_only_in_predict = True  # transformers.Trainer.predict obeys prediction_loss_only
    missing_loss_hint = ""  # transformers' message as it is

    def __init__(self, hooks: TrainerHooks, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hooks = hooks
        self.deferred_loss: Any = Ellipsis  # None while an overridden training_step runs, then its loss
        self._context: tuple[Any, int] | None = None

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        hooks = self.hooks
        with hooks.loss_context() if hooks.loss_context is not None else contextlib.nullcontext():
            if hooks.compute_loss is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if hooks.compute_loss_takes_num_items:
                return hooks.compute_loss(model, inputs, return_outputs=return_outputs,
                                          num_items_in_batch=num_items_in_batch)
            return hooks.compute_loss(model, inputs, return_outputs=return_outputs)  # the pre-5.x signature

    def loss_is_the_models(self) -> bool:
        """The model's own loss: no overridden ``compute_loss`` / ``training_step`` / loss context either."""
        hooks = self.hooks
        return hooks.compute_loss is None and hooks.training_step is None and hooks.loss_context is None \
            and self.label_smoother is None and self.loss is None and self.compute_loss_func is None

    def _prepared(self, batch: Any) -> Any:
        """The batch (on the device) through an overridden ``_prepare_inputs``, its window tag kept."""
        if self.hooks.prepare_inputs is None:
            return batch
        inputs, window = split_window(batch)
        inputs = self.hooks.prepare_inputs(inputs)
        if window is None:
            return inputs
        return {**inputs, WINDOW_KEY: window} if isinstance(inputs, dict) else WindowedBatch(inputs, window)

    def _eval_step(self, batch: Any, dataloader_idx: int = 0) -> tuple[Any, Any, Any]:
        return super()._eval_step(self._prepared(batch), dataloader_idx)

    def floating_point_ops(self, inputs: dict[str, Any]) -> float:
        if self.hooks.floating_point_ops is not None:
            return self.hooks.floating_point_ops(inputs)
        return super().floating_point_ops(inputs)

    def configure_callbacks(self) -> list[Any]:
        """None: the HF-style Trainer gives the Lightning trainer that trains its `HFFlow`, and its evaluations and
        predictions log and call back themselves (an HFFlow there would only build its arguments at each call)."""
        return []

    def _preparation_metrics(self) -> dict[str, float]:
        seconds = self.hooks.model_preparation_time() if self.hooks.model_preparation_time else None
        return {} if seconds is None else {"model_preparation_time": seconds}

    def prediction_step(self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool,
                        ignore_keys: list[str] | None = None) -> Any:
        if self.hooks.prediction_step is not None:
            return self.hooks.prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.hooks.window_size is not None:
            window = window_of(batch)
            self.hooks.window_size(window.size if window is not None else self.trainer.accumulate_grad_batches)
        batch = self._prepared(batch)
        if self.hooks.training_step is None:
            return super().training_step(batch, batch_idx)
        inputs, window = split_window(batch)
        self.step_record.flos += self.floating_point_ops(inputs)
        self._context, self.deferred_loss = (window, batch_idx), None
        num_items = None
        counted = self.model_accepts_loss_kwargs or self.compute_loss_func is not None
        if window is not None and window.num_items is not None and (counted or window.given):
            # as transformers: the count of its get_batch_samples, or of an override of it
            num_items = self._window_num_items(window, batch_idx)
        try:
            with forward_only_autocast(self.autocast_models(training=True), self.device.type):
                reported = self.hooks.training_step(self.model, inputs, num_items)
        finally:
            loss, self.deferred_loss = self.deferred_loss, Ellipsis
        if loss is None:
            raise RuntimeError("An overridden training_step must call self.accelerator.backward(loss) or "
                               "return super().training_step(model, inputs, num_items_in_batch).")
        self.record_step_loss(reported.detach() if torch.is_tensor(reported) else loss.detach(), window)
        return loss * self.trainer.accumulate_grad_batches

    def defer_backward(self, loss: torch.Tensor) -> None:
        """``trainer.accelerator.backward(loss)`` inside an overridden ``training_step``: Lightning's automatic
        optimisation runs the backward pass on what ``training_step`` returns."""
        if self.deferred_loss is Ellipsis:
            raise RuntimeError("accelerator.backward runs inside training_step, while hf_lightning trains.")
        self.deferred_loss = loss if self.deferred_loss is None else self.deferred_loss + loss

    def facade_training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any) -> torch.Tensor:
        """HF's default ``training_step``: the normalised loss, backward (deferred), detached loss returned."""
        window, batch_idx = self._context if self._context is not None else (None, 0)
        loss = self._normalise(inputs, window, batch_idx)
        self.defer_backward(loss)
        return loss.detach()

    def configure_optimizers(self) -> dict[str, Any]:
        config = super().configure_optimizers()
        if self.hooks.optimizers_built is not None:
            scheduler = self.metric_scheduler or config.get("lr_scheduler", {}).get("scheduler")
            self.hooks.optimizers_built(config["optimizer"], scheduler)
        return config

    def create_optimizer(self) -> torch.optim.Optimizer:
        hook = self.hooks.create_optimizer
        optimizer = hook(self.model) if hook is not None else None
        return optimizer if optimizer is not None else super().create_optimizer()

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer) -> Any:
        hook = self.hooks.create_scheduler
        scheduler = hook(num_training_steps, optimizer) if hook is not None else None
        return scheduler if scheduler is not None else super().create_scheduler(num_training_steps, optimizer)


class FacadeDataModule(HFDataModule):
    """HFDataModule whose loaders come from the HF-style Trainer's ``get_*_dataloader`` overrides when there are any."""

    def __init__(self, hooks: TrainerHooks, eval_name: str | None = None, kept_eval_loaders: dict | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hooks = hooks
        if kept_eval_loaders is not None:
            self.__dict__["_kept_eval_loaders"] = kept_eval_loaders
        #: the name of the trainer's eval set this data module evaluates (``evaluate()`` of a dict, ``evaluate(name)``):
        #: an overridden ``get_eval_dataloader`` receives it, as in transformers
        self.eval_name = eval_name

    def _world(self) -> tuple[int, int]:
        """The processes and this one's rank: the Lightning trainer's, or before one exists (a loader asked for by hand
        under torchrun) the launcher's, so ``len(trainer.get_train_dataloader())`` counts this process's batches, as
        transformers' prepared loader does."""
        if self.trainer is not None:
            return super()._world()
        from hf_lightning.strategies import launch_layout, launched_rank

        devices, nodes = launch_layout()
        return devices * nodes, launched_rank()

    @property
    def eval_loaders_per_evaluation(self) -> bool:
        """Whether each evaluation during training asks for its loaders again: an overridden ``get_eval_dataloader``
        is called at every evaluation, as transformers calls it."""
        return self.hooks.get_eval_dataloader is not None

    def attached_module(self) -> Any:
        """The trainer's module, also before ``train()`` (loaders asked for up front drop the same columns)."""
        module = super().attached_module()
        if module is None and self.hooks.columns_module is not None:
            module = self.hooks.columns_module()
        return module

    def signature_columns(self) -> tuple[list[str], str] | None:
        """The columns an overridden ``_set_signature_columns_if_needed`` keeps (as transformers' ``
        _remove_unused_columns`` reads ``_signature_columns``), else the model's."""
        found = super().signature_columns()
        if found is None or self.hooks.signature_columns is None:
            return found
        columns = self.hooks.signature_columns()
        return found if columns is None else (list(columns), found[1])

    def _note_ignored_columns(self, role: str, message: str) -> None:
        """An evaluation set's note is logged at each evaluation (`announce_columns`), as transformers logs it each
        time it builds an evaluation loader; the other splits' when prepared."""
        if role.startswith("validation"):
            self.__dict__.setdefault("_column_notes", {})[role] = message
        else:
            super()._note_ignored_columns(role, message)

    def announce_columns(self, role: str) -> None:
        """Logs the note of the columns evaluation set ``role`` lost (nothing where it lost none)."""
        note = self.__dict__.get("_column_notes", {}).get(role)
        if note is not None:
            super()._note_ignored_columns(role, note)

    def _remove_unused(self, ds: Any, role: str = "train") -> Any:
        if self.hooks.remove_unused_columns is not None and isinstance(ds, datasets.Dataset):
            return self.hooks.remove_unused_columns(ds, description=description_of(role))
        return super()._remove_unused(ds, role)

    def _validate_labels(self, ds: Any, split: str) -> None:
        """None: transformers.Trainer checks no label values (a model's own loss reports what it cannot take)."""

    def train_sampler(self, ds: Any) -> Any:
        """An overridden ``_get_train_sampler``'s order (called with the data set after its columns were removed,
        as transformers calls it), cut into batches as every order is; else the arguments'."""
        if self.hooks.train_sampler is not None:
            sampler = self.hooks.train_sampler(ds)
            return sampler if sampler is not None else SequentialSampler(ds)
        return super().train_sampler(ds)

    def eval_sampler(self, ds: Any, count: int, world: int, rank: int) -> Any:
        if self.hooks.eval_sampler is not None:
            if world > 1:
                raise ValueError("An overridden _get_eval_sampler with several processes: hf_lightning shards the "
                                 "evaluation data itself; override get_eval_dataloader instead, or run one process.")
            return self.hooks.eval_sampler(ds)
        return super().eval_sampler(ds, count, world, rank)

    def base_train_dataloader(self) -> Any:
        return self.train_loader()

    def base_eval_dataloader(self, role: str) -> Any:
        return self._eval_loader(role)

    def wrap_train_loader(self, loader: Any) -> Any:
        wrapped = super().wrap_train_loader(loader)
        wrapped.draw = self.hooks.batch_samples
        return wrapped

    def train_dataloader(self) -> Any:
        if self.hooks.get_train_dataloader is not None:
            return self.wrap_train_loader(self.hooks.get_train_dataloader())
        return super().train_dataloader()

    def val_dataloader(self) -> Any:
        get = self.hooks.get_eval_dataloader
        if get is not None:  # as transformers: once per eval set, by name
            if self.validation_sets is not None:
                return {name: get(name) for name in self.validation_sets}
            return get(self.eval_name if self.eval_name is not None else self.raw_splits().get("validation"))
        return super().val_dataloader()

    def predict_dataloader(self) -> Any:
        if self.hooks.get_test_dataloader is not None:
            return self.hooks.get_test_dataloader(self.raw_splits().get("predict"))
        return super().predict_dataloader()


#: report_to names written by Lightning loggers (hf_lightning's own: transformers has no csv reporter)
REPORTERS = {
    "csv": lambda args: CSVLogger(save_dir=args.output_dir, name="logs"),
}


def _report_names(args: Any) -> list[str]:
    """``report_to`` as a list of names: ``none`` -> none, ``all`` -> every installed integration (as transformers'
    TrainingArguments expands it; HFFlow's own settings arrive unexpanded)."""
    report_to = args.report_to or []
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    if names == ["none"]:
        return []
    if "all" in names:
        from transformers.integrations import get_available_reporting_integrations

        names = [n for n in names if n != "all"] + [
            n for n in get_available_reporting_integrations() if n not in names]
    return names


def build_loggers(args: Any) -> list[Logger] | bool:
    """Lightning loggers for the ``report_to`` names in `REPORTERS` (``none`` -> no logger)."""
    names = [n for n in _report_names(args) if n in REPORTERS]
    return [REPORTERS[n](args) for n in names] if names else False


def reporting_callbacks(args: Any, lightning_loggers: Collection[str] = tuple(REPORTERS)) -> list[Any]:
    """transformers' own reporting callbacks for the ``report_to`` names (``tensorboard``, ``mlflow``, ``wandb``,
    ``trackio``, ``comet_ml``, ``neptune``...) but ``lightning_loggers``: they run unchanged in HFFlow, so each
    tracker gets exactly what transformers sends it (its metric names, the arguments as parameters, the run name, its
    folders), and ``trainer.callback_handler`` lists them as transformers' does. hf_lightning's own ``logging_dir``
    field, where set, is TensorBoard's folder. A tracker that is not installed fails when the Trainer is built, with
    transformers' ``pip install`` line."""
    from transformers.integrations import TensorBoardCallback, get_reporting_integration_callbacks

    callbacks = get_reporting_integration_callbacks([n for n in _report_names(args) if n not in lightning_loggers])
    folder = getattr(args, "logging_dir", None)
    if folder is None or TensorBoardCallback not in callbacks:
        return callbacks
    tensorboard = TensorBoardCallback()
    tensorboard.logging_dir = os.path.expanduser(folder)
    return [tensorboard if callback is TensorBoardCallback else callback for callback in callbacks]
