"""Token classification (NER, POS): `TokenClassificationModule` and its entity-level seqeval metric.

Entity precision / recall / F1 follow HF's ``run_ner.py`` example (``evaluate``'s ``seqeval``): predictions at positions
labelled -100 (special tokens, continuation sub-words) are dropped, each sentence's remaining tags are mapped to their
names and scored by ``seqeval`` (micro average over entities; accuracy over tokens).
"""

from __future__ import annotations

import re
from typing import Any

import torch
import torchmetrics
from torchmetrics.utilities import dim_zero_cat

from hf_lightning.modules.base import HFModule


def _require_seqeval() -> Any:
    try:
        import seqeval.metrics
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Entity metrics of TokenClassificationModule need seqeval: `pip install seqeval` "
            "(or `pip install hf_lightning[examples]`), or set model.entity_metrics=false."
        ) from err
    return seqeval.metrics


class SeqevalMetric(torchmetrics.Metric):
    """Entity-level precision / recall / F1 and token accuracy of tag sequences, computed by ``seqeval``.

    A torchmetrics wrapper (not a re-implementation): each update stores the kept tag ids of every sentence; states are
    concatenated across ranks, so every rank scores the whole evaluation set once.

    Args:
        id2label: Tag names by id (BIO / IOBES names such as ``B-person``).
        scheme: ``None`` for seqeval's default (CoNLL) rules, or ``IOB2`` / ``IOBES``... for strict mode.
        entity_level_metrics: Also return ``<type>_precision`` / ``_recall`` / ``_f1`` / ``_number`` per entity type.
    """

    full_state_update = False

    def __init__(self, id2label: dict[int, str], scheme: str | None = None, entity_level_metrics: bool = False) -> None:
        super().__init__()
        _require_seqeval()
        self.id2label = {int(k): v for k, v in id2label.items()}
        self.scheme = scheme
        self.entity_level_metrics = entity_level_metrics
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        self.add_state("lengths", default=[], dist_reduce_fx="cat")

    def update(self, logits_or_preds: torch.Tensor, labels: torch.Tensor) -> None:
        """Adds a batch: logits ``[B, L, C]`` (or predicted ids ``[B, L]``) and labels ``[B, L]`` with -100."""
        preds = logits_or_preds.argmax(-1) if logits_or_preds.dim() == labels.dim() + 1 else logits_or_preds
        length = min(preds.shape[-1], labels.shape[-1])  # predictions padded with -100 may be longer
        preds, labels = preds[..., :length], labels[..., :length]
        keep = labels != -100
        self.preds.append(preds[keep].long())
        self.target.append(labels[keep].long())
        self.lengths.append(keep.sum(-1).long())

    def _sentences(self, flat: torch.Tensor, lengths: list[int]) -> list[list[str]]:
        names = self.id2label
        return [[names.get(int(i), "O") for i in part] for part in torch.split(flat.cpu(), lengths)]

    def compute(self) -> dict[str, float]:
        """``precision``, ``recall``, ``f1`` (entity micro average) and ``accuracy`` (tokens), as HF's example."""
        metrics = _require_seqeval()
        lengths = dim_zero_cat(self.lengths).tolist() if self.lengths else []
        if not lengths:
            return {}
        preds = self._sentences(dim_zero_cat(self.preds), lengths)
        target = self._sentences(dim_zero_cat(self.target), lengths)
        kwargs: dict[str, Any] = {"zero_division": 0}
        if self.scheme is not None:
            from seqeval import scheme as schemes

            kwargs.update(mode="strict", scheme=getattr(schemes, self.scheme))
        # seqeval's classification_report gives the per-type and "micro avg" rows that evaluate's seqeval reports.
        report = metrics.classification_report(target, preds, output_dict=True, **kwargs)
        overall = report.pop("micro avg")
        results = {
            "precision": float(overall["precision"]),
            "recall": float(overall["recall"]),
            "f1": float(overall["f1-score"]),
            "accuracy": float(metrics.accuracy_score(target, preds)),
        }
        if self.entity_level_metrics:
            for name, row in report.items():
                if name.endswith(" avg"):
                    continue
                results.update({f"{name}_precision": float(row["precision"]), f"{name}_recall": float(row["recall"]),
                                f"{name}_f1": float(row["f1-score"]), f"{name}_number": float(row["support"])})
        return results


