"""The ICT module and the widened CRM: the new field starts with zero weights (the CRM
computes exactly what it did), K = 0 leaves only the current token, absent examples are
hidden, and the attention per example sums with the self weight to one."""

from __future__ import annotations

import pytest
import torch

from engine.data.movielens import load_ml100k
from engine.data.task import TaskConfig, build_task
from engine.errors import ConfigError
from engine.models import build_crm, crm_config, widen_from
from engine.models.ict import ICT, ICTConfig
from engine.models.trainer import TaskTensors


@pytest.fixture(scope="module")
def tensors(ml100k_dir):
    task = build_task(load_ml100k(ml100k_dir), TaskConfig(prompt_history=5))
    return task, TaskTensors(task)


@pytest.mark.parametrize("name", ["dcnv2", "deepfm", "din"])
def test_a_widened_crm_computes_what_the_plain_one_does_whatever_the_extra_field(name, tensors):
    task, t = tensors
    torch.manual_seed(0)
    plain = build_crm(name, task.schema, crm_config(name, {"embed_dim": 8})).eval()
    wide = build_crm(name, task.schema, crm_config(name, {"embed_dim": 8, "extra_fields": 1}))
    widen_from(wide.eval(), plain)
    batch = t.batch(torch.arange(100))
    extra = torch.randn(100, 1, 8)
    torch.testing.assert_close(wide({**batch, "extra_fields": extra}), plain(batch),
                               rtol=0, atol=1e-6)
    # and the extra field's weights are trainable: a gradient reaches them
    wide.train()
    wide({**batch, "extra_fields": extra}).sum().backward()
    first = next(p for n, p in wide.named_parameters() if p.grad is not None
                 and p.shape != dict(plain.named_parameters())[n].shape)
    assert first.grad.abs().sum() > 0


def test_an_extra_field_of_the_wrong_shape_is_refused(tensors):
    task, t = tensors
    wide = build_crm("dcnv2", task.schema, crm_config("dcnv2", {"embed_dim": 8,
                                                                 "extra_fields": 1}))
    with pytest.raises(ValueError, match="extra_fields has shape"):
        wide({**t.batch(torch.arange(4)), "extra_fields": torch.zeros(4, 2, 8)})


def inputs(b: int, k: int, field_dim: int = 12, cot_dim: int = 6):
    """Each sample with its own k examples: a pool of b * k rows, sample i reading rows
    i*k .. i*k + k - 1."""
    g = torch.Generator().manual_seed(0)
    return (torch.randn(b, field_dim, generator=g), torch.randn(b * k, field_dim, generator=g),
            torch.randn(b * k, cot_dim, generator=g), torch.randint(0, 2, (b * k,), generator=g),
            torch.arange(b * k).view(b, k), torch.ones(b, k, dtype=torch.bool))


def test_k_zero_leaves_only_the_current_token():
    torch.manual_seed(0)
    ict = ICT(12, 6, 4, k=0).eval()
    current, fields, cot, label, index, valid = inputs(3, 0)
    out = ict(current, fields, cot, label, index, valid)
    assert out.state.shape == (3, 4) and out.attention.shape == (3, 1)
    torch.testing.assert_close(out.attention, torch.ones(3, 1))
    assert out.recon_cos is None or out.recon_cos.numel() == 0


