"""Loading what an `HFModule` wraps: the model (by name, folder, config dict or encoder-decoder spec) and its tokenizer."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import transformers
from torch import nn
from transformers import AutoConfig, AutoTokenizer

from hf_lightning.data.builtin import looks_unreachable, resolve_model_path, unreachable
from hf_lightning.modules.tasks import TASKS, auto_class


def load_model(
    model: str | dict[str, Any] | nn.Module, task: str, num_labels: int | None, id2label: dict[int, str] | None,
    model_kwargs: dict[str, Any], from_config: bool, problem_type: str | None = None,
) -> nn.Module:
    """The model an `HFModule` wraps: an instance as given, an encoder-decoder spec (`build_encoder_decoder`), a
    config dict (random init), or a packaged name / folder / hub id loaded with the task's auto class."""
    if isinstance(model, nn.Module):
        return model
    if task == "seq2seq-lm" and is_encoder_decoder_spec(model):  # {encoder: minilm, decoder: minilm}: BERT2BERT
        return build_encoder_decoder(model, model_kwargs)
    cls = auto_class(task)
    labels: dict[str, Any] = {}
    if num_labels is not None and TASKS[task].uses_labels:
        labels["num_labels"] = num_labels
    if id2label and TASKS[task].uses_labels:
        labels["id2label"] = {int(k): v for k, v in id2label.items()}
        labels["label2id"] = {v: int(k) for k, v in id2label.items()}
    if problem_type is not None and TASKS[task].uses_labels:
        labels["problem_type"] = problem_type
    if isinstance(model, dict):  # a config written out in yaml: {model_type: bert, hidden_size: 32, ...}
        spec = dict(model)
        config = AutoConfig.for_model(spec.pop("model_type"), **spec, **labels)
        return cls.from_config(config, **model_kwargs)
    path = resolve_model_path(model)
    try:
        if from_config:
            return cls.from_config(AutoConfig.from_pretrained(path, **labels), **model_kwargs)
        return cls.from_pretrained(path, **labels, **model_kwargs)
    except (OSError, ValueError) as err:
        if Path(path).is_dir() or not looks_unreachable(err):
            raise
        raise unreachable(f"model='{model}'", err, "HFModule's `model` (--model.model in the CLI)",
                          " or to a config dict with `model_type` for a randomly initialised model") from err


#: The key of a Lightning checkpoint that holds a tokenizer object's files (`tokenizer_files`).
TOKENIZER_FILES = "hf_lightning_tokenizer_files"


def tokenizer_files(tokenizer: Any) -> dict[str, bytes]:
    """A tokenizer as the files ``save_pretrained`` writes (name -> bytes): what a Lightning checkpoint carries for a
    tokenizer object given to a module. Hyper-parameters cannot hold it: the object made hparams.yaml a dump of the
    whole vocabulary that ``yaml.safe_load`` refuses, and Lightning pickled it again at every fit / validate /
    predict. The files keep whatever was changed on the object (a pad token, added tokens, the padding side), load
    with ``torch.load(weights_only=True)``, and need no folder on the loading machine."""
    with tempfile.TemporaryDirectory(prefix="hfl-tokenizer-") as folder:
        tokenizer.save_pretrained(folder)
        root = Path(folder)
        return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*")) if f.is_file()}


def tokenizer_from_files(files: dict[str, bytes]) -> Any:
    """The tokenizer `tokenizer_files` saved."""
    with tempfile.TemporaryDirectory(prefix="hfl-tokenizer-") as folder:
        for name, data in files.items():
            target = Path(folder, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return AutoTokenizer.from_pretrained(folder)


def uncompiled(model: nn.Module) -> nn.Module:
    """The model itself when ``torch.compile`` wrapped it (its ``OptimizedModule`` keeps it as ``_orig_mod``): what
    is saved, exported, handed back to the user and inspected for its ``forward`` signature."""
    inner = getattr(model, "_orig_mod", None)
    return inner if isinstance(inner, nn.Module) else model


def compile_blocks(model: nn.Module, compile_kwargs: dict[str, Any]) -> None:
    """Regional compilation, in place: every block of a repeated stack (a ``ModuleList`` of one class, such as
    BERT's layers or Llama's decoder layers) gets ``module.compile()``, and TorchDynamo re-uses the first block's
    code for the others; modules outside such stacks are compiled one by one. accelerate's in-place variant is used
    (``compile_regions_deepspeed``: it calls ``nn.Module.compile``, which keeps the module tree, so parameter names,
    checkpoints and exports are those of the uncompiled model)."""
    from accelerate.utils import compile_regions_deepspeed

    compile_regions_deepspeed(model, **compile_kwargs)


def has_compiled_regions(model: nn.Module) -> bool:
    """Whether `compile_blocks` (or a user's ``module.compile()``) already compiled parts of ``model`` in place."""
    return any(getattr(module, "_compiled_call_impl", None) is not None for module in model.modules())


def apply_liger(model: nn.Module, config: dict[str, Any] | None) -> None:
    """Patches ``model`` with Liger's kernels through transformers' ``apply_liger_kernel`` (as ``use_liger_kernel``
    does in transformers.Trainer), after checking that they can run here."""
    import torch
    from transformers.integrations.liger import apply_liger_kernel
    from transformers.utils import is_liger_kernel_available

    if not is_liger_kernel_available():  # as transformers: an ImportError first
        raise ImportError("use_liger_kernel=True needs the liger-kernel package: pip install 'hf_lightning[liger]' "
                          "(or pip install liger-kernel).")
    if not torch.cuda.is_available():
        raise ValueError("use_liger_kernel=True: Liger's kernels are Triton kernels for CUDA GPUs, and no CUDA device "
                         "is visible here. Set use_liger_kernel to False on this machine (the model trains the same "
                         "way, with PyTorch's own operators).")
    apply_liger_kernel(model, dict(config or {}))


#: Keys of a warm-started encoder-decoder spec besides ``encoder`` / ``decoder``: set on the model's config.
_ENCODER_DECODER_TOKENS = ("decoder_start_token_id", "eos_token_id", "pad_token_id")


def is_encoder_decoder_spec(model: object) -> bool:
    """Whether a ``model`` value is ``{encoder: ..., decoder: ...}`` (a `build_encoder_decoder` spec)."""
    return isinstance(model, dict) and "encoder" in model and "decoder" in model


def build_encoder_decoder(spec: dict, model_kwargs: dict | None = None) -> transformers.EncoderDecoderModel:
    """A ``transformers.EncoderDecoderModel`` from ``{encoder: ..., decoder: ..., <token ids>}`` (HF's BERT2BERT).

    Each side is a model folder / packaged name (pre-trained weights: warm start) or a config dict (random init). The
    decoder side is loaded as a causal LM with ``is_decoder`` and ``add_cross_attention`` (its cross-attention starts
    untrained, as in HF's warm-starting recipe). ``decoder_start_token_id``, ``eos_token_id`` and ``pad_token_id`` go on
    the model's config: the loss needs the first and last to shift the labels into decoder inputs.

    Args:
        spec: ``encoder``, ``decoder`` and optionally the three token ids (and ``tie_encoder_decoder``).
        model_kwargs: Extra ``from_pretrained`` / ``from_config`` keyword arguments of both sides.
    """
    spec = dict(spec)
    unknown = sorted(set(spec) - {"encoder", "decoder", "tie_encoder_decoder", *_ENCODER_DECODER_TOKENS})
    if unknown:
        raise ValueError(f"model {unknown}: an encoder-decoder spec takes encoder, decoder, tie_encoder_decoder and "
                         f"{', '.join(_ENCODER_DECODER_TOKENS)}.")
    kwargs = dict(model_kwargs or {})

    def side(value: object, auto: type, **extra: object) -> transformers.PreTrainedModel:
        if isinstance(value, dict):
            config = dict(value)
            return auto.from_config(transformers.AutoConfig.for_model(config.pop("model_type"), **config, **extra),
                                    **kwargs)
        return auto.from_pretrained(resolve_model_path(str(value)), **extra, **kwargs)

    encoder = side(spec["encoder"], transformers.AutoModel)
    decoder = side(spec["decoder"], transformers.AutoModelForCausalLM, is_decoder=True, add_cross_attention=True)
    config = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(
        encoder.config, decoder.config, tie_encoder_decoder=bool(spec.get("tie_encoder_decoder", False)))
    model = transformers.EncoderDecoderModel(config=config, encoder=encoder, decoder=decoder)
    for name in _ENCODER_DECODER_TOKENS:
        if spec.get(name) is not None:
            setattr(model.config, name, int(spec[name]))
            setattr(model.generation_config, name, int(spec[name]))
    return model