class TokenClassificationModule(HFModule):
    """An ``AutoModelForTokenClassification`` model with HF's NER metrics (``eval_precision`` / ``recall`` / ``f1`` /
    ``accuracy``, entity level, by seqeval).

    Pair it with `hf_lightning.data.tasks.TokenClassificationDataModule`, which aligns word tags to sub-words and gives
    ``num_labels`` / ``id2label``. All `HFModule` arguments apply (``task`` is fixed to ``token-classification``).

    Args:
        entity_metrics: Compute seqeval's entity precision / recall / F1 and token accuracy during evaluation.
        entity_level_metrics: Also report each entity type's metrics (``eval_person_f1``...), as HF's
            ``return_entity_level_metrics``.
        seqeval_scheme: None for seqeval's default (lenient, CoNLL-eval) rules, or a strict scheme: ``IOB2``,
            ``IOBES``, ``BILOU``...
        **kwargs: `HFModule` arguments (``model``, ``optimization``, ``num_labels``, ``id2label``...).
    """

    def __init__(
        self,
        entity_metrics: bool = True,
        entity_level_metrics: bool = False,
        seqeval_scheme: str | None = None,
        **kwargs: Any,
    ) -> None:
        task = kwargs.pop("task", "token-classification")
        if task != "token-classification":
            raise ValueError(f"TokenClassificationModule has task 'token-classification', not model.task='{task}'.")
        super().__init__(task=task, **kwargs)
        self.entity_metrics = entity_metrics
        self.val_entity_metric: SeqevalMetric | None = None
        self.test_entity_metric: SeqevalMetric | None = None
        if entity_metrics:
            id2label = kwargs.get("id2label") or getattr(self.model.config, "id2label", None)
            if not id2label or all(re.fullmatch(r"LABEL_\d+", name) for name in id2label.values()):
                raise ValueError("Entity metrics need the tag names (B-person, I-person, O...): set model.id2label "
                                 "(the CLI links it from the data), or model.entity_metrics=false.")
            if seqeval_scheme is not None:
                from seqeval import scheme as schemes

                if not hasattr(schemes, seqeval_scheme):
                    raise ValueError(f"model.seqeval_scheme='{seqeval_scheme}' is unknown; use IOB1, IOB2, IOE1, "
                                     "IOE2, IOBES, BILOU or null.")
            self.val_entity_metric = SeqevalMetric(id2label, seqeval_scheme, entity_level_metrics)
            self.test_entity_metric = self.val_entity_metric.clone()

    def _entity_metric(self) -> SeqevalMetric | None:
        stage = self._stage_name()
        if stage == "predict":
            return None
        return self.test_entity_metric if stage == "test" else self.val_entity_metric

    def _scores_predictions(self, stage: str) -> bool:
        return super()._scores_predictions(stage) or self._entity_metric() is not None

    def _eval_step(self, batch: Any, dataloader_idx: int = 0) -> tuple[Any, Any, Any]:
        loss, logits, labels = super()._eval_step(batch, dataloader_idx)
        metric = self._entity_metric()
        if metric is not None and torch.is_tensor(logits) and torch.is_tensor(labels):
            metric.update(logits, labels)
        return loss, logits, labels

    def _hf_metrics(self, state: Any) -> dict[str, float]:
        results = super()._hf_metrics(state)
        metric = self._entity_metric()
        if metric is not None and metric.update_count > 0:
            results = {**metric.compute(), **results}  # a user's compute_metrics wins on a name clash
            metric.reset()
        return results
