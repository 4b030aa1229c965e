"""The CTR task builder: protocol, no leakage, split, segments, prompts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from engine.data.dataset import finish_frames
from engine.data.movielens import load_ml100k
from engine.data.task import TaskConfig, build_task
from engine.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def dataset(ml100k_dir):
    return load_ml100k(ml100k_dir)


@pytest.fixture(scope="module")
def task(dataset):
    return build_task(dataset, TaskConfig(history_len=8, min_history=5, prompt_history=3))


def brute_force_history(ratings: pd.DataFrame, user: str, ts: int, k: int) -> list[str]:
    """The user's items rated strictly before ts, oldest first, last k, as a loop would."""
    earlier = ratings[(ratings["user"] == user) & (ratings["timestamp"] < ts)]
    earlier = earlier.sort_values("timestamp", kind="stable")
    return earlier["item"].tolist()[-k:]


def test_history_is_strictly_earlier_and_matches_a_loop(task, dataset):
    item_ids = task.items["item"].to_numpy()
    rng = np.random.default_rng(0)
    for row in rng.choice(len(task), size=60, replace=False):
        s = task.samples.iloc[row]
        got = [item_ids[i - 1] for i in task.hist_items[row] if i > 0]
        expected = brute_force_history(dataset.interactions, s["user"], s["timestamp"], 8)
        assert got == expected
        assert s["hist_len"] >= 5


def test_ties_in_time_never_count_as_history():
    inter = pd.DataFrame({
        "user": ["a"] * 8 + ["b"] * 8,
        "item": [str(i) for i in range(8)] * 2,
        "rating": [5, 1, 4, 2, 5, 1, 4, 2] * 2,
        "timestamp": [1, 2, 3, 4, 5, 6, 6, 6] + [1, 2, 3, 4, 5, 6, 7, 8],
    })
    ds = finish_frames("t", inter, None, None, source="memory")
    task = build_task(ds, TaskConfig(history_len=10, min_history=5, split=(0.6, 0.2, 0.2)))
    a = task.samples[task.samples["user"] == "a"]
    # the three ratings at t=6 each see exactly the five ratings before t=6
    assert a["hist_len"].tolist() == [5, 5, 5]
    b = task.samples[task.samples["user"] == "b"]
    assert b["hist_len"].tolist() == [5, 6, 7]


def test_history_ratings_and_padding(task):
    levels = task.rating_levels
    assert levels.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    pad = task.hist_items == 0
    assert ((task.hist_ratings == 0) == pad).all()
    # right-aligned: once a row has an item, every later column has one too
    assert (np.diff(pad.astype(int), axis=1) <= 0).all()


def test_global_time_split_is_ordered_and_8_1_1(task):
    s = task.samples
    n = len(s)
    counts = s["split"].value_counts()
    assert counts["train"] == round(0.8 * n)
    assert counts["valid"] == round(0.1 * n)
    assert s.loc[s["split"] == "train", "timestamp"].max() <= \
        s.loc[s["split"] == "valid", "timestamp"].min()
    assert s.loc[s["split"] == "valid", "timestamp"].max() <= \
        s.loc[s["split"] == "test", "timestamp"].min()
    assert s["sample_id"].tolist() == list(range(n))
    assert task.index("test").tolist() == s.index[s["split"] == "test"].tolist()


def test_labels_follow_click_threshold(task, dataset):
    s = task.samples
    assert ((s["rating"] >= 4) == (s["label"] == 1)).all()
    strict = build_task(dataset, TaskConfig(click_threshold=5))
    assert ((strict.samples["rating"] >= 5) == (strict.samples["label"] == 1)).all()


def test_segments_match_their_definitions(task, dataset):
    s = task.samples
    train_end = s.loc[s["split"] == "train", "timestamp"].max()
    inter = dataset.interactions
    for user in s.loc[s["cold_user"], "user"].unique()[:5]:
        assert ((inter["user"] == user) & (inter["timestamp"] <= train_end)).sum() < 3
    for user in s.loc[~s["cold_user"], "user"].unique()[:5]:
        assert ((inter["user"] == user) & (inter["timestamp"] <= train_end)).sum() >= 3
    assert s["cold_user"].any() and (~s["cold_user"]).any()
    pop = task.items.set_index("item")["popularity"]
    tail_items = s.loc[s["long_tail_item"], "item"].unique()
    head_items = s.loc[~s["long_tail_item"], "item"].unique()
    assert pop[tail_items].max() < pop[head_items].min()


