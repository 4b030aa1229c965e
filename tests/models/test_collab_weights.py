"""CoRA's generated weights on the tiny random Llama: zero P is the base LLM exactly, samples in
a batch never mix, a merged delta equals the hook path, the LLM's own weights never move, the
delta norms match the materialised deltas, and on a planted task the pair's embeddings carry
the signal (zeroing or shuffling them loses it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.errors import ConfigError
from engine.metrics import auc
from engine.models.collab_weights import CollabConfig, CollaborativeWeights
from tests.llm_fixtures import tiny_llm

PROMPTS = ["User watched Heat (1995). Will the user like Alien (1979)? Answer:",
           "User watched Toy Story (1995), Babe (1995). Will the user like Fargo (1996)? "
           "Answer:", "Short prompt. Answer:"]


def frozen(tiny_llama_dir):
    llm = tiny_llm(tiny_llama_dir)
    for p in llm.model.parameters():
        p.requires_grad_(False)
    llm.model.eval()
    return llm


def with_weights(llm, top_layers: int = 0, cf_dim: int = 6, seed: int = 0,
                 randomise_p: bool = False) -> CollaborativeWeights:
    torch.manual_seed(seed)
    weights = CollaborativeWeights(llm._backbone(), cf_dim,
                                   CollabConfig(rank=4, width=16, heads=2, layers=1,
                                                top_layers=top_layers)).eval()
    if randomise_p:
        with torch.no_grad():
            for p in weights.P.values():
                p.normal_(std=0.5)
    return weights


def pair(n: int, dim: int = 6, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g), torch.randn(n, dim, generator=g)


@pytest.mark.parametrize("top_layers", [0, 1])
def test_zero_p_is_the_base_llm_exactly(tiny_llama_dir, top_layers):
    llm = frozen(tiny_llama_dir)
    weights = with_weights(llm, top_layers)
    seqs = llm.tokenize(PROMPTS)
    with torch.no_grad():
        base = llm.forward_ids(seqs)[0]
        with weights.active(weights.generator(*pair(len(PROMPTS)))):
            cora = llm.forward_ids(seqs)[0]
    assert torch.equal(cora, base)
    assert weights.start == (1 if top_layers else 0)
    assert len(weights.keys) == 4 * (1 if top_layers else 2)


def test_a_batch_equals_its_samples_one_by_one_and_differs_per_pair(tiny_llama_dir):
    llm = frozen(tiny_llama_dir)
    weights = with_weights(llm, randomise_p=True)
    seqs = llm.tokenize(PROMPTS[:2])
    a = weights.generator(*pair(2))
    with torch.no_grad():
        with weights.active(a):
            together = llm.forward_ids(seqs)[0]
        alone = []
        for i in range(2):
            with weights.active(a[i:i + 1]):
                alone.append(llm.forward_ids(seqs[i:i + 1])[0])
        with weights.active(a.flip(0)):  # the other pair's weights on the same prompts
            swapped = llm.forward_ids(seqs)[0]
        base = llm.forward_ids(seqs)[0]
    torch.testing.assert_close(together, torch.cat(alone), rtol=0, atol=1e-5)
    assert not torch.allclose(together, base, atol=1e-4)
    assert not torch.allclose(together, swapped, atol=1e-4)


def test_merging_one_samples_delta_reproduces_the_hook_path(tiny_llama_dir):
    llm = frozen(tiny_llama_dir)
    weights = with_weights(llm, randomise_p=True)
    seqs = llm.tokenize(PROMPTS[:1])
    with torch.no_grad():
        a = weights.generator(*pair(1))
        before = {k: v.clone() for k, v in llm.model.state_dict().items()}
        with weights.active(a):
            hooked = llm.forward_ids(seqs)[0]
        saved = weights.merge_into(a[0])
        merged = llm.forward_ids(seqs)[0]  # hooks inactive: the merged weights alone
        weights.unmerge(saved)
        restored = llm.forward_ids(seqs)[0]
    torch.testing.assert_close(merged, hooked, rtol=0, atol=1e-5)
    for key, value in llm.model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not torch.allclose(restored, hooked, atol=1e-4)


def test_delta_norms_match_the_materialised_deltas(tiny_llama_dir):
    llm = frozen(tiny_llama_dir)
    weights = with_weights(llm, randomise_p=True)
    a = weights.generator(*pair(3))
    norms = weights.delta_norms(a)
    assert sorted(norms) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    for module in norms:
        expected = torch.stack([
            torch.stack([(weights.scale * a[b] @ weights.P[f"{j}_{module}"]).norm()
                         for j in (0, 1)]).mean() for b in range(3)])
        torch.testing.assert_close(norms[module], expected, rtol=1e-5, atol=1e-6)
    # A's columns are unit vectors
    torch.testing.assert_close(a.norm(dim=1), torch.ones(3, 4), rtol=0, atol=1e-5)


def test_a_planted_pair_signal_is_learned_and_lost_without_the_pair(tiny_llama_dir):
    """The same prompt for every sample; the label is the sign of the user's first embedding
    coordinate. Only the generated weights can carry it: trained, they do; with the user
    embedding zeroed or shuffled they cannot. The LLM's own weights never move."""
    llm = frozen(tiny_llama_dir)
    before = {k: v.clone() for k, v in llm.model.state_dict().items()}
    weights = with_weights(llm, top_layers=1)
    e_u, e_i = pair(64)
    labels = (e_u[:, 0] > 0).float()
    seqs = llm.tokenize(PROMPTS[:1]) * 16
    optimiser = torch.optim.AdamW(weights.parameters(), lr=3e-3)
    states = llm.lower_states(seqs[:1], 1) * 16
    weights.train()
    for step in range(160):
        rows = torch.arange(16) + 16 * (step % 4)
        with weights.active(weights.generator(e_u[rows], e_i[rows])):
            logit = llm.logit_from_lower(states, 1)[0]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, labels[rows])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    weights.eval()

    def scores(users: torch.Tensor, items: torch.Tensor = e_i) -> np.ndarray:
        with torch.no_grad(), weights.active(weights.generator(users, items)):
            return llm.logit_from_lower(llm.lower_states(seqs[:1], 1) * 64, 1)[0].numpy()

    y = labels.numpy()
    assert auc(y, scores(e_u)) > 0.9
    zero = scores(torch.zeros_like(e_u), torch.zeros_like(e_i))
    assert np.ptp(zero) == 0 and auc(y, zero) == 0.5  # one output for every sample
    assert abs(auc(y, scores(torch.zeros_like(e_u))) - 0.5) < 0.2  # the item alone
    assert abs(auc(y, scores(e_u[torch.randperm(64, generator=torch.Generator()
                                                .manual_seed(3))])) - 0.5) < 0.2
    for key, value in llm.model.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize(("options", "message"), [
    ({"rank": 0}, "bad generator sizes"), ({"width": 10, "heads": 4}, "must divide"),
    ({"targets": ("lm_head",)}, "unknown target"), ({"top_layers": -1}, "top_layers"),
])
def test_bad_configuration_is_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        CollabConfig(**options)


