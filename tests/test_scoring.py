"""Live scoring of pairs from a stored run reproduces what the run stored for its samples."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import DuetError, StoreError
from engine.scoring import PairScorer
from engine.store import open_run


@pytest.fixture(scope="module")
def scorer(smoke_store):
    with open_run(smoke_store, "smoke-run") as reader:
        yield PairScorer(reader)


@pytest.fixture(scope="module")
def analysed(scorer):
    """Test samples CoReLLa analysed, with their stored p_crm / p_llm and predictions."""
    reader = scorer.reader
    routing = reader.routing_for("corella")
    test = routing[routing["split"] == "test"].head(6)
    samples = reader.samples_for(sample_ids=test["sample_id"].tolist())
    preds = reader.predictions_for(test["sample_id"].tolist()).pivot(
        index="sample_id", columns="method", values="prob")
    return samples.merge(test[["sample_id", "p_crm", "p_llm"]], on="sample_id").join(
        preds, on="sample_id")


def test_the_run_lists_its_stored_models(scorer):
    assert set(scorer.crm_specs()) == {"dcnv2", "deepfm", "corella_crm"}
    assert scorer.crm_specs()["corella_crm"][:1] == ("dcnv2",)
    assert scorer.llm_methods() == ["corella"]


def test_a_stored_sample_encodes_as_the_task_did(scorer, analysed):
    for row in analysed.itertuples():
        pair = scorer.pair(row.user, row.item, as_of=int(row.timestamp))
        assert pair.prompt == scorer.reader.prompt_for(row.sample_id)
        assert len(pair.history) == min(row.hist_len, scorer.schema.history_len)
        assert (pair.history["timestamp"] < row.timestamp).all()
        assert pair.own_rating == row.rating
        assert pair.batch["sparse"].shape == (1, len(scorer.schema.sparse_fields))


def test_crm_scores_reproduce_the_stored_predictions(scorer, analysed):
    for row in analysed.itertuples():
        scores = scorer.score_crms(scorer.pair(row.user, row.item, as_of=int(row.timestamp)))
        assert scores["dcnv2"] == pytest.approx(row.dcnv2, abs=1e-5)
        assert scores["deepfm"] == pytest.approx(row.deepfm, abs=1e-5)
        assert scores["corella_crm"] == pytest.approx(row.p_crm, abs=1e-5)


def test_llm_and_routed_scores_match_the_routing_table(scorer, analysed):
    row = next(analysed.itertuples())
    pair = scorer.pair(row.user, row.item, as_of=int(row.timestamp))
    # stored p_llm came from batched bf16/fp32 scoring; one prompt alone may round differently
    assert scorer.score_llm(pair, "corella") == pytest.approx(row.p_llm, abs=2e-2)
    low = scorer.score_routed(pair, "corella", threshold=-1.0)  # every entropy is above
    high = scorer.score_routed(pair, "corella", threshold=2.0)  # none is
    assert (low.route, high.route) == ("LLM", "CRM")
    assert low.p == low.p_llm and high.p == high.p_crm == pytest.approx(row.p_crm, abs=1e-5)
    assert 0 <= high.entropy <= 1


def test_a_new_pair_uses_the_whole_history(scorer):
    reader = scorer.reader
    user = str(reader.frame("users")["user"].iloc[0])
    ratings = reader.history(user)
    unseen = sorted(set(scorer.item_idx) - set(ratings["item"].astype(str)))[0]
    pair = scorer.pair(user, unseen)
    assert pair.own_rating is None
    k = scorer.schema.history_len
    assert pair.history["item"].astype(str).tolist() == \
        ratings["item"].astype(str).tail(k).tolist()
    assert f'like "{pair.title}"' in pair.prompt
    p = scorer.score_crms(pair)
    assert all(0 < v < 1 for v in p.values()) and not np.isclose(p["dcnv2"], p["deepfm"])


def test_unknown_ids_and_models_fail_clearly(scorer):
    item = next(iter(scorer.item_idx))
    user = next(iter(scorer.user_idx))
    with pytest.raises(DuetError, match="user 'nobody' is not in run smoke-run"):
        scorer.pair("nobody", item)
    with pytest.raises(DuetError, match="item 'no-item' is not in run"):
        scorer.pair(user, "no-item")
    with pytest.raises(StoreError, match="no stored CRM 'din'"):
        scorer.crm("din")
    with pytest.raises(StoreError, match="stored no LLM"):
        scorer.llm("dcnv2")


def test_generated_weights_rescore_a_stored_sample_and_move_with_the_user(scorer):
    """CoRA live: a stored analysed sample at its own time reproduces the stored base and
    CoRA probabilities; another user's embedding moves the answer on the same prompt."""
    assert scorer.generated_methods() == ["cora"]
    deltas = scorer.reader.frame("deltas")
    row = deltas[deltas["split"] == "test"].iloc[0]
    sample = scorer.reader.samples_for(sample_ids=[int(row["sample_id"])]).iloc[0]
    pair = scorer.pair(str(sample["user"]), str(sample["item"]), as_of=int(sample["timestamp"]))
    other = next(u for u in scorer.user_idx if u != pair.user)
    score = scorer.score_generated(pair, "cora", other)
    # stored: the top layers over cached frozen states in length-sorted batches
    assert score.p_base == pytest.approx(row["p_base"], abs=1e-4)
    assert score.p_cora == pytest.approx(row["p_cora"], abs=1e-4)
    assert score.swap_user == other and score.p_swapped != score.p_cora
    assert scorer.score_generated(pair, "cora").p_swapped is None
    with pytest.raises(DuetError, match="not in run"):
        scorer.score_generated(pair, "cora", "no-such-user")
    with pytest.raises(StoreError, match="stored no generated weights"):
        scorer.generated("corella")