def test_attention_covers_the_examples_and_absent_ones_get_none():
    torch.manual_seed(0)
    ict = ICT(12, 6, 4, k=4).eval()
    current, fields, cot, label, index, valid = inputs(5, 4)
    valid[:, 2:] = False
    out = ict(current, fields, cot, label, index, valid)
    assert out.attention.shape == (5, 5) and out.recon_cos.shape == (5, 4)
    torch.testing.assert_close(out.attention.sum(1), torch.ones(5))
    assert (out.attention[:, 2:4] == 0).all() and (out.attention[:, :2] > 0).all()
    # what an absent example holds cannot matter
    absent = index[:, 2:].reshape(-1)
    fields2, cot2 = fields.clone(), cot.clone()
    fields2[absent] += 5
    cot2[absent] -= 3
    torch.testing.assert_close(ict(current, fields2, cot2, label, index, valid).state,
                               out.state)
    # what a present one holds does
    cot2[index[:, 0]] += 1
    assert not torch.allclose(ict(current, fields, cot2, label, index, valid).state, out.state)
    # and gathering from a shared pool equals giving each sample its own copies
    shared = ICT(12, 6, 4, k=2).eval()
    pool = inputs(1, 3)
    index2 = torch.tensor([[0, 2], [2, 1]])
    own = torch.stack([pool[1][index2[i]] for i in range(2)]).reshape(4, 12)
    own_cot = torch.stack([pool[2][index2[i]] for i in range(2)]).reshape(4, 6)
    own_label = torch.stack([pool[3][index2[i]] for i in range(2)]).reshape(4)
    cur = torch.randn(2, 12)
    valid2 = torch.ones(2, 2, dtype=torch.bool)
    torch.testing.assert_close(
        shared(cur, pool[1], pool[2], pool[3], index2, valid2).state,
        shared(cur, own, own_cot, own_label, torch.arange(4).view(2, 2), valid2).state)


def test_without_cot_there_are_two_tokens_per_example_and_no_reconstruction():
    ict = ICT(12, 6, 4, k=2, config=ICTConfig(use_cot=False)).eval()
    current, fields, cot, label, index, valid = inputs(2, 2)
    out = ict(current, fields, cot, label, index, valid)
    assert ict.position.num_embeddings == 5 and out.recon_cos is None
    cot2 = cot + 10  # ignored
    torch.testing.assert_close(ict(current, fields, cot2, label, index, valid).state,
                               out.state)


def test_bad_ict_sizes_are_config_errors():
    with pytest.raises(ConfigError, match="unknown pooling"):
        ICTConfig(pooling="max")
    with pytest.raises(ConfigError, match="width must divide"):
        ICTConfig(width=30, heads=4)


@pytest.mark.parametrize("use_cot", [True, False])
def test_the_last_block_reads_only_the_positions_it_needs_and_computes_what_the_full_one_does(
        use_cot):
    """The last block's queries at the read positions equal the full block's outputs there,
    and the reconstruction cosine computed in the decoder's width equals the C-wide one."""
    torch.manual_seed(0)
    ict = ICT(12, 6, 8, 3, ICTConfig(width=16, layers=2, heads=2, use_cot=use_cot)).train()
    current, fields, cot, label, index, valid = inputs(5, 3)
    valid[1, 2] = False
    out = ict(current, fields, cot, label, index, valid)
    # the reference: both blocks over every position, then the positions read
    per = ict.per_example
    parts = [ict.features(fields)] + ([ict.cot(cot)] if use_cot else []) + [ict.label(label)]
    tokens = torch.cat([torch.stack(parts, 1)[index].reshape(5, 3 * per, 16),
                        ict.features(current).unsqueeze(1)], 1)
    tokens = tokens + ict.position.weight[:tokens.shape[1]]
    token_valid = torch.cat([valid.repeat_interleave(per, 1), torch.ones(5, 1, dtype=bool)], 1)
    x = tokens
    for block in ict.blocks:
        x, _ = block(x, ict._allowed(token_valid))
    x = ict.norm(x)
    torch.testing.assert_close(out.state, ict.out(x[:, -1]), rtol=0, atol=1e-5)
    if use_cot:
        full = torch.nn.functional.cosine_similarity(ict.reconstruct(x[:, :3 * per:per]),
                                                     cot[index], dim=-1)
        torch.testing.assert_close(out.recon_cos, full, rtol=0, atol=1e-5)
    else:
        assert out.recon_cos is None
    ict.eval()  # the analysis path (explicit attention weights) reads the same positions
    torch.testing.assert_close(ict(current, fields, cot, label, index, valid).state,
                               out.state, rtol=0, atol=1e-5)
