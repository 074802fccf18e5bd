"""hf_lightning: the Hugging Face Trainer feature set on PyTorch Lightning."""

from hf_lightning.args import Seq2SeqTrainingArguments, TrainingArguments
from hf_lightning.callbacks import HFFlow
from hf_lightning.data import HFDataModule
from hf_lightning.modules import HFModule
from hf_lightning.seq2seq_trainer import Seq2SeqTrainer
from hf_lightning.settings import CompileSettings, EvaluationSettings, LoaderSettings, OptimizerSettings
from hf_lightning.trainer import Trainer

__all__ = [
    "CompileSettings", "EvaluationSettings", "HFDataModule", "HFFlow", "HFModule", "LoaderSettings", "OptimizerSettings",
    "Seq2SeqTrainer", "Seq2SeqTrainingArguments", "Trainer", "TrainingArguments",
]
__version__ = "0.1.0"
