"""HFModule: a LightningModule with transformers.Trainer's hooks and numbers.

The hot path, top to bottom: Lightning calls `training_step` for each micro-batch -> `compute_loss` (HF signature) ->
the loss is normalised as HF does under gradient accumulation (`_normalise`) -> Lightning's backward -> at the end of
the window `configure_gradient_clipping` records the pre-clip norm and clips -> optimizer step -> the scheduler steps.
Mixins hold the rest: the optimizer, its schedule and the step hooks (`OptimizationMixin`,
``modules/optimization.py``), evaluation (`EvaluationMixin`, ``modules/evaluation.py``) and ``save_pretrained``
(`ExportMixin`, ``modules/export.py``).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any, Literal

import lightning as L
import torch
from torch import nn
from transformers import AutoTokenizer, PreTrainedTokenizerBase, ProcessorMixin
from transformers.trainer_pt_utils import LabelSmoother
from transformers.trainer_utils import align_special_tokens, unwrap_peft_model
from transformers.utils import can_return_loss, find_labels

from hf_lightning.data.builtin import load_tokenizer, resolve_model_path
from hf_lightning.data.loader import WindowInfo, split_window
from hf_lightning.groups import MODEL, group_field
from hf_lightning.lightning_internals import ignore_lightning_version_warnings
from hf_lightning.modules.autocast import forward_only_autocast
from hf_lightning.modules.evaluation import EvaluationMixin
from hf_lightning.modules.export import ExportMixin
from hf_lightning.modules.loading import (
    TOKENIZER_FILES,
    apply_liger,
    compile_blocks,
    has_compiled_regions,
    load_model,
    tokenizer_files,
    tokenizer_from_files,
    uncompiled,
)
from hf_lightning.modules.optimization import OptimizationMixin
from hf_lightning.modules.probe import loss_scales_with_num_items
from hf_lightning.modules.records import StepRecord
from hf_lightning.modules.tasks import TASKS, is_causal_lm, loss_shifts_labels
from hf_lightning.optim import OptimizerFactory
from hf_lightning.settings import CompileSettings, EvaluationSettings, OptimizerSettings

#: The fields of `OptimizerSettings` that configure the optimizer itself (the rest configure its schedule and clipping).
_OPTIMIZER_FIELDS = ("optim", "learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "optim_args",
                     "optim_target_modules")


class HFModule(EvaluationMixin, OptimizationMixin, ExportMixin, L.LightningModule):
    """Fine-tunes a transformers model (or any ``nn.Module`` returning a loss) with HF Trainer semantics.

    Args:
        model: A packaged model name (``minilm``), a local folder or hub id, a config dict (``{model_type: bert, ...}``,
            random init), or (from Python) a model instance. For ``seq2seq-lm`` also ``{encoder: ..., decoder: ...}``:
            an encoder-decoder warm-started from two models (`hf_lightning.modules.loading.build_encoder_decoder`).
        task: Which ``AutoModelFor...`` class loads it: ``sequence-classification``, ``token-classification``,
            ``causal-lm``, ``masked-lm``, ``seq2seq-lm``, ``question-answering``.
        num_labels: Number of labels of a classification head (linked from the data by the CLI).
        id2label: Label names by id, saved into the exported config.
        problem_type: The model config's ``problem_type`` (linked from the data by the CLI):
            ``multi_label_classification`` (several labels per example: BCE with logits, multi-label metrics),
            ``single_label_classification``, ``regression``; None lets transformers infer it.
        use_liger_kernel: Patch the model with Liger's fused Triton kernels (RMSNorm, RoPE, SwiGLU, fused linear
            cross-entropy...) before training, with transformers' own ``apply_liger_kernel``; CUDA only (the
            ``liger`` extra: ``pip install 'hf_lightning[liger]'``).
        liger_kernel_config: Keyword arguments of Liger's patch (e.g. ``{rope: false}``).
        tokenizer: Tokenizer path or name; defaults to the model's folder (None for a config dict or instance).
        model_kwargs: Extra ``from_pretrained`` / ``from_config`` keyword arguments (e.g. ``attn_implementation``).
        from_config: Build a randomly initialised model from the folder's config instead of loading its weights.
        optimization: The optimizer and its schedule (`OptimizerSettings`: ``learning_rate``, ``weight_decay``,
            ``adam_beta1`` / ``adam_beta2`` / ``adam_epsilon``, ``optim``, ``optim_args``, ``optim_target_modules``,
            ``lr_scheduler_type``, ``lr_scheduler_kwargs``, ``warmup_steps``, ``max_grad_norm``); a dict works too.
        optimizer: Any optimizer class (``class_path`` + ``init_args`` in yaml) replacing ``optimization.optim``; it
            receives HF's parameter groups.
        label_smoothing_factor: Label smoothing epsilon (``transformers.trainer_pt_utils.LabelSmoother``).
        loss: A loss module ``loss(logits, labels, num_items_in_batch=None)`` replacing the model's own loss
            (e.g. ``hf_lightning.losses.FocalLoss``).
        loss_is_scaled_for_ga: Whether `compute_loss` already normalises over the whole accumulation window when given
            ``num_items_in_batch``. None (default) finds out once, on the first batch, by evaluating the loss with two
            values of ``num_items_in_batch``; so models whose loss ignores it are divided by the window size.
        average_tokens_across_devices: Sum ``num_items_in_batch`` over all ranks (HF default True).
        metrics: torchmetrics names computed on the device during evaluation (``accuracy``, ``f1``...).
        compute_metrics: An HF-style ``compute_metrics(EvalPrediction) -> dict`` (or its import path).
        preprocess_logits_for_metrics: ``fn(logits, labels) -> logits`` run per batch before accumulation.
        label_names: The input keys holding labels (default: the label arguments of the model's forward, as
            transformers' ``find_labels``: ``start_positions`` / ``end_positions`` for question answering; else
            ``labels``). ``[]``: no labels (evaluation then has no loss).
        evaluation: How evaluation collects and scores outputs (`EvaluationSettings`: ``prediction_loss_only``,
            ``batch_eval_metrics``, ``include_for_metrics``, ``eval_use_gather_object``, ``eval_do_concat_batches``,
            ``eval_accumulation_steps``, ``metric_threshold``, ``nan_inf_filter``); a dict works too.
        gradient_checkpointing: Activation checkpointing, switched on when a fit begins (the model's
            ``activation_checkpointing_enable``, as transformers' ``train()``).
        gradient_checkpointing_kwargs: Its keyword arguments: ``every_n_layers`` and ``offload`` as transformers
            reads them, the rest for ``torch.utils.checkpoint``.
        compilation: ``torch.compile`` before training (`CompileSettings`: ``torch_compile``,
            ``torch_compile_backend``, ``torch_compile_mode``, ``torch_compile_scope``); a dict works too.
        neftune_noise_alpha: NEFTune noise on the input embeddings during training (transformers' hook).
        **flat: The flat keywords of earlier releases (``learning_rate=...``, ``torch_compile=...``): moved into
            their group with a ``FutureWarning`` naming the new key.
    """

    def __init__(
        self,
        model: str | dict[str, Any] | nn.Module = "minilm",
        task: str = "sequence-classification",
        num_labels: int | None = None,
        id2label: dict[int, str] | None = None,
        problem_type: str | None = None,
        use_liger_kernel: bool = False,
        liger_kernel_config: dict[str, Any] | None = None,
        tokenizer: str | Any | None = None,
        model_kwargs: dict[str, Any] | None = None,
        from_config: bool = False,
        optimization: OptimizerSettings = OptimizerSettings(),  # noqa: B008 (frozen: one shared default is safe)
        optimizer: OptimizerFactory | None = None,
        label_smoothing_factor: float = 0.0,
        loss: nn.Module | None = None,
        loss_is_scaled_for_ga: bool | None = None,
        average_tokens_across_devices: bool = True,
        metrics: list[str] | None = None,
        compute_metrics: Callable[..., dict[str, float]] | str | None = None,
        preprocess_logits_for_metrics: Callable[..., Any] | str | None = None,
        evaluation: EvaluationSettings = EvaluationSettings(),  # noqa: B008
        label_names: list[str] | None = None,
        gradient_checkpointing: bool = False,
        gradient_checkpointing_kwargs: dict[str, Any] | None = None,
        compilation: CompileSettings = CompileSettings(),  # noqa: B008
        neftune_noise_alpha: float | None = None,
        **flat: Any,
    ) -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"model.task='{task}' is unknown. Choose one of {sorted(TASKS)}.")
        if not 0 <= label_smoothing_factor <= 1:  # as transformers, whose LabelSmoother takes 1.0 too
            raise ValueError(f"label_smoothing_factor={label_smoothing_factor} must be in [0, 1] (the weight of the "
                             "uniform distribution in the targets).")
        groups = MODEL.regroup({"optimization": optimization, "evaluation": evaluation, "compilation": compilation},
                               flat, type(self).__name__)
        self.optimization, self.evaluation, self.compilation = (
            groups["optimization"], groups["evaluation"], groups["compilation"])
        # Objects are not hyper-parameters (a subclass's own objects, such as the HF-style Trainer's hooks, are skipped
        # too); nor are the flat keywords of earlier releases: the groups hold them.
        objects = ["optimizer", "loss", "compute_metrics", "preprocess_logits_for_metrics", "hooks", "teacher"]
        replaced: dict[str, Any] = {}
        given_object = tokenizer is not None and not isinstance(tokenizer, str)
        if isinstance(model, nn.Module):
            objects += ["model", "tokenizer"]
        elif given_object:
            replaced["tokenizer"] = None  # the object travels in Lightning checkpoints as its files (see below)
        MODEL.save_hyperparameters(self, groups, objects, replaced)
        #: Whether Lightning checkpoints carry the tokenizer's files: a tokenizer object given with a model spec is not
        #: a hyper-parameter, so load_from_checkpoint restores it from them (`on_load_checkpoint`).
        self._tokenizer_in_checkpoint = given_object and not isinstance(model, nn.Module)
        self._tokenizer_given = given_object
        self.task = task
        self.model = load_model(model, task, num_labels, id2label, dict(model_kwargs or {}), from_config,
                                problem_type)
        self.model.train()  # from_pretrained returns eval mode; HF's training_step trains with dropout on
        if use_liger_kernel:
            apply_liger(self.model, liger_kernel_config)
        self.tokenizer = self._load_tokenizer(model, tokenizer)
        #: a tokenizer only written beside the weights, where ``tokenizer`` is None (the HF-style Trainer's collator's)
        self.saved_tokenizer: Any = None
        self.optimizer_factory = optimizer
        self.optimizer_cls_and_kwargs: tuple[type, dict[str, Any]] | None = None
        self.metric_scheduler: Any = None  # a schedule stepped on the eval metric (reduce_lr_on_plateau, greedy)
        config = getattr(self.model, "config", None)  # a plain nn.Module has none: smoothing applies as usual
        if label_smoothing_factor and getattr(config, "problem_type", None) == "multi_label_classification":
            warnings.warn("Label smoothing is not compatible with multi-label classification. Disabling label "
                          "smoothing for this training run.", UserWarning, stacklevel=2)  # transformers' warning
            label_smoothing_factor = 0.0
        self.label_smoother = LabelSmoother(epsilon=label_smoothing_factor) if label_smoothing_factor else None
        self.loss = loss
        self.compute_loss_func: Callable[..., torch.Tensor] | None = None
        self.loss_is_scaled_for_ga = loss_is_scaled_for_ga
        self.average_tokens_across_devices = average_tokens_across_devices
        inspected = type(unwrap_peft_model(self.model))  # as transformers: what the model's forward takes
        if label_names is None:  # the label arguments of the model's forward (transformers' find_labels), else labels
            label_names = find_labels(inspected) or ["labels"]
        self.label_names = list(label_names)  # []: no labels, as transformers
        #: the model's forward defaults ``return_loss`` to True (CLIP-like): with no label names, evaluation takes its loss
        self.can_return_loss = can_return_loss(inspected)
        self.loss_shifts_labels = loss_shifts_labels(self.model, task)
        multi_label = getattr(getattr(self.model, "config", None), "problem_type", None) == "multi_label_classification"
        ev = self.evaluation
        self._init_evaluation(metrics, num_labels, compute_metrics, preprocess_logits_for_metrics,
                              ev.batch_eval_metrics, list(ev.include_for_metrics or []), ev.prediction_loss_only,
                              multi_label, ev.metric_threshold, ev.eval_use_gather_object)
        #: activation checkpointing, switched on when a fit begins (`setup`), as transformers' ``train()`` does
        self.gradient_checkpointing = gradient_checkpointing
        self.gradient_checkpointing_kwargs = gradient_checkpointing_kwargs
        self.neftune_noise_alpha = neftune_noise_alpha
        self._neftune_handle: Any = None
        #: Per-step values the logging callbacks read (tensors stay on the device: no per-step sync).
        self.step_record = StepRecord()
        self._window_loss: torch.Tensor | None = None
        self._window_losses: list[torch.Tensor] = []
        self._window_items: tuple[int, torch.Tensor] | None = None
        self._window_done = False
        self._stepped: Any = None  # the optimizer that stepped, until the schedule has stepped too (then: no grads)
        self._flos_per_token: float | None = None

    # The settings as the mixins and the HF-style Trainer read them; the groups are their only copy.
    #: added to transformers' error for a model that returns no loss: where this door takes the labels from
    missing_loss_hint = " Give labels in the data (data.label_column) or override compute_loss."
    lr_scheduler_type = group_field("optimization", "lr_scheduler_type")
    lr_scheduler_kwargs = group_field("optimization", "lr_scheduler_kwargs")
    warmup_steps = group_field("optimization", "warmup_steps")
    max_grad_norm = group_field("optimization", "max_grad_norm")
    compile_scope = group_field("compilation", "torch_compile_scope")
    eval_do_concat_batches = group_field("evaluation", "eval_do_concat_batches")
    eval_accumulation_steps = group_field("evaluation", "eval_accumulation_steps")
    nan_inf_filter = group_field("evaluation", "nan_inf_filter")

    @property
    def optim_config(self) -> dict[str, Any]:
        """The optimizer fields of ``optimization`` (``optim``, ``learning_rate``, Adam's...), as `build_optimizer` and
        transformers' ``get_optimizer_cls_and_kwargs`` take them."""
        return {k: v for k, v in self.optimization.as_dict().items() if k in _OPTIMIZER_FIELDS}

    @property
    def compile_kwargs(self) -> dict[str, Any] | None:
        """``torch.compile``'s keyword arguments, or None when compilation is off."""
        return self.compilation.kwargs

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._tokenizer_in_checkpoint and self.tokenizer is not None:
            checkpoint[TOKENIZER_FILES] = tokenizer_files(self.tokenizer)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The tokenizer object the checkpoint carries, unless one was given (``load_from_checkpoint(...,
        tokenizer=...)``, or the module of a resumed fit)."""
        files = checkpoint.get(TOKENIZER_FILES)
        if files and not self._tokenizer_given:
            self.tokenizer = tokenizer_from_files(files)
            self._tokenizer_in_checkpoint = True

    @property
    def tokenizer_to_save(self) -> Any:
        """The tokenizer that checkpoints and exports write: ``tokenizer``, else ``saved_tokenizer``."""
        return self.tokenizer if self.tokenizer is not None else self.saved_tokenizer

    @staticmethod
    def _load_tokenizer(model: Any, tokenizer: Any) -> Any:
        if tokenizer is not None and not isinstance(tokenizer, str):
            return tokenizer
        source = tokenizer or (model if isinstance(model, str) else None)
        if source is None:
            return None
        if tokenizer is not None:
            return load_tokenizer(tokenizer, "HFModule's `tokenizer` (--model.tokenizer in the CLI)")
        try:
            return AutoTokenizer.from_pretrained(resolve_model_path(source))
        except (OSError, ValueError):
            return None  # a model folder without tokenizer files

    @property
    def model_accepts_loss_kwargs(self) -> bool:
        """HF's test: the model declares ``accepts_loss_kwargs`` or its forward takes ``**kwargs``.

        Read on every step: the signature test is done once per model object (``inspect.signature`` costs about
        0.1 ms, a few percent of a small model's step).
        """
        given = getattr(self, "accepts_loss_kwargs_given", None)  # set on the HF-style Trainer, as in transformers
        if given is not None:
            return given
        unwrapped = uncompiled(self.model)  # torch.compile's wrapper forwards **kwargs
        if hasattr(unwrapped, "accepts_loss_kwargs"):
            return bool(unwrapped.accepts_loss_kwargs)
        cached = self.__dict__.get("_accepts_loss_kwargs")
        if cached is None or cached[0] is not unwrapped:
            params = inspect.signature(unwrapped.forward).parameters.values()
            cached = (unwrapped, any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params))
            self.__dict__["_accepts_loss_kwargs"] = cached
        return cached[1]

    # ----------------------------------------------------------------------------------------------- HF hooks
    def compute_loss(
        self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """HF's ``Trainer.compute_loss``: the model's loss, or label smoothing / ``loss`` / ``compute_loss_func``."""
        custom = self.loss if self.loss is not None else self.compute_loss_func
        labels = None
        if (self.label_smoother is not None or custom is not None) and "labels" in inputs:
            inputs = dict(inputs)
            labels = inputs.pop("labels")
        if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            inputs = {**inputs, "num_items_in_batch": num_items_in_batch}
        outputs = model(**inputs)
        if custom is not None:
            if self.loss is not None:
                logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
                loss = self.loss(logits, labels, num_items_in_batch=num_items_in_batch)
            else:
                loss = custom(outputs, labels, num_items_in_batch=num_items_in_batch)
        elif labels is not None:
            loss = self.label_smoother(outputs, labels, shift_labels=is_causal_lm(self.model),
                                       num_items_in_batch=num_items_in_batch)
        else:
            if isinstance(outputs, dict) and "loss" not in outputs:
                raise ValueError(  # transformers' message, and where to give the labels here
                    "The model did not return a loss from the inputs, only the following keys: "
                    f"{','.join(outputs.keys())}. For reference, the inputs it received are "
                    f"{','.join(inputs.keys())}.{self.missing_loss_hint}")
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs[0]
            if loss.dtype in (torch.float16, torch.bfloat16):  # as transformers' float32 outputs of the forward
                loss = loss.float()
        return (loss, outputs) if return_outputs else loss

    # ----------------------------------------------------------------------------------------------- training
    def _probe_scaled_for_ga(self, inputs: dict[str, Any]) -> bool | None:
        """Whether `compute_loss` divides by ``num_items_in_batch`` (None: not clear-cut); its two forwards leave no
        trace (`hf_lightning.modules.probe`)."""
        return loss_scales_with_num_items(self, inputs)

    def _window_num_items(self, window: WindowInfo, batch_idx: int) -> Any:
        """The window's label count, summed over ranks once per window (HF ``average_tokens_across_devices``); an
        overridden ``get_batch_samples``' value as it is (on the device)."""
        if window.given:
            return window.num_items.to(self.device) if torch.is_tensor(window.num_items) else window.num_items
        start = batch_idx - window.index
        if self._window_items is None or self._window_items[0] != start:
            count = torch.tensor(float(window.num_items), device=self.device)
            if self.average_tokens_across_devices and self.trainer.world_size > 1:
                count = self.trainer.strategy.reduce(count, reduce_op="sum")
            self._window_items = (start, count)
        return self._window_items[1]

    def _normalise(self, inputs: dict[str, Any], window: WindowInfo | None, batch_idx: int) -> torch.Tensor:
        """HF's loss for one micro-batch: over the window's label count, or the micro-batch mean / window size."""
        countable = window is not None and window.num_items is not None
        # an overridden get_batch_samples' count goes to compute_loss whatever the model takes, as in transformers
        given = countable and window.given
        if countable and window.size == 1 and self.trainer.world_size == 1 and self.loss_is_scaled_for_ga is None:
            # One micro-batch per step on one process: the loss over the count and the batch mean agree, whichever
            # the loss computes, so no probe; the count is passed where transformers passes it.
            if not (self.model_accepts_loss_kwargs or self.compute_loss_func is not None or given):
                return self.compute_loss(self.model, inputs)
            return self.compute_loss(self.model, inputs, num_items_in_batch=self._window_num_items(window, batch_idx))
        if countable and self.loss_is_scaled_for_ga is None:
            verdict = self._probe_scaled_for_ga(inputs)
            # not clear-cut: transformers' rule (the count goes to a model taking **kwargs or to compute_loss_func,
            # whose loss is then not divided by the accumulation steps)
            self.loss_is_scaled_for_ga = verdict if verdict is not None else \
                bool(self.model_accepts_loss_kwargs or self.compute_loss_func is not None)
        if countable and self.loss_is_scaled_for_ga:
            loss = self.compute_loss(self.model, inputs, num_items_in_batch=self._window_num_items(window, batch_idx))
            if self.average_tokens_across_devices:
                loss = loss * self.trainer.world_size  # DDP averages gradients over ranks; the count is global
            return loss
        if given:
            loss = self.compute_loss(self.model, inputs, num_items_in_batch=self._window_num_items(window, batch_idx))
        else:
            loss = self.compute_loss(self.model, inputs)
        size = window.size if window is not None else self.trainer.accumulate_grad_batches
        return loss / size

    def autocast_models(self, training: bool = False) -> list[nn.Module]:
        """The models whose forward alone runs under mixed precision's autocast (`forward_only_autocast`): the model;
        none for a training step whose loss is the model's own (nothing runs outside its forward but the loss's cast
        to float32: Lightning's autocast region stays, and the logits are not copied to float32)."""
        return [] if training and self.loss_is_the_models() else [self.model]

    def loss_is_the_models(self) -> bool:
        """Whether ``compute_loss`` takes the model's own loss (no label smoother, ``loss``, ``compute_loss_func`` or
        override)."""
        return self.label_smoother is None and self.loss is None and self.compute_loss_func is None \
            and type(self).compute_loss is HFModule.compute_loss

    def floating_point_ops(self, inputs: dict[str, Any]) -> float:
        """HF's ``Trainer.floating_point_ops``: 6 x main-input elements x non-embedding parameters."""
        main = inputs.get(getattr(self.model, "main_input_name", "input_ids"))
        if not torch.is_tensor(main) or not hasattr(self.model, "num_parameters"):
            return 0.0
        if self._flos_per_token is None:  # counting parameters once, not on every step
            self._flos_per_token = 6.0 * self.model.num_parameters(exclude_embeddings=True)
        return self._flos_per_token * main.numel()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        inputs, window = split_window(batch)
        self.step_record.flos += self.floating_point_ops(inputs)
        with forward_only_autocast(self.autocast_models(training=True), self.device.type):
            loss = self._normalise(inputs, window, batch_idx)
        self.record_step_loss(loss.detach(), window)
        # Lightning divides what training_step returns by accumulate_grad_batches; the loss is already normalised.
        return loss * self.trainer.accumulate_grad_batches

    def record_step_loss(self, loss: torch.Tensor, window: WindowInfo | None) -> None:
        """Sums a window's normalised micro-batch losses into ``step_record.loss`` (HF's per-step ``tr_loss``)."""
        first = window is None or window.index == 0
        self._window_loss = loss if first or self._window_loss is None else self._window_loss + loss
        self._window_losses = [loss] if first else [*self._window_losses, loss]
        if window is None or window.index == window.size - 1:
            self.step_record.loss = self._window_loss
            self.step_record.micro_losses = tuple(self._window_losses)
            self._window_done = True

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._window_done:
            self._window_done = False
            bar = self.trainer.progress_bar_callback
            if bar is None or not getattr(bar, "is_enabled", True):
                return  # without a bar, logging would only cost a host sync per step
            # Progress-bar only: HFFlow writes the HF-style records (train/loss, ...) at logging_steps.
            record = self.step_record
            self.log("loss", record.loss, prog_bar=True, logger=False)
            if record.learning_rate is not None:
                self.log("lr", record.learning_rate, prog_bar=True, logger=False)

    def configure_callbacks(self) -> list[L.Callback]:
        """Adds `HFFlow` (HF's logging / evaluation schedule) unless the trainer already has one."""
        from hf_lightning.callbacks.hf_flow import HFFlow, find_flow

        return [] if find_flow(self.trainer) is not None else [HFFlow()]

    def setup(self, stage: str) -> None:
        super().setup(stage)
        ignore_lightning_version_warnings()  # the filters may have been reset since import (Lightning door included)
        if stage == "fit" and self.gradient_checkpointing:
            enable_activation_checkpointing(uncompiled(self.model), self.gradient_checkpointing_kwargs)
        if stage == "fit" and isinstance(self.tokenizer, (PreTrainedTokenizerBase, ProcessorMixin)) \
                and hasattr(uncompiled(self.model), "config"):
            # as transformers' train(): the tokenizer's pad / bos / eos ids (new ones for fine-tuning) into the
            # model's config and generation config, so training, evaluation, generation and the saved model use them
            align_special_tokens(uncompiled(self.model), self.tokenizer)

    def configure_model(self) -> None:
        if self.compile_kwargs is None or uncompiled(self.model) is not self.model or has_compiled_regions(self.model):
            return
        if self.compile_scope == "blocks":
            compile_blocks(self.model, self.compile_kwargs)
        else:
            self.model = torch.compile(self.model, **self.compile_kwargs)

    def on_train_start(self) -> None:
        if self.neftune_noise_alpha and self._neftune_handle is None:
            # transformers' own NEFTune hook on the input embeddings (active in train mode only).
            from transformers.integrations.neftune import activate_neftune

            self._neftune_handle = activate_neftune(self.model, self.neftune_noise_alpha)

    def on_train_end(self) -> None:
        if self._neftune_handle is not None:
            from transformers.integrations.neftune import deactivate_neftune

            deactivate_neftune(self.model, self._neftune_handle)
            self._neftune_handle = None


def enable_activation_checkpointing(model: nn.Module, kwargs: dict[str, Any] | None) -> None:
    """transformers' ``train()``: ``every_n_layers`` (which layers) and ``offload`` (where their activations wait)
    come out of the keywords; the rest go to ``torch.utils.checkpoint.checkpoint`` (None when there are none: the
    model's default, non-reentrant checkpointing). A model with only the older ``gradient_checkpointing_enable``
    gets that, as in transformers."""
    kwargs = dict(kwargs or {})
    every_n_layers, offload = kwargs.pop("every_n_layers", 1), kwargs.pop("offload", False)
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs or None,
                                              every_n_layers=every_n_layers, offload=offload)
        return
    warnings.warn(f"`{type(model).__name__}` only defines `gradient_checkpointing_enable`, which is deprecated and will "
                  "no longer be called in v6. Define `activation_checkpointing_enable` instead.", FutureWarning,
                  stacklevel=2)  # transformers' warning
    placement = {**({"every_n_layers": every_n_layers} if every_n_layers != 1 else {}),
                 **({"offload": offload} if offload else {})}  # older releases take neither
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs or None, **placement)


TaskName = Literal["sequence-classification", "token-classification", "causal-lm", "masked-lm", "seq2seq-lm",
                   "question-answering"]
