"""S-LLMR: the gate, the pairs and the variants are real (on the synthetic ML-100k task with a
planted teacher: fast, no LLM), and the method runs in the pipeline (smoke profile)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from engine.data.movielens import load_ml100k
from engine.data.task import TaskConfig, build_task
from engine.errors import ConfigError
from engine.methods.sllmr import SLLMR, SLLMRConfig, TeacherPairs
from engine.metrics import auc
from engine.models.trainer import TrainConfig

CRM = {"embed_dim": 8, "deep_layers": (32, 16)}
TRAIN = TrainConfig(batch_size=256, max_epochs=3, patience=3)


def planted(cands: pd.DataFrame) -> np.ndarray:
    """The teacher knows the label for short histories (Cold) and is wrong for long ones;
    unlabelled candidates get noise."""
    rng = np.random.default_rng(0)
    label = cands["label"].to_numpy()
    right = label * 0.8 + 0.1
    return np.where(np.isnan(label), rng.random(len(cands)),
                    np.where(cands["cold"], right, 1 - right))


@pytest.fixture(scope="module")
def task(ml100k_dir):
    return build_task(load_ml100k(ml100k_dir), TaskConfig(prompt_history=5))


@pytest.fixture(scope="module")
def fitted(task):
    config = SLLMRConfig(crm_options=CRM, users=60, labelled=8, pairs_per_user=12, lam=1.0,
                         teacher="base", q="entropy")
    return SLLMR("sllmr", config, TRAIN, teacher_fn=planted).fit(task)


@pytest.mark.parametrize(("option", "value", "message"), [
    ("lam", -0.1, "lam .* must be >= 0"), ("margin", 0.0, "margin must be > 0"),
    ("gate", "learned", "unknown gate 'learned'"), ("q", "variance", "unknown q 'variance'"),
    ("teacher", "gpt", "teacher must be"), ("variants", ("global", "dro"), "unknown variant"),
])
def test_bad_configuration_stops_before_training(option, value, message):
    with pytest.raises(ConfigError, match=message):
        SLLMRConfig(**{option: value})


def test_no_candidate_appears_in_its_own_prefix(fitted, task):
    cands = fitted.candidates_
    assert set(cands["kind"]) == {"labelled", "popular", "long-tail"}
    titles = task.items["title"].to_numpy()
    for row in cands.itertuples():
        history = task.hist_items[row.anchor]
        assert row.item_idx not in set(history[history > 0])
        prefix, suffix = task.prompt_parts(row.anchor, row.item_idx)
        assert f'"{titles[row.item_idx - 1]}"' not in prefix
        assert suffix.startswith(f' "{titles[row.item_idx - 1]}"')
    # labelled candidates are the user's later training samples; the others never rated
    labelled = cands[cands["kind"] == "labelled"]
    assert labelled["label"].notna().all() and cands.loc[
        cands["kind"] != "labelled", "label"].isna().all()


def test_pairs_are_the_largest_within_user_gaps(fitted):
    pairs, cands = fitted.pairs_, fitted.candidates_
    s = cands["s_llm"].to_numpy()
    assert (s[pairs["i"]] > s[pairs["j"]]).all()
    assert (cands["user_idx"].to_numpy()[pairs["i"]]
            == cands["user_idx"].to_numpy()[pairs["j"]]).all()
    assert pairs.groupby(cands["user_idx"].to_numpy()[pairs["i"]]).size().max() <= 12


def test_zero_alpha_reproduces_the_backbone_bit_for_bit(fitted):
    pairs = fitted.pairs_
    zero = TeacherPairs(fitted.cand_tensors_, pairs["i"].to_numpy(), pairs["j"].to_numpy(),
                        lam=1.0, margin=0.5, per_step=8, seed=3, alpha=np.zeros(len(pairs)))
    model, _ = fitted._train("zero", zero)
    backbone = fitted.backbone_.state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, backbone[name]), name


def test_alpha_one_is_the_global_variant(fitted):
    reg = fitted._regulariser("global")
    assert torch.equal(reg.fixed, torch.ones(len(fitted.pairs_)))
    _, again = fitted._train("global again", reg)
    for split in ("valid", "test"):
        np.testing.assert_array_equal(again["probs"][split],
                                      fitted.results_["global"]["probs"][split])


def test_joint_gate_collapses_toward_zero(fitted):
    log = pd.concat(fitted.log_)
    alpha = log[(log["stage"] == "joint") & (log["metric"] == "mean_alpha")]["value"].to_numpy()
    assert len(alpha) >= 2 and np.all(np.diff(alpha) < 0) and alpha[-1] < 0.5


def test_reliability_gate_trusts_the_teacher_where_it_is_right(fitted, task):
    gate = fitted.gate_
    assert gate.w[0] > 0  # Cold: the planted teacher is right for short histories
    alpha = fitted.pairs_["alpha"].to_numpy()
    cold = fitted.candidates_["cold"].to_numpy()[fitted.pairs_["i"]]
    assert alpha[cold].mean() > alpha[~cold].mean()
    # gated beats global on long histories, where the planted teacher is wrong
    test = task.index("test")
    warm = ~(task.samples["hist_len"].to_numpy()[test] <= fitted.cold_cut_)
    labels = task.labels[test][warm]
    gated = auc(labels, fitted.results_["gated"]["probs"]["test"][warm])
    global_ = auc(labels, fitted.results_["global"]["probs"]["test"][warm])
    assert gated > global_


def test_results_and_diagnostics(fitted):
    results = {r.name: r for r in fitted.results()}
    assert list(results) == ["sllmr", "sllmr_none", "sllmr_global", "sllmr_pointwise",
                             "sllmr_kd", "sllmr_joint"]
    head = results["sllmr"]
    assert all(r.cost["llm_calls_per_1k"] == 0 for r in results.values())
    gates = head.diagnostics["gates"]
    assert {"alpha", "cold", "tail", "q", "hist_len", "item_popularity", "p_backbone",
            "p_sllmr"} <= set(gates.columns)
    assert gates["alpha"].between(0, 1).all()
    np.testing.assert_allclose(gates.loc[gates["split"] == "test", "p_backbone"],
                               results["sllmr_none"].probs["test"])
    pairs = head.diagnostics["pairs"]
    assert len(pairs) == len(fitted.pairs_) and pairs["label_i"].isna().any()
    metrics = set(head.training_log["metric"])
    assert {"mean_alpha", "active_hinge_share", "l_llm"} <= metrics
    assert {"w_cold", "w_tail", "w_q", "b"} <= set(
        head.training_log.loc[head.training_log["stage"] == "joint", "metric"])
    assert head.config["teacher_pair_accuracy"] == pytest.approx(
        fitted.pairs_.loc[fitted.pairs_["labelled"], "agree"].mean())


def test_an_adapter_teacher_needs_a_method_that_trains_one():
    from engine.pipeline import build_methods
    from engine.profiles import get_profile

    profile = get_profile("smoke", methods=("dcnv2", "sllmr"))
    spec = profile.methods[1]
    adapter = dataclasses.replace(spec, options={
        "config": dataclasses.replace(spec.options["config"], teacher="adapter")})
    with pytest.raises(ConfigError, match="'sllmr' needs llm_adapter"):
        build_methods(dataclasses.replace(profile, methods=(profile.methods[0], adapter)))
    # the default ("auto") takes the adapter when the run has one, else the base LLM
    assert len(build_methods(profile)) == 2
    assert len(build_methods(get_profile("smoke", methods=("corella", "sllmr")))) == 2


def test_an_auto_teacher_is_the_adapter_when_the_run_has_one(monkeypatch):
    from engine.models.llm import LLM

    method = SLLMR("sllmr", SLLMRConfig(), TRAIN)

    class Adapter:
        source = "corella"

        def load(self):
            return "adapter llm"

    method.use_artifacts({"llm_adapter": Adapter()})
    assert method._teacher_llm() == "adapter llm"
    assert method.teacher_source_ == "corella's LoRA adapter"
    monkeypatch.setattr(LLM, "__init__", lambda self, config: None)
    monkeypatch.setattr(LLM, "for_inference", lambda self: None)
    method = SLLMR("sllmr", SLLMRConfig(), TRAIN)
    method.use_artifacts({})
    assert isinstance(method._teacher_llm(), LLM)
    assert method.teacher_source_.endswith("zero-shot")
