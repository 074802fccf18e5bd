"""Adversarial training on the input embeddings (FGM, Miyato et al. 2017) with Lightning's manual optimisation.

Per micro-batch (the hot path of `AdversarialModule.training_step`, top to bottom):

1. the clean loss, normalised as `HFModule` normalises it under gradient accumulation (``_normalise``), is
   back-propagated with ``manual_backward`` (so Lightning's precision plugin scales it under fp16);
2. the input-embedding matrix is moved by ``r = epsilon * g / ||g||``, ``g`` being *this* micro-batch's gradient of it
   (the window's earlier gradients are set aside meanwhile);
3. the loss on the perturbed embeddings is back-propagated too (its gradient adds to the clean one);
4. the embeddings are restored exactly (from a copy);
5. at the end of each accumulation window: ``optimizer.step()`` (Lightning's precision plugin unscales fp16 gradients,
   then calls ``on_before_optimizer_step``, where the pre-clip norm is recorded in ``step_record.grad_norm`` and gradients are
   clipped to ``max_grad_norm`` by `hf_lightning.strategies.clip_grad_norm`), the scheduler's step, ``zero_grad``.

``step_record.loss`` holds the clean loss of the window (what is logged as ``loss``), ``step_record.learning_rate`` the rate of the
step, so `HFFlow` logs as for `HFModule`: it counts optimizer steps by ``trainer.global_step``, which Lightning advances
once per ``optimizer.step()`` under manual optimisation. With ``epsilon=0`` steps 2-4 are skipped and training equals
`HFModule`'s, update for update.

Lightning's manual optimisation forbids ``trainer.accumulate_grad_batches``: the window size is this module's
``gradient_accumulation_steps``. The module handles one process only (DDP's gradient reducer expects one backward pass
per forward).
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from hf_lightning import progress
from hf_lightning.data.loader import TrainLoader, WindowInfo, split_window
from hf_lightning.modules.base import HFModule
from hf_lightning.strategies import clip_grad_norm


class AdversarialModule(HFModule):
    """`HFModule` with FGM adversarial training on the input embeddings (manual optimisation).

    Args:
        epsilon: Size of the embedding perturbation (the L2 norm of ``r`` over the whole embedding matrix); 0 trains
            without it, exactly as `HFModule`. 1.0 is the usual value for BERT-sized models.
        gradient_accumulation_steps: Micro-batches per optimizer step (HF's ``gradient_accumulation_steps``), used
            instead of ``trainer.accumulate_grad_batches``, which Lightning's manual optimisation does not allow.
        **kwargs: `HFModule` arguments (``model``, ``optimization``, ``metrics``...).
    """

    def __init__(self, epsilon: float = 1.0, gradient_accumulation_steps: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if epsilon < 0 or gradient_accumulation_steps < 1:
            raise ValueError(f"model.epsilon={epsilon} must be >= 0 and model.gradient_accumulation_steps="
                             f"{gradient_accumulation_steps} >= 1.")
        self.automatic_optimization = False
        self.epsilon = epsilon
        self._accumulation = gradient_accumulation_steps

    @property
    def gradient_accumulation_steps(self) -> int:
        """Micro-batches per optimizer step (this module's, as Lightning's stays 1 under manual optimisation)."""
        return self._accumulation

    # ----------------------------------------------------------------------------------------------- set-up
    def configure_callbacks(self) -> list[L.Callback]:
        # Runs before Lightning validates the trainer configuration, so this message comes first.
        if self.trainer.accumulate_grad_batches != 1:
            raise ValueError(
                f"AdversarialModule uses manual optimisation, which Lightning runs with trainer.accumulate_grad_batches"
                f"=1: set model.gradient_accumulation_steps={self.trainer.accumulate_grad_batches} instead of "
                "trainer.accumulate_grad_batches."
            )
        return super().configure_callbacks()

    def on_fit_start(self) -> None:
        if self.trainer.world_size > 1:
            raise ValueError("AdversarialModule runs on one device: its two backward passes per forward do not fit "
                             "DDP / FSDP / DeepSpeed gradient synchronisation. Use devices=1, or HFModule.")
        if self.epsilon > 0 and not callable(getattr(self.model, "get_input_embeddings", None)):
            raise ValueError(f"model.epsilon={self.epsilon} perturbs the input embeddings, but "
                             f"{type(self.model).__name__} has no get_input_embeddings(); use epsilon=0 or HFModule.")

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        # HFDataModule's TrainLoader windows batches by trainer.accumulate_grad_batches (1 here); give it ours so each
        # micro-batch carries the window's label count, as transformers.Trainer counts num_items_in_batch. Each epoch,
        # before its batches are drawn, so a reloaded loader gets it too.
        loader = self.trainer.train_dataloader
        if isinstance(loader, TrainLoader):
            loader.accumulate_grad_batches = self.gradient_accumulation_steps

    def num_training_steps(self) -> int:
        """Optimizer steps of this fit: HF's ``ceil(batches / gradient_accumulation_steps)`` per epoch, capped by
        ``trainer.max_steps`` (Lightning's ``estimated_stepping_batches`` with this module's accumulation)."""
        trainer = self.trainer
        estimate = trainer.estimated_stepping_batches  # also loads the training data when needed
        if not math.isfinite(estimate):
            raise ValueError("The training length is unknown (an iterable data set): set trainer.max_steps.")
        batches = trainer.num_training_batches
        if trainer.max_epochs == -1 or not math.isfinite(batches):
            return int(estimate)  # max_steps bounds an endless run
        steps = progress.updates_per_epoch(int(batches), self.gradient_accumulation_steps) * max(trainer.max_epochs, 1)
        return min(steps, trainer.max_steps) if trainer.max_steps != -1 else steps

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.create_optimizer()
        self.add_parameters_outside_model(optimizer)
        scheduler = self.create_scheduler(self.num_training_steps(), optimizer)
        # Under manual optimisation Lightning does not step the scheduler: `_optimizer_step` does, once per update.
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    # ----------------------------------------------------------------------------------------------- training
    def _window(self, window: WindowInfo | None, batch_idx: int) -> WindowInfo:
        """The batch's window; without a TrainLoader, windows of ``gradient_accumulation_steps`` from the epoch start
        (the last one shorter) and no label count (each loss is then divided by the window size, as HF does)."""
        if window is not None:
            return window
        size, total = self.gradient_accumulation_steps, self.trainer.num_training_batches
        start = batch_idx - batch_idx % size
        if math.isfinite(total):
            size = min(size, int(total) - start)
        return WindowInfo(None, size, batch_idx - start)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        inputs, window = split_window(batch)
        window = self._window(window, batch_idx)
        self.step_record.flos += self.floating_point_ops(inputs)
        embeddings = self.model.get_input_embeddings().weight if self.epsilon > 0 else None
        earlier = None
        if embeddings is not None and embeddings.grad is not None:
            earlier, embeddings.grad = embeddings.grad, None  # read this micro-batch's gradient alone
        loss = self._normalise(inputs, window, batch_idx)
        self.manual_backward(loss)
        self.record_step_loss(loss.detach(), window)
        if embeddings is not None:
            self._adversarial_backward(embeddings, inputs, window, batch_idx)
            if earlier is not None:  # put the window's earlier gradients back
                embeddings.grad = earlier if embeddings.grad is None else embeddings.grad.add_(earlier)
        if window.index == window.size - 1:
            self._optimizer_step()
        return loss.detach()

    def _adversarial_backward(self, embeddings: torch.Tensor, inputs: dict[str, Any], window: WindowInfo,
                              batch_idx: int) -> None:
        """Back-propagates the loss at ``embeddings + epsilon * g / ||g||``, then restores the embeddings exactly."""
        grad = embeddings.grad
        if grad is None:  # the embeddings took no part in the loss
            return
        with torch.no_grad():
            backup = embeddings.detach().clone()
            norm = torch.linalg.vector_norm(grad.float())
            # A zero or non-finite norm (an fp16 overflow the scaler will skip) leaves the embeddings where they are;
            # torch.where keeps the decision on the device (no host sync).
            scale = torch.where(torch.isfinite(norm) & (norm > 0), self.epsilon / norm, torch.zeros_like(norm))
            embeddings.add_(grad * scale.to(grad.dtype))
        try:
            self.manual_backward(self._normalise(inputs, window, batch_idx))
        finally:
            with torch.no_grad():
                embeddings.copy_(backup)

    def _optimizer_step(self) -> None:
        """transformers.Trainer's end of a window: (unscale, clip) optimizer step, scheduler step, zero_grad."""
        optimizer = self.optimizers()
        optimizer.step()  # -> precision plugin: unscale -> on_before_optimizer_step (clip) -> step
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
        optimizer.zero_grad()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Records the learning rate and, after the precision plugin's unscaling, the pre-clip norm; then clips."""
        super().on_before_optimizer_step(optimizer)
        # Lightning does not call configure_gradient_clipping under manual optimisation; this is the point where it
        # would (gradients final and unscaled, the step not yet taken).
        self.step_record.grad_norm = clip_grad_norm(self, optimizer, self.max_grad_norm)


__all__ = ["AdversarialModule"]