def test_features_have_schema_shapes(task):
    schema = task.schema
    assert task.sparse.shape == (len(task), len(schema.sparse_fields))
    names = [name for name, _ in schema.sparse_fields]
    assert names[:2] == ["user", "item"]
    assert "user_gender" in names and "item_decade" in names
    for col, (_, vocab) in enumerate(schema.sparse_fields):
        assert task.sparse[:, col].min() >= 1 and task.sparse[:, col].max() < vocab
    assert task.hist_items.shape == (len(task), 8)
    assert task.tags.shape[1] == schema.max_tags and (task.tags > 0).any(axis=1).all()


def test_prompts_show_recent_history_and_target(task):
    row = int(task.index("test")[0])
    prompt = task.prompts([row])[0]
    titles = task.items["title"].to_numpy()
    recent = [titles[i - 1] for i in task.hist_items[row, -3:]]
    older = titles[task.hist_items[row, -4] - 1]
    target = titles[task.samples["item_idx"].iat[row] - 1]
    assert prompt.startswith("Below is the rating history of a user: ")
    assert all(f'"{t}"' in prompt for t in recent)
    assert f'"{older}"' not in prompt.split("Please predict")[0] or older in recent
    assert f'like "{target}" based on' in prompt
    assert prompt.endswith("Answer:")
    level = task.hist_ratings[row, -1]
    stars = int(task.rating_levels[level - 1])
    assert f'"{recent[-1]}", {stars} star' in prompt


def test_max_users_subsamples_deterministically(dataset):
    a = build_task(dataset, TaskConfig(max_users=10, seed=3))
    b = build_task(dataset, TaskConfig(max_users=10, seed=3))
    assert a.samples["user"].nunique() <= 10
    assert a.samples["user"].tolist() == b.samples["user"].tolist()


@pytest.mark.parametrize("kwargs, text", [
    ({"history_len": 0}, "history_len"),
    ({"split": (0.5, 0.5, 0.5)}, "split"),
    ({"long_tail_share": 1.5}, "long_tail_share"),
    ({"prompt_template": "no slots"}, "{history}"),
    ({"max_users": 1}, "max_users"),
])
def test_bad_config_is_named(kwargs, text):
    with pytest.raises(ConfigError, match=text):
        TaskConfig(**kwargs)


def test_too_little_history_is_a_data_error(dataset):
    with pytest.raises(DataError, match="earlier ratings"):
        build_task(dataset, TaskConfig(min_history=10_000))


def test_unknown_split_is_named(task):
    with pytest.raises(ConfigError, match="unknown split 'tset'"):
        task.index("tset")


def test_similar_history_retrieves_the_items_nearest_the_target(dataset):
    """ReLLa's retrieval: the prompt shows the history items most similar to the target (by
    item vectors), in time order; recency is the default and unchanged."""
    import dataclasses

    task = build_task(dataset, TaskConfig(prompt_history=3, prompt_history_order="similar"))
    row = int(next(r for r in task.index("test") if (task.hist_items[r] > 0).sum() > 6))
    with pytest.raises(ConfigError, match="needs item text embeddings"):
        task.prompts([row])
    target = int(task.samples["item_idx"].iat[row])
    hist = task.hist_items[row]
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(task.items), 8))
    chosen_cols = np.flatnonzero(hist > 0)[[0, 2, 4]]  # three old items: made near the target
    for col in chosen_cols:
        vectors[hist[col] - 1] = vectors[target - 1] + 0.01 * rng.normal(size=8)
    task.use_item_vectors(vectors)
    assert list(task.prompt_history_columns(row)) == sorted(chosen_cols)
    titles = task.items["title"].to_numpy()
    history = task.prompts([row])[0].split("Please predict")[0]
    positions = [history.index(f'"{titles[hist[c] - 1]}"') for c in chosen_cols]
    assert positions == sorted(positions)  # in time order
    recent = dataclasses.replace(task, config=TaskConfig(prompt_history=3))
    assert list(recent.prompt_history_columns(row)) == list(range(len(hist) - 3, len(hist)))
    with pytest.raises(ConfigError, match="prompt_history_order must be one of"):
        TaskConfig(prompt_history_order="random")
