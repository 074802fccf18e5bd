"""The glue between the HF-style `Trainer` and the Lightning parts: overridden hooks are called back from here."""

from __future__ import annotations

import inspect
import os
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from transformers.integrations.integration_utils import default_logdir

from hf_lightning.data.datamodule import HFDataModule
from hf_lightning.data.loader import split_window
from hf_lightning.modules.base import HFModule
from hf_lightning.modules.evaluation import EvaluationMixin

if TYPE_CHECKING:
    from hf_lightning.trainer import Trainer


def _takes(fn: Any, name: str) -> bool:
    params = inspect.signature(fn).parameters
    return name in params or any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values())


class _DeferredBackward:
    """``trainer.accelerator`` inside an overridden ``training_step``: ``backward`` hands the loss to Lightning.

    Lightning's automatic optimisation runs the backward pass (with precision scaling and DDP sync) on what
    ``training_step`` returns, so the loss given to ``backward`` is kept and returned to Lightning instead.
    """

    def __init__(self, module: FacadeModule) -> None:
        self.module = module

    def backward(self, loss: torch.Tensor, **kwargs: Any) -> None:
        self.module.deferred_loss = loss if self.module.deferred_loss is None else self.module.deferred_loss + loss

    def unwrap_model(self, model: Any, **kwargs: Any) -> Any:
        return model

    @property
    def num_processes(self) -> int:
        return self.module.trainer.world_size

    @property
    def device(self) -> torch.device:
        return self.module.device


class FacadeModule(HFModule):
    """HFModule whose hooks call the facade's overrides (``compute_loss``, ``prediction_step``, ...)."""

    base_compute_loss = HFModule.compute_loss
    base_prediction_step = EvaluationMixin.prediction_step

    def __init__(self, facade: Trainer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        object.__setattr__(self, "facade", facade)  # not a submodule
        self.deferred_loss: torch.Tensor | None = None
        self._context: tuple[Any, int] | None = None
        hook = facade.compute_loss
        self._loss_takes_num_items = _takes(hook, "num_items_in_batch")

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        facade = self.facade
        if "compute_loss" not in facade.overridden:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self._loss_takes_num_items:
            return facade.compute_loss(model, inputs, return_outputs=return_outputs,
                                       num_items_in_batch=num_items_in_batch)
        return facade.compute_loss(model, inputs, return_outputs=return_outputs)  # the pre-5.x signature

    def prediction_step(self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool,
                        ignore_keys: list[str] | None = None) -> Any:
        if "prediction_step" in self.facade.overridden:
            return self.facade.prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        facade = self.facade
        if "training_step" not in facade.overridden:
            return super().training_step(batch, batch_idx)
        inputs, window = split_window(batch)
        self.current_flos += self.floating_point_ops(inputs)
        self._context, self.deferred_loss = (window, batch_idx), None
        facade.accelerator = _DeferredBackward(self)
        num_items = None
        if window is not None and window.num_items is not None:
            num_items = self._window_num_items(window, batch_idx)
        reported = facade.training_step(self.model, inputs, num_items)
        if self.deferred_loss is None:
            raise RuntimeError("An overridden training_step must call self.accelerator.backward(loss) or "
                               "return super().training_step(model, inputs, num_items_in_batch).")
        self.record_step_loss(reported.detach() if torch.is_tensor(reported) else self.deferred_loss.detach(), window)
        return self.deferred_loss * self.trainer.accumulate_grad_batches

    def facade_training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any) -> torch.Tensor:
        """HF's default ``training_step``: the normalised loss, backward (deferred), detached loss returned."""
        window, batch_idx = self._context if self._context is not None else (None, 0)
        loss = self._normalise(inputs, window, batch_idx)
        self.facade.accelerator.backward(loss)
        return loss.detach()

    def create_optimizer(self) -> torch.optim.Optimizer:
        facade = self.facade
        if "create_optimizer" in facade.overridden or facade.optimizer is not None:
            facade.model = self.model
            return facade.create_optimizer()
        return super().create_optimizer()

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer) -> Any:
        facade = self.facade
        if "create_scheduler" in facade.overridden or facade.lr_scheduler is not None:
            return facade.create_scheduler(num_training_steps, optimizer)
        return super().create_scheduler(num_training_steps, optimizer)


class FacadeDataModule(HFDataModule):
    """HFDataModule whose loaders come from the facade's ``get_*_dataloader`` overrides when there are any."""

    def __init__(self, facade: Trainer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.facade = facade
        facade._datamodule = self

    def base_train_dataloader(self) -> Any:
        return self.train_loader()

    def base_eval_dataloader(self, role: str) -> Any:
        return self._eval_loader(role)

    def train_dataloader(self) -> Any:
        if "get_train_dataloader" in self.facade.overridden:
            return self.wrap_train_loader(self.facade.get_train_dataloader())
        return super().train_dataloader()

    def val_dataloader(self) -> Any:
        if "get_eval_dataloader" in self.facade.overridden:
            return self.facade.get_eval_dataloader()
        return super().val_dataloader()

    def predict_dataloader(self) -> Any:
        if "get_test_dataloader" in self.facade.overridden:
            return self.facade.get_test_dataloader(self.raw_splits().get("predict"))
        return super().predict_dataloader()


def _optional_logger(name: str, args: Any) -> Logger:
    from lightning.pytorch import loggers

    classes = {"wandb": "WandbLogger", "mlflow": "MLFlowLogger", "comet_ml": "CometLogger", "neptune": "NeptuneLogger"}
    try:
        return getattr(loggers, classes[name])(save_dir=args.output_dir) if name != "comet_ml" else \
            getattr(loggers, classes[name])()
    except (ImportError, ModuleNotFoundError) as err:
        raise ValueError(f"report_to='{name}' needs its package installed ({err}).") from err


#: report_to name -> Lightning logger factory
REPORTERS = {
    # HF's TensorBoardCallback default folder: output_dir/runs/<date>_<host>; HFFlow writes HF's tags there.
    "tensorboard": lambda args: TensorBoardLogger(save_dir=os.path.join(args.output_dir, default_logdir()), name="",
                                                  version=""),
    "csv": lambda args: CSVLogger(save_dir=args.output_dir, name="logs"),
    "wandb": lambda args: _optional_logger("wandb", args),
    "mlflow": lambda args: _optional_logger("mlflow", args),
    "comet_ml": lambda args: _optional_logger("comet_ml", args),
    "neptune": lambda args: _optional_logger("neptune", args),
}


def build_loggers(args: Any) -> list[Logger] | bool:
    """Lightning loggers for ``args.report_to`` (``none`` -> no logger; ``all`` -> the installed ones)."""
    report_to = args.report_to or []
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    if names in (["none"], []):
        return False
    if names == ["all"]:
        names = ["tensorboard", "csv"]
    unknown = [n for n in names if n not in REPORTERS]
    if unknown:
        raise ValueError(f"report_to={unknown} is not supported. Choose from {sorted(REPORTERS)} or 'none'.")
    return [REPORTERS[n](args) for n in names]
