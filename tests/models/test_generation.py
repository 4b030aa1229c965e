"""On-demand generation: the chat-template text, the reasoning cue, and the disk cache
(byte-identical text back, nothing generated twice, invalidated by another prompt, decoding
or adapter)."""

from __future__ import annotations

import pytest

from engine.errors import ConfigError
from engine.models.generation import (
    REASONING_CUE,
    Decoding,
    DiskCache,
    generate_cached,
    model_text,
)
from tests.llm_fixtures import tiny_llm

PROMPT = 'Below is the rating history of a user: "A", 5 stars. Will they like "B"? Answer:'


@pytest.fixture(scope="module")
def llm(tiny_llama_dir):
    return tiny_llm(tiny_llama_dir)


def counting(llm, monkeypatch) -> list[int]:
    calls: list[int] = []
    real = llm.generate

    def generate(texts, max_new_tokens=32, **options):
        calls.append(len(texts))
        return real(texts, max_new_tokens=max_new_tokens, **options)

    monkeypatch.setattr(llm, "generate", generate)
    return calls


def test_model_text_uses_the_chat_template_and_the_reasoning_cue(llm):
    answer = model_text(llm, PROMPT, Decoding())
    assert "<|im_start|>user" in answer and answer.rstrip().endswith("assistant")
    assert PROMPT in answer
    reasoning = model_text(llm, PROMPT, Decoding(style="reasoning", max_new_tokens=64))
    assert REASONING_CUE in reasoning and "Answer:" not in reasoning
    assert model_text(llm, PROMPT, Decoding(chat=False)) == PROMPT


def test_cache_returns_the_same_text_and_generates_nothing_twice(llm, tmp_path, monkeypatch):
    cache = DiskCache("generations", tmp_path)
    calls = counting(llm, monkeypatch)
    decoding = Decoding(max_new_tokens=6)
    first = generate_cached(llm, [PROMPT, PROMPT + " "], decoding, cache)
    assert calls == [2]
    again = generate_cached(llm, [PROMPT, PROMPT + " "], decoding, cache)
    assert again == first and calls == [2]  # byte-identical, from disk
    assert len(list((tmp_path / "generations").rglob("*.json"))) == 2
    generate_cached(llm, [PROMPT + "?"], decoding, cache)  # another prompt
    generate_cached(llm, [PROMPT], Decoding(max_new_tokens=7), cache)  # another decoding
    generate_cached(llm, [PROMPT], Decoding(style="reasoning", max_new_tokens=6), cache)
    assert calls == [2, 1, 1, 1]


def test_another_adapter_is_another_entry(tiny_llama_dir, tmp_path, monkeypatch):
    import torch

    cache = DiskCache("generations", tmp_path)
    model = tiny_llm(tiny_llama_dir)
    assert model.adapter_hash() == "base"
    generate_cached(model, [PROMPT], Decoding(max_new_tokens=4), cache)
    model.add_lora(r=2, alpha=4)
    state = {k: torch.full_like(v, 0.01) for k, v in model.lora_state().items()}
    model.load_lora_state(state)
    first = model.adapter_hash()
    assert first != "base"
    calls = counting(model, monkeypatch)
    generate_cached(model, [PROMPT], Decoding(max_new_tokens=4), cache)
    assert calls == [1]
    model.for_inference()
    assert model.adapter_hash() == first  # merging keeps the adapter's identity


def test_bad_decoding_is_a_config_error():
    with pytest.raises(ConfigError, match="style must be"):
        Decoding(style="poem")
    with pytest.raises(ConfigError, match="max_new_tokens"):
        Decoding(max_new_tokens=0)


def test_explanation_prompt_states_the_decision_and_asks_for_the_four_points():
    from engine.models.generation import explanation_prompt

    prompt = PROMPT.replace("Answer:", "You should ONLY answer no or yes. Answer:")
    liked = explanation_prompt(prompt, True)
    assert "You should ONLY" not in liked and "Answer:" not in liked
    assert "In fact the user liked the target item" in liked and liked.endswith("Explanation:")
    assert "did not like" in explanation_prompt(prompt, False)


def test_stats_count_tokens_and_cost_and_the_cache_keys_on_the_explanation(llm, tmp_path,
                                                                           monkeypatch):
    from engine.models.generation import explanation_prompt, generate_with_stats

    cache = DiskCache("generations", tmp_path)
    calls = counting(llm, monkeypatch)
    decoding = Decoding("explanation", max_new_tokens=5)
    prompts = [explanation_prompt(PROMPT, True), explanation_prompt(PROMPT, False)]
    first = generate_with_stats(llm, prompts, decoding, cache, batch_size=1)
    assert calls == [1, 1] and first.cached == [False, False]
    assert all(s > 0 for s in first.seconds) and all(1 <= t <= 5 for t in first.tokens)
    again = generate_with_stats(llm, prompts, decoding, cache)
    assert again.texts == first.texts and again.cached == [True, True]
    assert again.seconds == [0.0, 0.0] and again.tokens == first.tokens and calls == [1, 1]
    generate_with_stats(llm, prompts[:1], Decoding("explanation", max_new_tokens=6), cache)
    assert calls == [1, 1, 1]  # another decoding setting is another entry


def test_score_cache_scores_once(llm, tmp_path, monkeypatch):
    import numpy as np

    from engine.models.generation import score_cached

    cache = DiskCache("scores", tmp_path)
    seen: list[int] = []
    real = llm.score
    monkeypatch.setattr(llm, "score", lambda prompts, **kw: seen.append(len(prompts))
                        or real(prompts, **kw))
    first = score_cached(llm, [PROMPT, PROMPT + " "], cache)
    assert seen == [2] and ((first > 0) & (first < 1)).all()
    np.testing.assert_array_equal(score_cached(llm, [PROMPT, PROMPT + " "], cache), first)
    assert seen == [2]
