"""LLM-CF: retrieval never leaks (no self, no later sample of the same user), is balanced and
deterministic; a zeroed ICT reproduces the backbone; the examples and their chains of thought
change predictions; the method runs in the pipeline (smoke profile). A planted writer stands
in for the LLM here (the cache and generation are tested in tests/models)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from engine.data.movielens import load_ml100k
from engine.data.task import TaskConfig, build_task
from engine.errors import ConfigError
from engine.methods.llmcf import LLMCF, LLMCFConfig, retrieve, side
from engine.models.trainer import TrainConfig, predict

CRM = {"embed_dim": 8, "deep_layers": (32, 16)}
TRAIN = TrainConfig(batch_size=256, max_epochs=3, patience=3)


def planted(prompts, labels):
    """Explanations that say the label in words (as the label-conditioned LLM's do)."""
    return [("The user enjoys action and this film delivers it. " if y else
             "The user avoids slow dramas like this one. ") * 2 for y in labels]


@pytest.fixture(scope="module")
def task(ml100k_dir):
    return build_task(load_ml100k(ml100k_dir), TaskConfig(prompt_history=5))


@pytest.fixture(scope="module")
def fitted(task):
    config = LLMCFConfig(crm_options=CRM, pool_size=40, variants=("no_cot", "random"))
    return LLMCF("llmcf", config, TRAIN, writer_fn=planted).fit(task)


@pytest.mark.parametrize(("option", "value", "message"), [
    ("writer", "gpt", "writer must be"), ("pool_size", 1, "pool_size must be"),
    ("k_pos", -1, "k_pos and k_neg"), ("cot_tokens", 0, "cot_tokens must be"),
    ("aux_weight", -1.0, "aux_weight and kd_lam"), ("variants", ("dro",), "unknown variant"),
])
def test_bad_configuration_stops_before_training(option, value, message):
    with pytest.raises(ConfigError, match=message):
        LLMCFConfig(**{option: value})


def test_the_pool_is_label_balanced_training_samples(fitted, task):
    pool = fitted.pool_
    assert len(pool) == 40 and pool["label"].sum() == 20
    assert set(task.samples["split"].to_numpy()[pool["row"]]) == {"train"}
    assert pool["text"].str.len().min() > 10 and pool["quality"].between(0, 1).all()
    # an explanation that says "enjoys" for a click is more consistent with it than the other
    liked = pool[pool["label"] == 1]
    assert liked["consistency"].mean() > 0 and pool["repetition"].max() < 1


def test_no_sample_retrieves_itself_or_a_later_sample_of_its_user(fitted, task):
    pos = fitted.retrieved_.pool_pos
    pool = fitted.pool_
    s = task.samples
    rows = np.repeat(np.arange(len(task)), pos.shape[1])
    got = pos.ravel()
    ok = got >= 0
    rows, got = rows[ok], got[ok]
    pool_rows = pool["row"].to_numpy()[got]
    assert (pool_rows != rows).all()
    same_user = s["user_idx"].to_numpy()[pool_rows] == s["user_idx"].to_numpy()[rows]
    later = s["timestamp"].to_numpy()[pool_rows] >= s["timestamp"].to_numpy()[rows]
    assert not (same_user & later).any()
    # the pool's own samples were candidates for others but never for themselves
    assert np.isin(pool["row"], rows).any()


def test_the_public_codes_rule_would_have_leaked(fitted, task):
    """Without our exclusion a pool sample's nearest clicked-or-not example is often itself
    (its own label-conditioned explanation); with it, never."""
    pool = fitted.pool_
    pool_side = side(task, pool["row"].to_numpy())
    query = dataclasses.replace(pool_side, user=-np.arange(len(pool)) - 1, row=-np.ones(len(pool),
                                                                                         int))
    leaky = retrieve(query, pool_side, pool["label"].to_numpy(), 2, 2)
    assert (leaky.pool_pos == np.arange(len(pool))[:, None]).any(1).mean() > 0.9
    ours = retrieve(pool_side, pool_side, pool["label"].to_numpy(), 2, 2)
    assert not (ours.pool_pos == np.arange(len(pool))[:, None]).any()


def test_retrieval_is_balanced_ordered_and_deterministic(fitted, task):
    pool = fitted.pool_
    labels = pool["label"].to_numpy()
    query = side(task, task.index("test"))
    pool_side = side(task, pool["row"].to_numpy())
    first = retrieve(query, pool_side, labels, 2, 2)
    again = retrieve(query, pool_side, labels, 2, 2)
    np.testing.assert_array_equal(first.pool_pos, again.pool_pos)
    np.testing.assert_array_equal(first.sim, again.sim)
    assert (labels[first.pool_pos].sum(1) == 2).all()  # test rows: every example allowed
    assert (np.diff(first.sim, axis=1) <= 1e-7).all()  # most similar first
    np.testing.assert_allclose(first.sim, 0.5 * first.sim_history + 0.5 * first.sim_target,
                               atol=1e-6)
    # the best clicked example is the best of all clicked ones
    q = 0
    sims = 0.5 * query.hist[q] @ pool_side.hist.T + 0.5 * query.target[q] @ pool_side.target.T
    assert np.isclose(first.sim[q][labels[first.pool_pos[q]] == 1].max(), sims[labels == 1].max(),
                      atol=1e-6)
    random = retrieve(query, pool_side, labels, 2, 2, random_seed=3)
    assert (labels[random.pool_pos].sum(1) == 2).all()
    assert (random.pool_pos != first.pool_pos).any()


def test_a_zeroed_ict_reproduces_the_backbone(fitted, task):
    before = fitted.results_["none"]["probs"]
    fitted_zero = LLMCF("llmcf", dataclasses.replace(fitted.config, aux_weight=0.0), TRAIN,
                        writer_fn=planted)
    fitted_zero.__dict__.update({k: v for k, v in fitted.__dict__.items()
                                 if k.endswith("_") and k not in ("models_", "results_")})
    fitted_zero.models_, fitted_zero.stage_seconds_, fitted_zero.log_ = {}, {}, []
    result = fitted_zero._train_in_context("llmcf", zero_ict=True)
    for split in ("valid", "test"):
        np.testing.assert_allclose(result["probs"][split], before[split], rtol=0, atol=1e-5)


def test_the_examples_and_their_explanations_change_predictions(fitted, task):
    model = fitted.models_["llmcf"]
    rows = task.index("test")
    tensors = fitted.tensors_
    tensors.arrays["examples"] = torch.from_numpy(fitted.retrieved_.pool_pos)
    base = predict(model, tensors, rows)
    np.testing.assert_allclose(base, fitted.results_["llmcf"]["probs"]["test"], atol=1e-6)
    tensors.arrays["examples"] = torch.from_numpy(fitted.random_.pool_pos)
    assert np.abs(predict(model, tensors, rows) - base).max() > 1e-4
    tensors.arrays["examples"] = torch.from_numpy(fitted.retrieved_.pool_pos)
    original = model.pool_cot.clone()
    try:
        model.pool_cot.copy_(original[torch.randperm(len(original),
                                                     generator=torch.Generator().manual_seed(0))])
        # (the planted texts are two sentences, so a shuffle moves little; but it moves)
        assert np.abs(predict(model, tensors, rows) - base).max() > 1e-5
    finally:
        model.pool_cot.copy_(original)


def test_results_store_the_pool_the_neighbours_and_every_variant(fitted, task):
    results = fitted.results()
    assert [r.name for r in results] == ["llmcf", "llmcf_none", "llmcf_no_cot", "llmcf_random"]
    assert all(r.cost["llm_calls_per_1k"] == 0 for r in results)
    head = results[0]
    cot, neighbours = head.diagnostics["cot"], head.diagnostics["neighbours"]
    assert len(cot) == 40 and cot["times_retrieved"].sum() > 0
    n_eval = len(task.index("valid")) + len(task.index("test"))
    assert neighbours["sample_id"].nunique() == n_eval
    assert set(neighbours["rank"]) == {1, 2, 3, 4}
    per_sample = neighbours.groupby("sample_id")
    assert (per_sample["attention"].sum() + per_sample["attention_self"].first()).between(
        0.999, 1.001).all()
    assert neighbours["recon_cos"].between(-1, 1).all()
    assert set(neighbours["cot_id"]) <= set(cot["cot_id"])


def test_the_backbone_is_the_runs_own_crm_when_one_was_trained(fitted, task):
    """A plain CRM of the same configuration trains to the same numbers bit for bit, which
    is what makes reading it instead of training again exact; another configuration is not
    read."""
    from engine.methods.base import crm_key
    from engine.methods.crm import CRMMethod

    crm = CRMMethod("dcnv2", "dcnv2", CRM, TRAIN).fit(task)
    for split in ("valid", "test"):
        np.testing.assert_array_equal(fitted.results_["none"]["probs"][split],
                                      crm.probs_[split])
    method = LLMCF("llmcf", fitted.config, TRAIN, writer_fn=planted)
    method.stage_seconds_, method.log_ = {}, []
    method.use_artifacts(crm.artifacts())
    reused = method._backbone()
    assert reused["probs"] is crm.probs_
    assert list(method.stage_seconds_) == ["train none: the run's own backbone, reused"]
    assert set(method.log_[0]["stage"]) == {"none"}
    other = LLMCF("llmcf", fitted.config, dataclasses.replace(TRAIN, seed=1))
    assert crm_key("dcnv2", other.model_config, other.train) not in crm.artifacts()


def test_smoke_run_stores_llmcf_end_to_end(smoke_store):
    from engine.store import open_run

    with open_run(smoke_store, "smoke-run") as reader:
        check_smoke_llmcf(reader)


def check_smoke_llmcf(reader) -> None:
    cot = reader.frame("cot")
    assert len(cot) == 8 and set(cot["label"]) == {0.0, 1.0}
    assert cot["text"].str.len().min() > 0 and cot["tokens"].between(1, 24).all()
    assert set(cot["model"]) == {"smollm2-135m"} and cot["quality"].between(0, 1).all()
    neighbours = reader.frame("neighbours")
    samples = reader.samples()
    assert neighbours["sample_id"].nunique() == int((samples["split"] != "train").sum())
    assert set(neighbours["cot_id"]) <= set(cot["cot_id"])
    # the backbone variant is the run's plain DCNv2: same seed, same init, same numbers
    wide = reader.predictions("test")
    np.testing.assert_array_equal(wide["llmcf_none"], wide["dcnv2"])  # read, not retrained
    config = reader.methods().set_index("method").loc["llmcf", "config"]
    assert '"writer": "smollm2-135m"' in config
