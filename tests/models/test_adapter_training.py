"""LoRA in the top layers only: the split forward is the full forward, the frozen layers'
states computed once give the same training, and today's path is reproduced exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.errors import ConfigError
from engine.models.adapter_training import AdapterTraining, batches, train_adapter
from engine.models.llm import LLMAdapter
from tests.llm_fixtures import tiny_llm

PROMPTS = ["A user rated Toy Story 5 stars and Heat 2 stars. Will they like Casino? Answer:",
           "Is water wet? Answer:",
           "Below is the rating history of a user: Jumanji, 4 stars. Sabrina? Answer:",
           "Heat? Answer:", "A longer question about a long list of movies and a user. Answer:",
           "Yes or no? Answer:"]
LABELS = np.array([1, 0, 1, 0, 1, 0], dtype=np.float32)


def lora_llm(folder, top_layers: int):
    torch.manual_seed(0)
    llm = tiny_llm(folder)
    llm.add_lora(r=2, alpha=4, dropout=0.0, top_layers=top_layers)
    return llm


def test_the_split_forward_is_the_full_forward(tiny_llama_dir):
    llm = lora_llm(tiny_llama_dir, top_layers=1)
    assert llm.frozen_below == 1
    names = [n for n, p in llm.model.named_parameters() if p.requires_grad]
    assert names and all(".layers.1." in n for n in names)  # LoRA in the top layer only
    seqs = llm.tokenize(PROMPTS)
    with torch.no_grad():  # the decoder's own forward
        whole, whole_states = llm.forward_ids(seqs, [0, 1, 2])
    split, split_states = llm.forward_ids(seqs, [0, 1, 2])  # grad on: the split path
    torch.testing.assert_close(split, whole, rtol=0, atol=1e-6)
    for a, b in zip(split_states, whole_states):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    from_lower, _ = llm.logit_from_lower(llm.lower_states(seqs))
    torch.testing.assert_close(from_lower, whole, rtol=0, atol=1e-6)
    split.sum().backward()
    grads = {n for n, p in llm.model.named_parameters() if p.grad is not None}
    assert grads == set(names)


def test_states_computed_once_train_exactly_as_recomputed(tiny_llama_dir):
    runs = []
    for cache_mb in (0, 64):
        llm = lora_llm(tiny_llama_dir, top_layers=1)
        calls = []
        real = llm.lower_states
        llm.lower_states = (lambda seqs, real=real, calls=calls:
                            calls.append(len(seqs)) or real(seqs))
        cfg = AdapterTraining(lr=1e-2, batch_size=2, epochs=3, top_layers=1, cache_mb=cache_mb)
        losses = train_adapter(llm, llm.tokenize(PROMPTS), LABELS, cfg)
        runs.append((losses, sum(calls), llm.lora_state()))
    (recomputed, n0, state0), (cached, n1, state1) = runs
    assert n0 == 0 and n1 == len(PROMPTS)  # each prompt's frozen part ran once
    np.testing.assert_allclose(cached, recomputed, rtol=0, atol=1e-6)
    for key in state0:
        torch.testing.assert_close(state1[key], state0[key], rtol=0, atol=1e-6)
    assert np.mean(cached[-3:]) < np.mean(cached[:3])  # it learns


def test_a_shared_cache_serves_a_second_training_without_recomputing(tiny_llama_dir):
    """The learning curve's nested prompt sets: a second adapter trained on the same prompts
    reads the first one's frozen states and trains exactly as with its own."""
    shared: dict = {}
    runs = []
    for lower in (shared, shared, None):
        llm = lora_llm(tiny_llama_dir, top_layers=1)
        calls = []
        real = llm.lower_states
        llm.lower_states = (lambda seqs, real=real, calls=calls:
                            calls.append(len(seqs)) or real(seqs))
        cfg = AdapterTraining(lr=1e-2, batch_size=2, epochs=1, top_layers=1)
        runs.append((train_adapter(llm, llm.tokenize(PROMPTS), LABELS, cfg, lower=lower),
                     sum(calls)))
    assert [n for _, n in runs] == [len(PROMPTS), 0, 0]  # the third: no cache, one pass
    assert len(shared) == len(PROMPTS)
    np.testing.assert_allclose(runs[1][0], runs[0][0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(runs[2][0], runs[0][0], rtol=0, atol=1e-6)


def test_all_layers_and_random_batches_are_todays_path(tiny_llama_dir):
    """top_layers=0, length_sorted=False: the loop CoReLLa ran before, step for step."""
    llm = lora_llm(tiny_llama_dir, top_layers=0)
    seqs = llm.tokenize(PROMPTS)
    cfg = AdapterTraining(lr=1e-2, batch_size=2, epochs=2, length_sorted=False)
    losses = train_adapter(llm, seqs, LABELS, cfg)
    old = lora_llm(tiny_llama_dir, top_layers=0)
    optimiser = torch.optim.AdamW([p for p in old.model.parameters() if p.requires_grad],
                                  lr=1e-2)
    old.model.train()
    expected = []
    rows_all = np.arange(len(PROMPTS))
    for epoch in range(2):
        order = np.random.default_rng(100 + epoch).permutation(rows_all)
        for rows in (order[i:i + 2] for i in range(0, len(order), 2)):
            loss, _ = old.click_loss([seqs[r] for r in rows], torch.from_numpy(LABELS[rows]))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            expected.append(loss.item())
    np.testing.assert_allclose(losses, expected, rtol=0, atol=1e-6)


def test_length_sorted_batches_cover_every_prompt_with_less_padding():
    lengths = np.random.default_rng(0).integers(50, 400, size=103)
    padding = {}
    for length_sorted in (False, True):
        parts = batches(lengths, 8, epoch=0, seed=0, length_sorted=length_sorted)
        assert sorted(np.concatenate(parts).tolist()) == list(range(103))
        padding[length_sorted] = sum(lengths[b].max() * len(b) - lengths[b].sum()
                                     for b in parts)
    assert padding[True] < 0.2 * padding[False]
    again = batches(lengths, 8, epoch=1, seed=0, length_sorted=True)
    assert [b.tolist() for b in again] != [b.tolist() for b in parts]  # reshuffled per epoch


def test_a_top_layer_adapter_reloads_to_the_same_scores(tiny_llama_dir):
    llm = lora_llm(tiny_llama_dir, top_layers=1)
    train_adapter(llm, llm.tokenize(PROMPTS), LABELS,
                  AdapterTraining(lr=1e-2, batch_size=3, top_layers=1))
    state = llm.lora_state()
    llm.for_inference()
    assert llm.frozen_below == 0  # merged: an ordinary model again
    adapter = LLMAdapter(llm.config, 2, 4, state, "test", top_layers=1)
    np.testing.assert_allclose(adapter.load().score(PROMPTS), llm.score(PROMPTS), atol=1e-6)


@pytest.mark.parametrize("fields, message", [
    ({"lr": 0}, "lr > 0"), ({"epochs": 0}, "epochs >= 1"), ({"top_layers": -1}, "top_layers"),
])
def test_bad_settings_stop_with_a_clear_error(fields, message):
    with pytest.raises(ConfigError, match=message):
        AdapterTraining(**fields)


def test_mismatched_lora_layers_and_too_many_layers_are_errors(tiny_llama_dir):
    llm = lora_llm(tiny_llama_dir, top_layers=0)
    with pytest.raises(ConfigError, match="do not match top_layers=1"):
        train_adapter(llm, llm.tokenize(PROMPTS), LABELS, AdapterTraining(top_layers=1))
    with pytest.raises(ConfigError, match="top_layers must be in 0..2"):
        tiny_llm(tiny_llama_dir).add_lora(top_layers=3)


def test_two_top_layer_llms_share_the_frozen_states_when_scoring(tiny_llama_dir):
    """CoReLLa's two LLMs differ above the frozen layers: score_above runs those once per
    prompt for both and equals scoring each through every layer."""
    lower: dict = {}
    for lr in (1e-2, 3e-2):
        llm = lora_llm(tiny_llama_dir, top_layers=1)
        train_adapter(llm, llm.tokenize(PROMPTS), LABELS,
                      AdapterTraining(lr=lr, batch_size=3, top_layers=1))
        llm.for_inference()
        before = len(lower)
        probs, states = llm.score_above(PROMPTS, 1, lower, layers=[2])
        assert before in (0, len(PROMPTS)) and len(lower) == len(PROMPTS)
        expected, expected_states = llm.score_with_states(PROMPTS, [2])
        np.testing.assert_allclose(probs, expected, rtol=0, atol=1e-6)
        np.testing.assert_allclose(states[0], expected_states[0], rtol=0, atol=1e-5)
    with pytest.raises(ConfigError, match="keeps states of layers >= 1"):
        llm.score_above(PROMPTS, 1, lower, layers=[0])
