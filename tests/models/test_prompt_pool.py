"""CoCo's parts without an LLM: prompt selection, its losses and usage statistics, the
decoupling attention and the zero-initialised fusion."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from engine.errors import ConfigError
from engine.models.knowledge_fusion import Decoupler, Fusion, helped
from engine.models.prompt_pool import PoolConfig, PromptPool, orthogonality, usage_stats


def pool(seed: int = 0, **options) -> tuple[PromptPool, torch.Tensor]:
    torch.manual_seed(seed)
    config = PoolConfig(**{"size": 8, "max_selected": 3, "theta": 0.2, **options})
    users = torch.randn(40, 12)
    p = PromptPool(config, user_dim=12, hidden=16, token_norm=2.0)
    p.init_codes(users, seed)
    return p, users


@pytest.mark.parametrize(("options", "message"), [
    ({"size": 0}, "pool size"), ({"max_selected": 9, "size": 8}, "max_selected"),
    ({"theta": 1.5}, "theta"), ({"temperature": 0.0}, "temperature"),
])
def test_bad_pool_configuration(options, message):
    with pytest.raises(ConfigError, match=message):
        PoolConfig(**options)


def test_theta_one_keeps_the_top_prompt_and_minus_one_keeps_max_selected():
    p, users = pool(theta=1.0)
    selection = p.select(users)
    assert selection.count.tolist() == [1] * len(users)
    assert (selection.ids[:, 0] == selection.all_cosines.argmax(1)).all()
    p_all = dataclasses.replace(p.config, theta=-1.0)
    p.config = p_all
    selection = p.select(users)
    assert selection.count.tolist() == [3] * len(users)
    # descending cosine, weights a softmax over the selected ones
    assert (selection.cosines[:, :-1] >= selection.cosines[:, 1:]).all()
    torch.testing.assert_close(selection.weights.sum(1), torch.ones(len(users)))


def test_selection_is_deterministic_for_a_seed_and_differs_across_seeds():
    a, users = pool(seed=3)
    b, _ = pool(seed=3)
    c, _ = pool(seed=4)
    assert torch.equal(a.select(users).ids, b.select(users).ids)
    torch.testing.assert_close(a.codes, b.codes, rtol=0, atol=0)
    assert not torch.equal(a.codes, c.codes)


def test_kmeans_start_keeps_the_token_norm_and_spreads_the_users():
    p, users = pool()
    torch.testing.assert_close(p.codes.norm(dim=-1), torch.full((8,), 2.0))
    top = p.select(users).top.numpy()
    assert len(np.unique(top)) >= 6  # k-means centres: the users spread over the pool


def test_orthogonality_is_zero_on_an_orthonormal_pool_and_counts_squared_cosines():
    q, _ = torch.linalg.qr(torch.randn(16, 16))
    assert float(orthogonality(3.0 * q[:8])) == pytest.approx(0.0, abs=1e-10)
    two = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])  # anti-parallel: the paper's sum gives -1
    assert float(orthogonality(two)) == pytest.approx(1.0)


def test_vq_loss_has_a_codebook_and_a_commitment_side():
    p, users = pool()
    selection = p.select(users)
    p.vq_loss(users, selection).backward()
    assert p.codes.grad.abs().sum() > 0 and p.project.weight.grad.abs().sum() > 0
    p.zero_grad()
    p.config = dataclasses.replace(p.config, commitment=0.0)
    p.vq_loss(users, p.select(users)).backward()
    assert p.project.weight.grad is None or float(p.project.weight.grad.abs().sum()) == 0.0


def test_usage_stats():
    assert usage_stats(np.array([0, 1, 2, 3]), 4) == (pytest.approx(4.0), 0)
    perplexity, dead = usage_stats(np.array([0, 0, 0, 0]), 4)
    assert perplexity == pytest.approx(1.0) and dead == 3


def test_a_zero_head_gives_the_crm_logit_exactly():
    torch.manual_seed(0)
    fusion = Fusion(crm_dim=10, width=8)
    crm_logit = torch.randn(5)
    logit, attention = fusion(torch.randn(5, 10), crm_logit, torch.randn(5, 3, 8),
                              torch.tensor([[0.5, 0.5, 0.0]] * 5))
    assert torch.equal(logit, crm_logit)
    assert torch.all(attention[:, 2] == 0)  # an empty slot gets no attention
    torch.testing.assert_close(attention.sum(1), torch.ones(5))


def test_decoupling_ignores_padded_states_and_gives_one_vector_per_prompt():
    torch.manual_seed(0)
    decoupler = Decoupler(hidden=16, width=8, heads=2)
    queries, states = torch.randn(2, 3, 16), torch.randn(2, 7, 16)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3], dtype=torch.bool)
    out = decoupler(queries, states, mask)
    changed = states.clone()
    changed[1, 4:] = 100.0
    assert out.shape == (2, 3, 8)
    torch.testing.assert_close(decoupler(queries, changed, mask), out)
    mean = Decoupler(hidden=16, width=8, heads=2, mode="mean")(queries, states, mask)
    assert mean.shape == (2, 1, 8)


def test_helped_compares_the_two_losses_per_sample():
    labels = torch.tensor([1.0, 1.0, 0.0])
    mask = helped(torch.tensor([2.0, -2.0, -2.0]), torch.zeros(3), labels)
    assert mask.tolist() == [True, False, True]


def test_decoupling_standardises_massive_dimensions():
    torch.manual_seed(0)
    decoupler = Decoupler(hidden=16, width=8, heads=2)
    states = torch.randn(2, 7, 16)
    states[..., 3] += 50.0  # one massive dimension on every token, as SmolLM2's final states
    decoupler.standardise(states.reshape(-1, 16))
    assert float(decoupler.shift[3]) == pytest.approx(50.0, abs=1.0)
    normed = (states - decoupler.shift) / decoupler.scale
    assert normed.reshape(-1, 16).std(0).sub(1).abs().max() < 1e-4
