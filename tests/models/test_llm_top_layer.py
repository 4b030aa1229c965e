"""The top layer at the last token only (engine.models.llm._top_layer_at) equals the whole
layer read there: scores, kept states, LoRA gradients and CoRA's hooked deltas, on random
Llama and Qwen2 decoders with grouped-query attention and prompts of different lengths
(right padding); decoders it does not know run the whole layer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.models import llm as llm_module
from engine.models.collab_weights import CollabConfig, CollaborativeWeights
from engine.models.llm import _plain_attention, _top_layer_at
from tests.llm_fixtures import default_model_or_skip, tiny_llm

TOP_LAYER_AT = _top_layer_at

PROMPTS = ["User watched Heat (1995). Will the user like Alien (1979)? Answer:",
           "User watched Toy Story (1995), Babe (1995), Fargo (1996), Casino (1995). Will "
           "the user like Sabrina (1995)? Answer:", "Short prompt. Answer:"]


def write_decoder(folder: Path, family: str) -> Path:
    """3 layers, 4 query heads over 2 key/value heads; Qwen2 adds q/k/v biases."""
    from transformers import (
        AutoTokenizer,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    tokenizer = AutoTokenizer.from_pretrained(default_model_or_skip())
    sizes = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                 num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                 max_position_embeddings=512, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = (LlamaForCausalLM(LlamaConfig(**sizes)) if family == "llama"
             else Qwen2ForCausalLM(Qwen2Config(**sizes)))
    with torch.no_grad():  # random q/k/v biases, so a dropped bias would show
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(std=0.5)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def decoder_dir(request, tmp_path_factory) -> Path:
    return write_decoder(tmp_path_factory.mktemp(request.param), request.param)


def both_paths(llm, run):
    llm.last_token_top = False
    whole = run()
    llm.last_token_top = True
    return whole, run()


def test_scores_and_states_equal_the_whole_top_layer(decoder_dir, monkeypatch):
    llm = tiny_llm(decoder_dir)
    assert _plain_attention(llm._backbone().layers[-1])
    calls = []
    monkeypatch.setattr(llm_module, "_top_layer_at",
                        lambda *args: calls.append(1) or TOP_LAYER_AT(*args))
    seqs = llm.tokenize(PROMPTS)
    assert len({len(s) for s in seqs}) == 3  # padding differs per row
    with torch.no_grad():
        (w_logit, w_states), (f_logit, f_states) = both_paths(
            llm, lambda: llm.forward_ids(seqs, layers=[0, 2, 3]))
    assert calls == [1]  # the second pass took the shortcut, the first did not
    torch.testing.assert_close(f_logit, w_logit, rtol=0, atol=1e-5)
    for whole, fast in zip(w_states, f_states):
        torch.testing.assert_close(fast, whole, rtol=0, atol=1e-5)
    # the scorer's answer is the one transformers' own forward gives
    naive = llm.score_naive(PROMPTS)
    assert abs(llm.score(PROMPTS) - naive).max() < 1e-5


def test_lora_gradients_equal_the_whole_top_layer(decoder_dir):
    llm = tiny_llm(decoder_dir)
    llm.add_lora(r=4, alpha=8, dropout=0.0, top_layers=2)
    with torch.no_grad():  # LoRA's B starts at zero: give it a value so the path matters
        for name, p in llm.model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)
    llm.model.train()
    seqs = llm.tokenize(PROMPTS)
    labels = torch.tensor([1.0, 0.0, 1.0])

    def grads():
        llm.model.zero_grad(set_to_none=True)
        loss, _ = llm.click_loss(seqs, labels)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in llm.model.named_parameters()
                               if p.requires_grad}

    (w_loss, w_grads), (f_loss, f_grads) = both_paths(llm, grads)
    torch.testing.assert_close(f_loss, w_loss, rtol=0, atol=1e-6)
    assert w_grads.keys() == f_grads.keys() and len(w_grads) == 2 * 4 * 2
    for name in w_grads:
        torch.testing.assert_close(f_grads[name], w_grads[name], rtol=1e-4, atol=1e-6)


def test_generated_weights_on_the_top_layer_equal_the_whole_layer(decoder_dir):
    llm = tiny_llm(decoder_dir)
    for p in llm.model.parameters():
        p.requires_grad_(False)
    llm.model.eval()
    torch.manual_seed(0)
    weights = CollaborativeWeights(llm._backbone(), 6, CollabConfig(
        rank=4, width=16, heads=2, layers=1, top_layers=2)).eval()
    with torch.no_grad():
        for p in weights.P.values():
            p.normal_(std=0.5)
    g = torch.Generator().manual_seed(1)
    a = weights.generator(torch.randn(3, 6, generator=g), torch.randn(3, 6, generator=g))
    seqs = llm.tokenize(PROMPTS)
    states = llm.lower_states(seqs, 1)

    def scores():
        with torch.no_grad(), weights.active(a):
            return llm.logit_from_lower(states, 1)[0]

    whole, fast = both_paths(llm, scores)
    torch.testing.assert_close(fast, whole, rtol=0, atol=1e-5)
    with torch.no_grad():
        base = llm.logit_from_lower(states, 1)[0]
    assert (fast - base).abs().max() > 1e-3  # the deltas reach the shortcut's projections


def test_unknown_decoders_run_the_whole_layer(decoder_dir, monkeypatch):
    llm = tiny_llm(decoder_dir)
    top = llm._backbone().layers[-1]
    monkeypatch.setattr(top.self_attn, "sliding_window", 16, raising=False)
    assert not _plain_attention(top)
    called = []
    monkeypatch.setattr(llm_module, "_top_layer_at", lambda *args: called.append(1))
    with torch.no_grad():
        llm.forward_ids(llm.tokenize(PROMPTS[:1]))
    assert called == []
