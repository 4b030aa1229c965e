"""CoReLLa's stage logic, alignment loss and routing on a tiny random Llama."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from engine.data.movielens import load_ml100k
from engine.data.task import TaskConfig, build_task
from engine.errors import ConfigError
from engine.methods.corella import Alignment, CoReLLa, CoReLLaConfig, best_threshold, layer_pairs
from engine.metrics import auc
from engine.models.llm import LLMConfig
from engine.models.trainer import TrainConfig
from engine.routing import binary_entropy, mixed_probs


def test_layer_pairs_spread_over_both_depths():
    assert layer_pairs(30, 6, 3) == [(10, 1), (20, 3), (30, 5)]
    assert layer_pairs(2, 4, 1) == [(2, 3)]


def test_alignment_loss_is_zero_for_identical_projections_and_has_gradients():
    torch.manual_seed(0)
    align = Alignment(8, [8, 4], dim=5)
    align.g_crm[0].load_state_dict(align.g_llm[0].state_dict())
    h = torch.randn(3, 8)
    only_first = Alignment(8, [8], dim=5)
    only_first.g_llm[0].load_state_dict(align.g_llm[0].state_dict())
    only_first.g_crm[0].load_state_dict(align.g_llm[0].state_dict())
    assert only_first([h], [h]).item() == pytest.approx(0.0, abs=1e-6)
    loss = align([h, torch.randn(3, 8)], [h, torch.randn(3, 4)])
    assert 0 < loss.item() <= 4.0  # unit vectors: squared distance at most 4
    loss.backward()
    assert align.g_crm[1].weight.grad.abs().sum() > 0


def test_best_threshold_matches_a_brute_force_search():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300).astype(float)
    p_crm = np.clip(0.5 + (labels - 0.5) * rng.random(300) * 0.6, 0.01, 0.99)
    p_llm = np.clip(labels * 0.7 + rng.random(300) * 0.3, 0, 1)
    t = best_threshold(p_crm, p_llm, labels)
    entropy = binary_entropy(p_crm)
    candidates = np.quantile(entropy, np.linspace(0, 1, 51))
    best = max(auc(labels, mixed_probs(p_crm, p_llm, entropy > c)) for c in candidates)
    best = max(best, auc(labels, p_crm))
    assert auc(labels, mixed_probs(p_crm, p_llm, entropy > t)) == pytest.approx(best)


@pytest.mark.parametrize("kwargs, text", [
    ({"stage2_samples": 0}, "stage subsets"),
    ({"loss_weights": (1.0, 1.0)}, "loss_weights"),
    ({"budget": 1.5}, "budget"),
    ({"llm_epochs": 0}, "llm_epochs must be >= 1"),
    ({"lora_top_layers": -1}, "lora_top_layers"),
])
def test_bad_config_is_named(kwargs, text):
    with pytest.raises(ConfigError, match=text):
        CoReLLaConfig(**kwargs)


@pytest.fixture(scope="module")
def fitted(ml100k_dir, tiny_llama_dir):
    task = build_task(load_ml100k(ml100k_dir), TaskConfig(prompt_history=4))
    config = CoReLLaConfig(
        crm_options={"embed_dim": 4, "deep_layers": (8,)}, stage2_samples=12,
        stage3_samples=8, llm_batch_size=4, analyse_valid=20, analyse_test=30, answers=3,
        llm=LLMConfig(model=str(tiny_llama_dir), max_length=128, score_dtype="float32"))
    method = CoReLLa("corella", config, TrainConfig(batch_size=128, max_epochs=2))
    return task, method.fit(task)


def test_stages_use_disjoint_training_subsets(fitted):
    task, method = fitted
    s2, s3 = method.stage2_rows_, method.stage3_rows_
    assert len(s2) == 12 and len(s3) == 8 and not set(s2) & set(s3)
    assert set(s2) | set(s3) <= set(task.index("train"))
    assert len(method.rows_["valid"]) == 20 and len(method.rows_["test"]) == 30


def test_training_log_has_every_stage(fitted):
    _, method = fitted
    stages = {(row["stage"], row["metric"]) for row in method.log_}
    assert {("stage2", "align_loss"), ("stage2", "crm_loss"), ("stage2", "llm_loss"),
            ("stage3", "llm_loss"), ("independent", "llm_loss")} <= stages
    assert sum(1 for r in method.log_ if r["stage"] == "stage2" and r["metric"] == "loss") == 3


def test_stage2_moves_the_crm_but_not_stage1s(fitted):
    _, method = fitted
    before = method.stage1_.model_.state_dict()
    after = method.crm_.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed  # joint training updated the CRM copy
    # the ablation routes with the untouched stage-1 CRM
    np.testing.assert_allclose(method.p_crm_stage1_["test"],  # float32 batch-size rounding
                               method.stage1_.predict(method.rows_["test"]), atol=1e-6)


def test_results_and_routing_rows(fitted):
    task, method = fitted
    results = {r.name: r for r in method.results()}
    assert list(results) == ["corella", "corella_budget20", "corella_llm", "corella_crm",
                             "corella_no_align", "corella_llm_independent"]
    main = results["corella"]
    routing = main.diagnostics["routing"]
    assert len(routing) == 50 and set(routing["split"]) == {"valid", "test"}
    np.testing.assert_allclose(routing["entropy"], binary_entropy(routing["p_crm"]))
    assert routing["answer"].notna().sum() == 3
    t = main.config["threshold"]
    test = routing[routing["split"] == "test"]
    expected = np.where(test["entropy"] > t, test["p_llm"], test["p_crm"])
    np.testing.assert_allclose(main.probs["test"], expected)
    share = results["corella_budget20"].config["llm_share_test"]
    assert share == pytest.approx(0.2, abs=0.04)
    assert results["corella_budget20"].cost["llm_calls_per_1k"] == pytest.approx(1000 * share)
    assert {"corella_lora", "corella_crm", "corella_align"} == set(main.weights)
    assert all("lora_" in k for k in main.weights["corella_lora"])
    assert main.cost["llm_ms_per_sample"] > main.cost["crm_ms_per_sample"] > 0


def test_item_vectors_before_and_after_the_alignment_projections(fitted):
    task, method = fitted
    vectors = method.results()[0].item_vectors
    assert list(vectors) == ["corella: LLM state", "corella: CRM state", "corella: aligned LLM",
                             "corella: aligned CRM"]
    rows = np.concatenate([method.rows_["valid"], method.rows_["test"]])
    items = np.sort(task.samples["item"].to_numpy()[rows])
    for ids, matrix in vectors.values():
        np.testing.assert_array_equal(ids, np.unique(items))
        assert matrix.shape[0] == len(ids) and np.isfinite(matrix).all()
    assert vectors["corella: LLM state"][1].shape[1] == method.llm_.hidden_size
    assert vectors["corella: aligned LLM"][1].shape[1] == method.config.align_dim
    # an item seen once keeps its sample's unit-norm projection; means of several are shorter
    counts = pd.Series(items).value_counts()
    single = np.isin(vectors["corella: aligned CRM"][0], counts[counts == 1].index)
    norms = np.linalg.norm(vectors["corella: aligned CRM"][1], axis=1)
    np.testing.assert_allclose(norms[single], 1.0, rtol=1e-5)
    assert (norms <= 1 + 1e-5).all()
    # the state really is the projection's input: re-project one single-sample item
    item = vectors["corella: CRM state"][0][single][0]
    row = rows[task.samples["item"].to_numpy()[rows] == item][0]
    state = method.crm_(method.stage1_.tensors_.batch(torch.tensor([row])),
                        return_hidden=True)[1][method.pairs_[-1][1]]
    want = torch.nn.functional.normalize(method.align_.g_crm[-1](state), dim=-1)
    got = vectors["corella: aligned CRM"][1][list(vectors["corella: aligned CRM"][0]).index(item)]
    np.testing.assert_allclose(got, want.detach().numpy()[0], atol=1e-5)


def test_top_layer_lora_trains_and_scores_as_its_own_llm_would(ml100k_dir, tiny_llama_dir):
    """lora_top_layers=1: LoRA only in the top layer, the two LLMs share the frozen layers'
    states when scoring, and the stored P(click) equal the adapter's own full scoring."""
    from engine.models.llm import LLMAdapter

    task = build_task(load_ml100k(ml100k_dir), TaskConfig(prompt_history=4))
    llm = LLMConfig(model=str(tiny_llama_dir), max_length=128, score_dtype="float32")
    config = CoReLLaConfig(
        crm_options={"embed_dim": 4, "deep_layers": (8,)}, stage2_samples=8,
        stage3_samples=8, llm_batch_size=4, analyse_valid=10, analyse_test=12, answers=1,
        lora_top_layers=1, llm_epochs=2, llm=llm)
    method = CoReLLa("corella", config, TrainConfig(batch_size=128, max_epochs=1)).fit(task)
    shared = method.artifacts()
    adapter = shared["llm_adapter"]
    assert isinstance(adapter, LLMAdapter) and adapter.top_layers == 1
    assert adapter.state and all(".layers.1." in k for k in adapter.state)
    direct = adapter.load().score(task.prompts(method.rows_["test"]))
    np.testing.assert_allclose(method.p_llm_["test"], direct, rtol=0, atol=1e-6)
    assert method.lower_ == {}  # the shared states are freed after fitting
    # the run's later LLM methods get the frozen states of the analysed prompts and of the
    # prompts both LLM-alone trainings learnt from (computed once for the two of them)
    states = shared["llm_lower_states"]
    assert states.split == 1 and set(states.states) == set(
        task.prompts(np.concatenate([method.stage3_rows_, *method.rows_.values()])))
    # sharing them changes no number: the same fit without any frozen-state cache
    alone = CoReLLa("corella", dataclasses.replace(config, lower_cache_mb=0),
                    TrainConfig(batch_size=128, max_epochs=1)).fit(task)
    assert "llm_lower_states" not in alone.artifacts()
    for split in ("valid", "test"):
        np.testing.assert_allclose(alone.p_llm_[split], method.p_llm_[split], rtol=0, atol=1e-6)
        np.testing.assert_allclose(alone.p_llm_independent_[split],
                                   method.p_llm_independent_[split], rtol=0, atol=1e-6)
    steps = [r for r in method.log_ if r["stage"] == "stage3"]
    assert len(steps) == 2 * 2  # llm_epochs=2 over 8 prompts in batches of 4
