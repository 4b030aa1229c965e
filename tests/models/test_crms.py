"""Contract tests over every registered CRM, on a tiny task the tests build."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.data.movielens import load_ml100k
from engine.data.task import TaskConfig, build_task
from engine.errors import ConfigError
from engine.models import CRM_REGISTRY, build_crm, crm_config
from engine.models.dcnv2 import DCNv2, DCNv2Config
from engine.models.trainer import TaskTensors, TrainConfig, fit, predict


@pytest.fixture(scope="module")
def task(ml100k_dir):
    return build_task(load_ml100k(ml100k_dir), TaskConfig(history_len=6))


@pytest.fixture(scope="module")
def tensors(task):
    return TaskTensors(task)


SMALL = {"embed_dim": 4, "deep_layers": (16, 8)}


@pytest.mark.parametrize("name", sorted(CRM_REGISTRY))
def test_forward_shapes_and_hidden_states(name, task, tensors):
    torch.manual_seed(0)
    model = build_crm(name, task.schema, crm_config(name, SMALL)).eval()
    batch = tensors.batch(torch.arange(32))
    logits, hidden = model(batch, return_hidden=True)
    assert logits.shape == (32,)
    assert torch.isfinite(logits).all()
    assert len(hidden) >= 3
    assert all(h.shape[0] == 32 and h.dim() == 2 for h in hidden)
    assert hidden[-1].shape[1] == 8  # the last deep block
    assert torch.equal(model(batch), logits)  # same logits with or without states


@pytest.mark.parametrize("name", sorted(CRM_REGISTRY))
def test_training_steps_lower_the_loss(name, task, tensors):
    torch.manual_seed(0)
    model = build_crm(name, task.schema, crm_config(name, {**SMALL, "dropout": 0.0}))
    batch = tensors.batch(torch.arange(64))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch), batch["label"])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_dcnv2_structures_differ_in_head_width(task):
    parallel = DCNv2(task.schema, DCNv2Config(embed_dim=4, deep_layers=(16,)))
    stacked = DCNv2(task.schema, DCNv2Config(embed_dim=4, deep_layers=(16,),
                                             structure="stacked"))
    d = parallel.embedding.n_fields * 4
    assert parallel.head.in_features == d + 16
    assert stacked.head.in_features == 16


def test_unknown_names_and_options_are_listed():
    with pytest.raises(ConfigError, match="valid: dcnv2, deepfm, din"):
        crm_config("dcn3")
    with pytest.raises(ConfigError, match="embedding_dim"):
        crm_config("dcnv2", {"embedding_dim": 8})
    with pytest.raises(ConfigError, match="'diagonal'"):
        DCNv2Config(structure="diagonal")


def test_fit_early_stops_and_restores_the_best_epoch(task, tensors):
    torch.manual_seed(0)
    model = build_crm("dcnv2", task.schema, crm_config("dcnv2", SMALL))
    config = TrainConfig(batch_size=128, max_epochs=6, patience=1, lr=5e-3)
    result = fit(model, task, config, tensors=tensors)
    aucs = [row["valid_auc"] for row in result.log]
    assert result.best_valid_auc == max(aucs)
    assert result.best_epoch == int(np.argmax(aucs)) + 1
    # stopped after `patience` epochs without gain, or at max_epochs
    assert len(aucs) == 6 or len(aucs) == result.best_epoch + 1
    valid = task.index("valid")
    from engine.metrics import auc
    assert auc(task.labels[valid], predict(model, tensors, valid)) == pytest.approx(
        result.best_valid_auc)
    assert result.train_samples_per_s > 0


def test_same_seed_same_predictions(task, tensors):
    from engine.methods import CRMMethod

    config = TrainConfig(batch_size=128, max_epochs=1)
    a = CRMMethod("a", "deepfm", SMALL, config).fit(task).result()
    b = CRMMethod("b", "deepfm", SMALL, config).fit(task).result()
    np.testing.assert_allclose(a.probs["test"], b.probs["test"])
    assert a.kind == "crm" and set(a.probs) == {"valid", "test"}
    assert len(a.probs["test"]) == len(task.index("test"))


@pytest.mark.parametrize("name", sorted(CRM_REGISTRY))
def test_initial_weights_follow_the_scheme(name, task):
    torch.manual_seed(0)
    model = build_crm(name, task.schema, crm_config(name, {"embed_dim": 8}))
    tables = [m for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert tables and linears
    for table in tables:
        weight = table.weight.detach()
        if table.padding_idx is not None:
            assert torch.count_nonzero(weight[table.padding_idx]) == 0
        if weight.numel() > 500:  # big enough for the spread to show
            assert 0.5e-4 < float(weight.std()) < 2e-4
    for layer in linears:
        assert torch.count_nonzero(layer.bias) == 0
        fan_in, fan_out = layer.weight.shape[1], layer.weight.shape[0]
        want = (2.0 / (fan_in + fan_out)) ** 0.5  # Xavier-normal's std
        if layer.weight.numel() > 500:
            assert float(layer.weight.detach().std()) == pytest.approx(want, rel=0.2)
