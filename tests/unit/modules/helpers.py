"""What the HFModule tests share: a tiny BERT classifier module, built with a fixed seed."""

from __future__ import annotations

import torch

from hf_lightning import HFModule
from tests.helpers.tiny import TINY_BERT


def _bert(**kwargs) -> HFModule:
    torch.manual_seed(0)
    return HFModule(model=TINY_BERT, num_labels=3, **kwargs)
