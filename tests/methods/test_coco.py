"""CoCo as a method, on the synthetic ML-100k task with the tiny random Llama (fast): its
windows never leak, a zero head is its CRM exactly, contradiction elimination stops exactly
the LLM's gradient, its ablations change the output, and it stores what the Prompt pool page
reads; end to end in the smoke profile (tests/test_pipeline.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.data.movielens import load_ml100k
from engine.data.task import TaskConfig, build_task
from engine.errors import ConfigError
from engine.methods.base import analysed_rows
from engine.methods.coco import CoCo, CoCoConfig, VariantSpec, user_windows
from engine.methods.crm import CRMMethod
from engine.models.llm import LLMConfig
from engine.models.prompt_pool import PoolConfig
from engine.models.trainer import TrainConfig

CRM = {"embed_dim": 8, "deep_layers": (32, 16)}
TRAIN = TrainConfig(batch_size=256, max_epochs=2, patience=1)


@pytest.fixture(scope="module")
def task(ml100k_dir):
    return build_task(load_ml100k(ml100k_dir), TaskConfig(prompt_history=3))


@pytest.fixture(scope="module")
def config(tiny_llama_dir):
    return CoCoConfig(crm_options=CRM, window=8, train_windows=12, window_batch=4,
                      prompt_epochs=2, lora_epochs=1, lora_top_layers=1, width=16, heads=2,
                      lr=1e-2, lora_lr=1e-2, analyse_valid=6, analyse_test=10,
                      history_items=3, k_sweep=(4,), select_on_valid=False,
                      pool=PoolConfig(size=6, max_selected=3, shared_tokens=2, theta=0.2),
                      llm=LLMConfig(model=str(tiny_llama_dir), batch_size=4, max_length=128,
                                    score_dtype="float32"))


@pytest.fixture(scope="module")
def crm_run(task):
    return CRMMethod("dcnv2", "dcnv2", CRM, TRAIN).fit(task)


@pytest.fixture(scope="module")
def fitted(task, config, crm_run):
    method = CoCo("coco", config, TRAIN)
    method.use_artifacts(crm_run.artifacts())
    return method.fit(task)


@pytest.mark.parametrize(("option", "value", "message"), [
    ("window", 0, "sizes"), ("width", 30, "divisible"), ("head_lr", 0.0, "head_lr"),
    ("variants", ("lora",), "unknown variant"), ("k_sweep", (2,), "below pool.max_selected"),
])
def test_bad_configuration_stops_before_training(option, value, message):
    with pytest.raises(ConfigError, match=message):
        CoCoConfig(**{option: value})


def test_windows_hold_one_users_later_samples_and_read_only_earlier_history(task):
    windows = user_windows(task, "train", 8)
    samples = task.samples
    idx = dict(zip(task.items["item"], task.items["idx"]))
    ratings = task.ratings.assign(item_idx=task.ratings["item"].map(idx))
    assert sum(len(r) for r in windows.rows) == len(task.index("train"))
    for rows, first, user in zip(windows.rows, windows.first, windows.users):
        assert len(rows) <= 8 and rows[0] == first
        assert (task.sparse[rows, 0] == user).all()
        assert (samples["timestamp"].to_numpy()[rows] >= samples["timestamp"].iat[first]).all()
        # the snapshot (the first sample's history) holds only items the user rated before
        # that sample: none rated later, so no window sample's own or later rating
        history = set(task.hist_items[first][task.hist_items[first] > 0].tolist())
        mine = ratings[ratings["user"] == samples["user"].iat[first]]
        later = mine[mine["timestamp"] > samples["timestamp"].iat[first]]
        assert not history & set(later["item_idx"]) - set(
            mine.loc[mine["timestamp"] <= samples["timestamp"].iat[first], "item_idx"])
    kept = analysed_rows(task, 6, 10, 0)["test"]
    subset = user_windows(task, "test", 8, kept)
    assert sorted(np.concatenate(subset.rows).tolist()) == sorted(kept.tolist())


def test_it_stores_every_variant_on_the_analysed_samples(fitted, task, config, crm_run):
    assert {s: r.tolist() for s, r in fitted.rows_.items()} == {
        s: r.tolist() for s, r in analysed_rows(task, 6, 10, config.seed).items()}
    results = {r.name: r for r in fitted.results()}
    assert list(results) == ["coco", "coco_shared_only", "coco_mean_pool",
                             "coco_no_elimination", "coco_k4", "coco_crm"]
    for result in results.values():
        for split in ("valid", "test"):
            assert len(result.probs[split]) == len(fitted.rows_[split])
            assert np.isfinite(result.probs[split]).all()
    # the CRM part is the run's own DCNv2, bit for bit
    for split in ("valid", "test"):
        pos = np.searchsorted(task.index(split), fitted.rows_[split])
        np.testing.assert_allclose(results["coco_crm"].probs[split],
                                   crm_run.probs_[split][pos], rtol=1e-6)
    head = results["coco"]
    windows = sum(len(w) for w in fitted.eval_windows_.values())
    assert head.cost["llm_calls_per_1k"] == pytest.approx(1000 * windows / 16)


def test_the_ablations_change_the_output(fitted):
    coco = fitted.scores_["coco"]["test"]
    for key in ("shared_only", "mean_pool", "no_elimination", "k4"):
        assert not np.allclose(fitted.scores_[key]["test"], coco, atol=1e-7), key
    assert not np.allclose(coco, fitted.trace_["coco"]["test"]["p_crm"], atol=1e-6)


def test_a_zero_head_gives_exactly_the_crm(fitted):
    parts = fitted.build_parts(VariantSpec("coco"))
    fitted._use_lora(None)
    probs, trace = fitted.score(parts)
    for split in ("valid", "test"):
        np.testing.assert_array_equal(probs[split], trace[split]["p_crm"].to_numpy())


def test_contradiction_elimination_stops_exactly_the_llms_gradient(fitted):
    parts = fitted.parts_["coco"]
    fitted._use_lora(parts.lora)
    ids = np.arange(4)
    windows = fitted.train_windows_.take(ids)
    prefixes = [fitted.train_prefix_[i] for i in ids]
    for p in fitted.lora_params_:
        p.requires_grad_(True)
    grads = {}
    for forced in (True, False):
        for p in fitted.lora_params_:
            p.grad = None
        loss, logs = fitted.batch_loss(parts, windows, prefixes, "lora", True,
                                       force_helped=forced)
        loss.backward()
        grads[forced] = sum(float(p.grad.abs().sum()) for p in fitted.lora_params_
                            if p.grad is not None)
        # the fusion still learns from every sample
        assert float(parts.fusion.head.weight.grad.abs().sum()) > 0
        parts.fusion.zero_grad()
        parts.decoupler.zero_grad()
    for p in fitted.lora_params_:
        p.requires_grad_(False)
    assert grads[True] == 0.0
    assert grads[False] > 0.0


def test_diagnostics_for_the_prompt_pool_page(fitted, config):
    head = fitted.results()[0]
    usage = head.diagnostics["prompt_usage"]
    assert len(usage) == 16
    np.testing.assert_array_equal(usage["p_coco"].to_numpy()[:6], head.probs["valid"])
    assert usage["n_selected"].between(1, 3).all()
    first = usage["prompt_ids"].str.split(",").str[0].astype(int)
    assert (first == usage["top_prompt"]).all()
    assert (usage["prompt_weights"].str.split(",").apply(lambda v: sum(map(float, v)))
            .between(0.999, 1.001)).all()
    pool = head.diagnostics["prompt_pool"]
    assert pool["prompt"].tolist() == list(range(6))
    gram = pool[[f"cos_{j}" for j in range(6)]].to_numpy()
    np.testing.assert_allclose(np.diag(gram), 1.0, rtol=1e-5)
    np.testing.assert_allclose(gram, gram.T, atol=1e-6)
    assert pool["nearest_tokens"].str.count(r"\|").eq(4).all()
    assert pool["top_users"].sum() == fitted.task_.samples["user"].nunique()
    users = head.diagnostics["prompt_users"]
    assert len(users) == fitted.task_.samples["user"].nunique()
    assert np.isfinite(users[["x", "y"]].to_numpy()).all()
    log = head.training_log
    assert {"coco:prompts", "coco:lora", "no_elimination:lora"} <= set(log["stage"])
    assert "no_elimination:prompts" not in set(log["stage"])  # phase 1 shared with coco
    assert {"bce", "mask_rate", "l_q", "l_ortho", "perplexity", "dead_codes"} <= set(
        log["metric"])
    assert log[log["metric"] == "mask_rate"]["value"].between(0, 1).all()
    # per segment too, each step's rate a mean over that segment's samples of the batch:
    # the all-sample rate lies between the head- and tail-item rates of the same step
    lora = log[log["stage"] == "coco:lora"].pivot(index="epoch", columns="metric",
                                                    values="value")
    assert {"mask_rate:head_item", "mask_rate:warm_user"} <= set(lora.columns)
    both = lora.dropna(subset=["mask_rate:head_item", "mask_rate:long_tail_item"])
    low = both[["mask_rate:head_item", "mask_rate:long_tail_item"]].min(axis=1)
    high = both[["mask_rate:head_item", "mask_rate:long_tail_item"]].max(axis=1)
    assert len(both) and both["mask_rate"].between(low - 1e-9, high + 1e-9).all()
    assert set(head.weights) == {f"coco_{k}" for k in fitted.parts_}
    assert any(k.startswith("lora.") for k in head.weights["coco_coco"])


def test_the_llm_weights_stay_frozen(fitted, tiny_llama_dir):
    from tests.llm_fixtures import tiny_llm

    fresh = tiny_llm(tiny_llama_dir)._backbone().state_dict()
    base = fitted.llm_.model.get_base_model().model.state_dict()
    for name, tensor in fresh.items():
        key = name if name in base else name.replace(".weight", ".base_layer.weight")
        assert torch.equal(base[key], tensor), name


def test_each_phase_keeps_its_best_epoch_on_valid(task, config, crm_run):
    import dataclasses

    method = CoCo("coco", dataclasses.replace(config, select_on_valid=True, variants=(),
                                              k_sweep=(), prompt_epochs=3), TRAIN)
    method.use_artifacts(crm_run.artifacts())
    method.fit(task)
    log = method.results()[0].training_log
    for stage in ("coco:prompts", "coco:lora"):
        valid = log[(log["stage"] == stage) & (log["metric"] == "valid_auc")]["value"]
        assert len(valid) == (4 if stage == "coco:prompts" else 2)  # epoch 0 and each epoch
        chosen = method.chosen_epochs_[stage]
        assert valid.iloc[chosen] == valid.max()
    # the kept state is what is scored: its valid AUC is the last phase's best
    kept = log[(log["stage"] == "coco:lora") & (log["metric"] == "valid_auc")]["value"].max()
    from engine.metrics import auc

    assert auc(task.labels[method.rows_["valid"]], method.scores_["coco"]["valid"]) == \
        pytest.approx(kept, abs=1e-12)
