"""Writing `HFModule`'s model out in transformers' format (``save_pretrained``), with the full weights gathered from
the ranks first where a strategy shards them. A mixin of `HFModule`, which provides ``model`` and ``tokenizer``.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from hf_lightning.checkpoint.folder import is_peft_model
from hf_lightning.modules.loading import uncompiled


class ExportMixin:
    """``export_state`` and ``save_pretrained`` of `HFModule`."""

    def export_state(self) -> tuple[bool, dict[str, torch.Tensor] | None]:
        """``(writes, weights)`` for an export: with several processes the strategy gathers the full weights of
        ``model`` (a collective where parameters are sharded: FSDP, DeepSpeed ZeRO-3) and only rank zero writes them.
        One process: ``(True, None)``, the model's own weights."""
        trainer = self._trainer
        if trainer is None or trainer.world_size <= 1:
            return True, None
        weights = trainer.strategy.lightning_module_state_dict()
        if not trainer.is_global_zero:
            return False, None
        prefix = "model." if uncompiled(self.model) is self.model else "model._orig_mod."  # torch.compile's wrapper
        return True, {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}

    def save_pretrained(self, path: str, safe_serialization: bool = True) -> None:
        """Writes the model (and tokenizer) in HF format, loadable with ``AutoModelFor...from_pretrained``.

        With several processes, call it on every rank (the CLI and ``Trainer.save_model`` do): the weights are
        gathered across ranks and rank zero writes them.
        """
        writes, weights = self.export_state()
        if not writes:
            return
        model = uncompiled(self.model)  # torch.compile's wrapper: save the model itself
        if isinstance(model, PreTrainedModel) or is_peft_model(model):  # a PeftModel: its adapter folder
            model.save_pretrained(path, safe_serialization=safe_serialization, state_dict=weights)
        else:
            import os

            from safetensors.torch import save_file

            os.makedirs(path, exist_ok=True)
            weights = model.state_dict() if weights is None else weights
            save_file({k: v.contiguous() for k, v in weights.items()}, f"{path}/model.safetensors",
                      metadata={"format": "pt"})  # as transformers (from_pretrained checks the format)
        if self.tokenizer_to_save is not None:
            self.tokenizer_to_save.save_pretrained(path)
