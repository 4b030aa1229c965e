"""CoRA as a method, on the synthetic ML-100k task with the tiny random Llama (fast): what it
stores, that it analyses CoReLLa's samples, that it reuses the run's frozen states and CRM
without changing a number, and that its ablations are what they say; end to end in the smoke
profile with SmolLM2."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from engine.data.movielens import load_ml100k
from engine.data.task import TaskConfig, build_task
from engine.errors import ConfigError
from engine.methods.base import LowerStates, analysed_rows, training_subsets
from engine.methods.cora import CoRA, CoRAConfig
from engine.methods.crm import CRMMethod
from engine.models.collab_weights import CollabConfig
from engine.models.llm import LLMConfig
from engine.models.trainer import TrainConfig

CRM = {"embed_dim": 8, "deep_layers": (32, 16)}
TRAIN = TrainConfig(batch_size=256, max_epochs=2, patience=1)


@pytest.fixture(scope="module")
def task(ml100k_dir):
    return build_task(load_ml100k(ml100k_dir), TaskConfig(prompt_history=3))


@pytest.fixture(scope="module")
def config(tiny_llama_dir):
    return CoRAConfig(mf_dim=8, crm_options=CRM, train_samples=16, epochs=1, batch_size=4,
                      analyse_valid=6, analyse_test=10,
                      llm=LLMConfig(model=str(tiny_llama_dir), batch_size=4, max_length=128,
                                    score_dtype="float32"),
                      collab=CollabConfig(rank=4, width=16, heads=2, layers=1, top_layers=1))


@pytest.fixture(scope="module")
def fitted(task, config):
    return CoRA("cora", config, TRAIN).fit(task)


@pytest.mark.parametrize(("option", "value", "message"), [
    ("cf", "svd", "cf must be one of"), ("mf_dim", 0, "bad CoRA sizes"),
    ("lr", 0.0, "lr must be"), ("variants", ("lora",), "unknown variant"),
    ("train_skip", -1, "train_skip must be"),
])
def test_bad_configuration_stops_before_training(option, value, message):
    with pytest.raises(ConfigError, match=message):
        CoRAConfig(**{option: value})


def test_it_analyses_corellas_samples_and_stores_every_variant(fitted, task, config):
    assert {s: r.tolist() for s, r in fitted.rows_.items()} == {
        s: r.tolist() for s, r in analysed_rows(task, 6, 10, config.seed).items()}
    results = {r.name: r for r in fitted.results()}
    assert list(results) == ["cora", "cora_base", "cora_zero_pair", "cora_shuffled_user",
                             "cora_crm", "cora_mf"]
    for name, result in results.items():
        rows = fitted.rows_ if name != "cora_mf" else {s: task.index(s) for s in ("valid",
                                                                                "test")}
        for split in ("valid", "test"):
            assert len(result.probs[split]) == len(rows[split])
            assert np.isfinite(result.probs[split]).all()
    deltas = results["cora"].diagnostics["deltas"]
    assert len(deltas) == 16 and set(deltas["split"]) == {"valid", "test"}
    assert {"p_cora", "p_base", "p_mf", "user_norm", "item_norm", "a_cos_mean", "delta_q_proj",
            "delta_k_proj", "delta_v_proj", "delta_o_proj"} <= set(deltas.columns)
    np.testing.assert_array_equal(deltas["p_cora"].to_numpy()[:6], results["cora"].probs["valid"])
    assert (deltas[[c for c in deltas if c.startswith("delta_")]] > 0).all().all()
    assert deltas["a_cos_mean"].between(-1, 1.0001).all()
    spaces = results["cora"].item_vectors
    assert set(spaces) == {"cora: MF items", "cora: mean A(u, i)"}
    assert spaces["cora: MF items"][1].shape == (len(task.items), 8)
    assert spaces["cora: mean A(u, i)"][1].shape[1] == 32 * 4  # hidden x rank, flattened
    log = results["cora"].training_log
    assert set(log["stage"]) == {"mf", "cora", "crm"}


def test_the_ablations_change_the_pair_and_nothing_else(fitted, task):
    """With both embeddings zeroed the generated weights are the same for every sample; the
    base LLM is the same LLM with the hooks inactive."""
    source = fitted.sources_["mf"]
    rows = fitted.rows_["test"]
    prompts = task.prompts(rows)
    weights = fitted.weights_["cora"]
    e_u, e_i = fitted._pair(source, rows)
    with torch.no_grad():
        a = weights.generator(torch.zeros_like(e_u), torch.zeros_like(e_i))
    assert torch.allclose(a, a[:1].expand_as(a))
    base, _ = fitted._scores(prompts, rows, None, None)
    np.testing.assert_array_equal(base, fitted.scores_["base"]["test"])
    for key in ("cora", "zero_pair", "shuffled_user"):
        assert not np.allclose(fitted.scores_[key]["test"], base, atol=1e-7), key


def test_the_runs_frozen_states_and_crm_are_reused_without_changing_a_number(fitted, task,
                                                                              config):
    crm = CRMMethod("dcnv2", "dcnv2", CRM, TRAIN).fit(task)
    lower = LowerStates(config.llm.model, fitted.split_, config.llm.max_length,
                        dict(fitted.lower_))
    again = CoRA("cora", config, TRAIN)
    again.use_artifacts({**crm.artifacts(), "llm_lower_states": lower})
    again.fit(task)
    assert again.lower_source_.startswith("read from the run")
    assert all(again.lower_[p] is state for p, state in lower.states.items())  # not recomputed
    for key in fitted.scores_:
        for split in ("valid", "test"):
            np.testing.assert_array_equal(again.scores_[key][split], fitted.scores_[key][split])
    assert again.sources_["crm"].users.data_ptr() == \
        crm.model_.embedding.tables[0].weight.data_ptr()  # read, not trained again
    for other in (LowerStates("another-model", fitted.split_, 128, lower.states),
                  LowerStates(config.llm.model, fitted.split_, 64, lower.states)):
        assert not other.usable(config.llm.model, fitted.split_, 128)


def test_train_skip_trains_on_the_prompts_whose_states_the_run_holds(fitted, task, config):
    """The demo's CoRA skips CoReLLa's stage-2 prompts: it trains on the stage-3 cut, whose
    frozen states (with the analysed prompts') come with the run, so it computes none."""
    stage2, stage3 = training_subsets(task, (8, 16), config.seed)
    prompts = [*task.prompts(stage3),
               *(p for split in ("valid", "test") for p in task.prompts(fitted.rows_[split]))]
    states: dict = {}
    fitted.llm_.fill_lower(prompts, fitted.split_, states)
    again = CoRA("cora", dataclasses.replace(config, train_skip=8, variants=()), TRAIN)
    again.use_artifacts({"llm_lower_states": LowerStates(config.llm.model, fitted.split_,
                                                         config.llm.max_length, states)})
    again.fit(task)
    assert again.train_rows_.tolist() == stage3.tolist()
    assert not set(again.train_rows_.tolist()) & set(stage2.tolist())
    assert any(k.startswith("frozen layers of 0 prompts") for k in again.stage_seconds_)


def test_states_the_run_scored_in_bfloat16_are_taken_not_recomputed(fitted, task, config):
    """CoReLLa scores its analysed prompts in bf16 on CPUs with native bf16 and trains in
    float32: CoRA (float32) takes both kinds instead of running the frozen layers again."""
    states = {p: (s.to(torch.bfloat16) if i % 2 else s)
              for i, (p, s) in enumerate(fitted.lower_.items())}
    again = CoRA("cora", dataclasses.replace(config, variants=()), TRAIN)
    again.use_artifacts({"llm_lower_states": LowerStates(config.llm.model, fitted.split_,
                                                         config.llm.max_length, states)})
    again.fit(task)
    assert "in bfloat16 and float32" in again.lower_source_
    assert any(k.startswith("frozen layers of 0 prompts") for k in again.stage_seconds_)
    assert all(s.dtype == torch.float32 for s in again.lower_.values())
    np.testing.assert_allclose(again.scores_["base"]["test"], fitted.scores_["base"]["test"],
                               rtol=0, atol=2e-2)


def test_the_runs_states_from_a_lower_layer_are_run_up_to_corAs_layers(fitted, task, config):
    """States entering layer 0 (the embeddings, as a method with weights in every layer
    would share them): CoRA runs layer 0 once per prompt and scores as if it had computed
    everything itself."""
    llm = fitted.llm_
    prompts = list(fitted.lower_)
    with torch.no_grad():
        embedded = {p: llm._backbone().embed_tokens(torch.tensor(ids))
                    for p, ids in zip(prompts, llm.tokenize(prompts))}
    again = CoRA("cora", dataclasses.replace(config, variants=()), TRAIN)
    again.use_artifacts({"llm_lower_states": LowerStates(config.llm.model, 0,
                                                         config.llm.max_length, embedded)})
    again.fit(task)
    assert again.lower_source_.endswith(f"run through layers 0-{fitted.split_ - 1} here)")
    assert any(k.startswith("layers 0-") for k in again.stage_seconds_)
    for key in ("base", "cora", "zero_pair", "shuffled_user"):
        np.testing.assert_allclose(again.scores_[key]["test"], fitted.scores_[key]["test"],
                                   rtol=0, atol=1e-5)


def test_without_the_frozen_state_cache_the_numbers_stay(fitted, task, config):
    small = dataclasses.replace(config, lower_cache_mb=0, variants=())
    method = CoRA("cora", small, TRAIN).fit(task)
    assert method.lower_source_.startswith("recomputed per batch") and not method.lower_
    for key in ("base", "cora", "zero_pair", "shuffled_user"):
        np.testing.assert_allclose(method.scores_[key]["test"], fitted.scores_[key]["test"],
                                   rtol=0, atol=1e-5)


def test_cora_with_crm_embeddings_as_its_source(task, config):
    method = CoRA("cora", dataclasses.replace(config, cf="crm", variants=()), TRAIN).fit(task)
    assert [r.name for r in method.results()] == ["cora", "cora_base", "cora_zero_pair",
                                                  "cora_shuffled_user", "cora_mf"]
    assert method.sources_["crm"].dim == 8


def test_smoke_run_stores_cora_end_to_end(smoke_store):
    from engine.store import open_run

    with open_run(smoke_store, "smoke-run") as reader:
        check_smoke_cora(reader)


def check_smoke_cora(reader) -> None:
    deltas = reader.frame("deltas")
    assert len(deltas) > 0 and deltas["p_cora"].between(0, 1).all()
    methods = set(reader.methods()["method"])
    assert {"cora", "cora_base", "cora_mf", "cora_zero_pair", "cora_shuffled_user",
            "cora_crm"} <= methods
    config = reader.methods().set_index("method").loc["cora", "config"]
    assert '"lower_states": "read from the run' in config  # CoReLLa's frozen states