def test_a_target_of_another_width_and_too_many_layers_are_refused(tiny_llama_dir):
    llm = frozen(tiny_llama_dir)
    with pytest.raises(ConfigError, match="exceeds the LLM's 2 layers"):
        CollaborativeWeights(llm._backbone(), 6, CollabConfig(top_layers=3))
    from engine.models import collab_weights

    with pytest.raises(ConfigError, match="not the hidden width"):
        collab_weights.target_modules(llm._backbone(), ("down_proj",), 0)


def test_standardised_inputs_let_small_embeddings_shape_a(tiny_llama_dir):
    """MF-scale embeddings (std ~0.05, offset) barely move A(u, i) through the input layer's
    bias; standardised with their tables' statistics they do, and the statistics travel in
    the generator's state (the live scorer loads them)."""
    weights = with_weights(frozen(tiny_llama_dir), cf_dim=16)
    g = torch.Generator().manual_seed(3)
    users = 0.3 + 0.05 * torch.randn(50, 16, generator=g)
    items = -0.2 + 0.05 * torch.randn(40, 16, generator=g)

    def spread() -> float:
        with torch.no_grad():
            a = weights.generator(users[:40], items).flatten(1)
        return float(torch.nn.functional.cosine_similarity(a, a.mean(0)[None]).mean())

    raw = spread()
    weights.generator.standardise(users, items)
    standardised = spread()
    assert raw > 0.999 and standardised < 0.95 and 1 - standardised > 100 * (1 - raw)
    state = weights.generator.state_dict()
    torch.testing.assert_close(state["user_shift"], users.mean(0))
    torch.testing.assert_close(state["item_scale"], items.std(0))
