"""Embedding maps: neighbours, agreement, UMAP, and what a smoke run stores."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from engine.errors import ConfigError
from engine.maps import MapConfig, knn_agreement, nearest_neighbours, umap_2d
from engine.store import open_run


@pytest.fixture
def vectors():
    return np.random.default_rng(0).normal(size=(40, 6))


def test_nearest_neighbours_match_sklearn(vectors):
    ours = nearest_neighbours(vectors, 5)
    nn = NearestNeighbors(n_neighbors=6, metric="cosine").fit(vectors)
    theirs = nn.kneighbors(vectors, return_distance=False)[:, 1:]
    assert all(set(a) == set(b) for a, b in zip(ours, theirs))


def test_agreement_against_a_loop(vectors):
    other = vectors + np.random.default_rng(1).normal(scale=0.8, size=vectors.shape)
    got = knn_agreement(vectors, other, 4)
    na, nb = nearest_neighbours(vectors, 4), nearest_neighbours(other, 4)
    expected = [len(set(na[i]) & set(nb[i])) / 4 for i in range(len(vectors))]
    np.testing.assert_allclose(got, expected)
    assert knn_agreement(vectors, vectors * 3.0, 4).tolist() == [1.0] * 40  # cosine: scale-free
    assert 0 < got.mean() < 1


def test_umap_is_seeded_and_two_dimensional(vectors):
    config = MapConfig(n_neighbors=5, seed=3)
    a, b = umap_2d(vectors, config), umap_2d(vectors, config)
    assert a.shape == (40, 2)
    np.testing.assert_allclose(a, b)


def test_bad_config_is_named():
    with pytest.raises(ConfigError, match="min_dist"):
        MapConfig(min_dist=2.0)


def test_smoke_run_stores_maps(smoke_store):
    with open_run(smoke_store, "smoke-run") as reader:
        emb = reader.frame("embeddings")
        agreement = reader.frame("map_agreement")
        items = reader.frame("items").set_index("item")
        stages = reader.stages()["stage"].tolist()
    assert "maps" in stages
    aligned = ["corella: LLM state", "corella: CRM state", "corella: aligned LLM",
               "corella: aligned CRM"]
    cora = ["cora: MF items", "cora: mean A(u, i)"]
    assert set(emb["space"]) == {"semantic", "llm", "behavioural", *aligned, *cora}
    per_space = emb.groupby("space")["entity_id"].nunique()
    assert (per_space[["semantic", "llm", "behavioural"]] == 60).all()
    # CoReLLa's spaces: the mapped items among those its analysed samples cover, all alike
    with open_run(smoke_store, "smoke-run") as reader:
        routing = reader.routing_for("corella")
        analysed = reader.samples_for(sample_ids=routing["sample_id"].tolist())
    covered = set(analysed["item"].astype(str)) & set(emb.loc[emb["space"] == "semantic",
                                                           "entity_id"].astype(str))
    # a method's spaces share the items they all cover; CoRA analyses CoReLLa's samples
    for space in [*aligned, *cora]:
        assert set(emb.loc[emb["space"] == space, "entity_id"].astype(str)) == covered
    assert len(covered) >= 8
    assert json.loads(emb["params"].iloc[0])["n_neighbors"] == 8
    # the 60 most popular items were mapped
    mapped = items.loc[emb["entity_id"].unique(), "popularity"]
    assert mapped.min() >= items["popularity"].sort_values().iloc[-60:].min()
    pairs = set(zip(agreement["space_a"], agreement["space_b"]))
    assert pairs == {("semantic", "llm"), ("semantic", "behavioural"), ("llm", "behavioural")} | {
        (a, b) for i, a in enumerate(aligned) for b in aligned[i + 1:]} | {tuple(cora)}
    assert agreement["agreement"].between(0, 1).all()
    assert len(agreement) == 180 + (6 + 1) * len(covered)
