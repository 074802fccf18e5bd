"""Tiny deterministic models and data sets shared by the tests."""

from __future__ import annotations

import datasets
import torch
from torch import nn

#: A 2-layer BERT small enough for CPU tests; uses the packaged MiniLM tokenizer's vocabulary size.
TINY_BERT = {
    "model_type": "bert", "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
    "intermediate_size": 64, "max_position_embeddings": 128,
}


def tiny_text_dataset(n: int = 64, seed: int = 0) -> datasets.Dataset:
    """Short sentences whose label is whether the word 'good' appears (learnable in a few steps)."""
    gen = torch.Generator().manual_seed(seed)
    words = ["the", "film", "was", "plot", "acting", "very", "quite", "a", "movie", "story"]
    rows = []
    for i in range(n):
        length = int(torch.randint(3, 12, (1,), generator=gen))
        picks = [words[int(j)] for j in torch.randint(0, len(words), (length,), generator=gen)]
        label = i % 2
        picks.insert(int(torch.randint(0, length, (1,), generator=gen)), "good" if label else "bad")
        rows.append({"text": " ".join(picks), "label": label})
    return datasets.Dataset.from_list(rows)


class RegressionModel(nn.Module):
    """y = a * x + b with a = b = 0 (the model of HF's own Trainer tests)."""

    main_input_name = "input_x"

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.zeros(()))
        self.b = nn.Parameter(torch.zeros(()))

    def forward(self, input_x: torch.Tensor, labels: torch.Tensor | None = None, **kwargs) -> tuple:
        y = input_x * self.a + self.b
        if labels is None:
            return (y,)
        return (nn.functional.mse_loss(y, labels), y)


class RegressionDataset(torch.utils.data.Dataset):
    """y = 2x + 3 + noise, 64 samples, seed 42 (HF's RegressionDataset)."""

    def __init__(self, length: int = 64, seed: int = 42, a: float = 2.0, b: float = 3.0) -> None:
        import numpy as np

        rng = np.random.RandomState(seed)  # the legacy global stream HF's test data set draws from
        self.x = rng.normal(size=(length,)).astype(np.float32)
        self.y = a * self.x + b + rng.normal(scale=0.1, size=(length,))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, float]:  # labels stay float64, as in HF's data set
        return {"input_x": self.x[i], "labels": self.y[i]}


class StrictRegressionModel(RegressionModel):
    """The regression model without ``**kwargs``: transformers.Trainer then divides each micro-batch loss by the
    number of micro-batches in the window (its correct path, including a short last window)."""

    def forward(self, input_x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple:
        return super().forward(input_x, labels)


class IterableRegression(torch.utils.data.IterableDataset):
    """The regression data as a stream."""

    def __init__(self, length: int = 64) -> None:
        self.data = RegressionDataset(length=length)

    def __iter__(self):
        return (self.data[i] for i in range(len(self.data)))


def accuracy_metric(pred) -> dict[str, float]:
    """An HF-style compute_metrics, importable by path from a config."""
    return {"hf_accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}
