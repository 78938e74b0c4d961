"""Small local backbones for tests: a word-piece tokenizer trained on real text and a tiny random BERT masked LM,
saved as a plain Hugging Face directory (what ``model.backbone`` reads). Nothing is downloaded."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from raysparse.config import ModelConfig

TINY_BERT = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}


def save_tiny_backbone(texts: Sequence[str], out: Path, vocab_size: int = 2000, seed: int = 0) -> str:
    """Train the tokenizer on ``texts``, build a hidden-32 one-layer BERT (seeded), save both under ``out``."""
    from raysparse.backbone import build_small_bert, train_tokenizer

    tokenizer = train_tokenizer(list(texts), vocab_size=vocab_size)
    torch.manual_seed(seed)
    build_small_bert(tokenizer, ModelConfig(vocab_size=vocab_size, **TINY_BERT)).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)
