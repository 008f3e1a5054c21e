"""Tiny tokenizers and freshly initialised models, built locally with fixed seeds.

Tests, the benchmark and the teaching tab's "gradients at initialisation" experiment need models
that exist without any download; everything here is deterministic for a given seed.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Iterable, Literal

import torch
from tokenizers import AddedToken, ByteLevelBPETokenizer
from transformers import (
    PreTrainedModel,
    RobertaConfig,
    RobertaForCausalLM,
    RobertaForMaskedLM,
    RobertaForMultipleChoice,
    RobertaForQuestionAnswering,
    RobertaForSequenceClassification,
    RobertaForTokenClassification,
    RobertaModel,
    RobertaPreLayerNormConfig,
    RobertaPreLayerNormForCausalLM,
    RobertaPreLayerNormForMaskedLM,
    RobertaPreLayerNormForMultipleChoice,
    RobertaPreLayerNormForQuestionAnswering,
    RobertaPreLayerNormForSequenceClassification,
    RobertaPreLayerNormForTokenClassification,
    RobertaPreLayerNormModel,
    RobertaTokenizer,
)
from transformers.utils import logging as hf_logging

from .building import BUILDING_MODELS

Architecture = Literal["pre-ln", "post-ln"]
Task = Literal["mlm", "classification", "qa", "token-classification", "multiple-choice", "causal-lm", "base"]

# RoBERTa's special-token layout: the Hub checkpoints and our bundled models share it.
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]

SAMPLE_TEXT = [
    "The cat sat on the mat and looked at the dog.",
    "Paris is the capital of France, and Berlin is the capital of Germany.",
    "The president spoke to the nation about the economy and the war.",
    "In the beginning God created the heaven and the earth.",
    "A good movie makes you laugh, a bad movie makes you leave.",
    "Who wrote the letter? The king wrote the letter in 1790.",
    "Numbers like 42, 1776 and 3.14 appear in text too!",
]

MODEL_CLASSES: dict[tuple[Architecture, Task], type[PreTrainedModel]] = {
    ("pre-ln", "mlm"): RobertaPreLayerNormForMaskedLM,
    ("pre-ln", "classification"): RobertaPreLayerNormForSequenceClassification,
    ("pre-ln", "qa"): RobertaPreLayerNormForQuestionAnswering,
    ("post-ln", "mlm"): RobertaForMaskedLM,
    ("post-ln", "classification"): RobertaForSequenceClassification,
    ("post-ln", "qa"): RobertaForQuestionAnswering,
    ("pre-ln", "token-classification"): RobertaPreLayerNormForTokenClassification,
    ("pre-ln", "multiple-choice"): RobertaPreLayerNormForMultipleChoice,
    ("pre-ln", "causal-lm"): RobertaPreLayerNormForCausalLM,
    ("pre-ln", "base"): RobertaPreLayerNormModel,
    ("post-ln", "token-classification"): RobertaForTokenClassification,
    ("post-ln", "multiple-choice"): RobertaForMultipleChoice,
    ("post-ln", "causal-lm"): RobertaForCausalLM,
    ("post-ln", "base"): RobertaModel,
}

# The shape of andreasmadsen/efficient_mlm_m0.40 (RoBERTa-large), for benchmarks on random weights.
EFFICIENT_MLM_LARGE = dict(
    vocab_size=50265,
    hidden_size=1024,
    num_hidden_layers=24,
    num_attention_heads=16,
    intermediate_size=4096,
    max_position_embeddings=514,
    type_vocab_size=1,
)


def build_tokenizer(texts: Iterable[str] = SAMPLE_TEXT, vocab_size: int = 400) -> RobertaTokenizer:
    """Train a byte-level BPE on `texts` and wrap it exactly like RoBERTa's tokenizer."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(list(texts), vocab_size=vocab_size, min_frequency=1, special_tokens=SPECIAL_TOKENS)
    return roberta_tokenizer_from_bpe(bpe)


def roberta_tokenizer_from_bpe(bpe: ByteLevelBPETokenizer, model_max_length: int | None = None) -> RobertaTokenizer:
    """Wrap a trained byte-level BPE (trained with SPECIAL_TOKENS first) as RoBERTa's tokenizer class."""
    merges = [tuple(pair) for pair in json.loads(bpe._tokenizer.to_str())["model"]["merges"]]
    # v5's RobertaTokenizer ignores vocab_file/merges_file keywords; vocab=/merges= are honoured.
    # <mask> swallows the space before it, as in roberta-base, so "the <mask>." tokenizes like "the<mask>.".
    extra = {} if model_max_length is None else {"model_max_length": model_max_length}
    return RobertaTokenizer(
        vocab=bpe.get_vocab(),
        merges=merges,
        mask_token=AddedToken("<mask>", lstrip=True, rstrip=False, special=True, normalized=False),
        **extra,
    )


def build_config(
    architecture: Architecture,
    vocab_size: int,
    *,
    hidden_size: int = 32,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 66,
    layer_norm_eps: float = 1e-5,  # roberta-base's value; HF's default 1e-12 is too small for fp16 weights
    **extra,
) -> RobertaConfig | RobertaPreLayerNormConfig:
    """A RoBERTa(-PreLayerNorm) config with eager attention, so attention weights are returned."""
    config_class = RobertaPreLayerNormConfig if architecture == "pre-ln" else RobertaConfig
    config = config_class(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size or 4 * hidden_size,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        type_vocab_size=1,
        layer_norm_eps=layer_norm_eps,
        **extra,
    )
    config._attn_implementation = "eager"
    return config


def build_model(
    architecture: Architecture,
    task: Task,
    config: RobertaConfig | RobertaPreLayerNormConfig,
    seed: int = 0,
) -> PreTrainedModel:
    """A freshly initialised model (HF's own init) for `task`, in eval mode, reproducible by seed.

    A causal LM is built as a decoder (`is_decoder=True`, causal attention) on a copy of `config`: without it
    transformers builds one that attends both ways."""
    if task == "causal-lm" and not config.is_decoder:
        config = copy.deepcopy(config)
        config.is_decoder = True
    with BUILDING_MODELS:
        torch.manual_seed(seed)
        model = MODEL_CLASSES[(architecture, task)](config)
    return model.eval()


def save_checkpoint(model: PreTrainedModel, tokenizer: RobertaTokenizer, directory: str | Path) -> Path:
    """Save model and tokenizer the way the Hub stores them (safetensors), ready for `load_model`."""
    directory = Path(directory)
    hf_logging.disable_progress_bar()
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory
