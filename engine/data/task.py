"""The CTR task: samples with histories, a global time split, features, segments and prompts.

Protocol (CoReLLa/ReLLa): a rating >= threshold is a click; each rating is a sample whose
features are user, item, their attributes and the user's previous K rated items (with
ratings) in time order; samples with fewer than `min_history` earlier ratings are dropped;
split 8:1:1 by global timestamp. Everything is vectorised with numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from engine.data.dataset import Dataset
from engine.data.prompts import TEMPLATE_A, format_history, render, render_parts
from engine.errors import ConfigError, DataError, quote
from engine.options import check_ranges, option

SPLITS = ("train", "valid", "test")


HISTORY_ORDERS = ("recent", "similar")


@dataclass(frozen=True)
class TaskConfig:
    """The CTR protocol; `--task key=value` sets any field (ranges are checked)."""

    # None: the source's default (MovieLens 4, Amazon 5, table 4 or 1 for a label column)
    click_threshold: float | None = None
    # K previous ratings as the history feature; memory is samples x K x 16 bytes
    history_len: int = option(30, low=1, high=200)
    min_history: int = option(5, low=0, high=100_000)  # drop samples with fewer earlier ratings
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    # most recent items the LLM sees (prompt length drives its cost)
    prompt_history: int = option(10, low=1, high=100)
    # which of the history_len earlier items the prompt shows: "recent" (the most recent) or
    # "similar" (ReLLa's semantic behaviour retrieval: the most similar to the target by item
    # text embeddings, shown in time order)
    prompt_history_order: str = "recent"
    prompt_template: str = TEMPLATE_A
    # cold-start user: fewer train-period ratings than this
    cold_user_max: int = option(3, low=0, high=1_000_000)
    # long-tail item: bottom share of items by train popularity
    long_tail_share: float = option(0.2, low=0.01, high=0.99)
    max_users: int | None = option(None, low=2)  # random subset of users (smoke profile)
    seed: int = option(0, low=0, high=2**32 - 1)

    def __post_init__(self) -> None:
        check_ranges(self)
        if len(self.split) != 3 or any(s < 0 for s in self.split) or not np.isclose(
            sum(self.split), 1.0
        ):
            raise ConfigError(f"split must be three shares summing to 1, got {self.split}")
        if self.prompt_history_order not in HISTORY_ORDERS:
            raise ConfigError(f"prompt_history_order must be one of "
                              f"{', '.join(HISTORY_ORDERS)}, got {self.prompt_history_order!r}")
        for key in ("{history}", "{target}"):
            if key not in self.prompt_template:
                raise ConfigError(f"prompt_template lacks {key}: {quote(self.prompt_template)}")
        try:
            self.prompt_template.format(history="", target="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"prompt_template may only use {{history}} and {{target}} "
                              f"(double other braces); it has {exc!r}") from exc


@dataclass(frozen=True)
class FeatureSchema:
    """What the CRMs' shared embedding front needs to size its tables."""

    sparse_fields: tuple[tuple[str, int], ...]  # (name, vocab size incl. 0 = unknown)
    item_field: int  # index of the item field; history items share its table
    n_tags: int  # tag vocab incl. 0 = padding
    max_tags: int
    history_len: int
    n_rating_levels: int  # history rating ids 1..n (0 = padding)


@dataclass(frozen=True)
class EntityCodes:
    """Per-user and per-item feature ids, row = user_idx / item_idx (row 0 = unknown).

    A sample's sparse row is (user_idx, item_idx, user_codes[user_idx], item_codes[item_idx]);
    a run stores these tables so a new user-item pair can be encoded exactly as training did.
    """

    user_codes: np.ndarray  # (n_users + 1, n_user_attributes) int64
    item_codes: np.ndarray  # (n_items + 1, n_item_attributes) int64
    item_tags: np.ndarray  # (n_items + 1, max_tags) int64 tag ids (0 pad)

    def sparse_rows(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        """(N, F) sparse ids in the schema's field order."""
        user_idx, item_idx = np.asarray(user_idx), np.asarray(item_idx)
        return np.concatenate([user_idx[:, None], item_idx[:, None],
                               self.user_codes[user_idx], self.item_codes[item_idx]],
                              axis=1).astype(np.int64)


@dataclass
class CTRTask:
    """Samples plus aligned numpy feature arrays; row i of every array is sample i."""

    name: str
    config: TaskConfig
    samples: pd.DataFrame  # sample_id, user, item, rating, label, timestamp, split, ...
    users: pd.DataFrame  # from the dataset
    items: pd.DataFrame  # from the dataset, plus idx and popularity
    ratings: pd.DataFrame  # every rating of the task's users (user, item, rating, timestamp)
    sparse: np.ndarray  # (N, F) int64 categorical ids
    tags: np.ndarray  # (N, T) int64 tag ids of the target item (0 pad)
    hist_items: np.ndarray  # (N, K) int64 item idx, right-aligned, most recent last (0 pad)
    hist_ratings: np.ndarray  # (N, K) int64 rating level ids (0 pad)
    labels: np.ndarray  # (N,) float32
    schema: FeatureSchema
    rating_levels: np.ndarray  # rating value of level id l is rating_levels[l - 1]
    click_threshold: float
    codes: EntityCodes | None = None  # what new pairs are encoded with (engine.scoring)
    notes: list[str] = field(default_factory=list)  # what a user should know (one-class splits)
    build_seconds: float = 0.0
    split_index: dict[str, np.ndarray] = field(default_factory=dict)
    # unit-norm text embedding per item (row idx - 1), for prompt_history_order="similar"
    item_vectors: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def index(self, split: str) -> np.ndarray:
        """Row positions of one split, in time order."""
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        if split not in self.split_index:
            self.split_index[split] = np.flatnonzero(self.samples["split"].to_numpy() == split)
        return self.split_index[split]

    def arrays(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The feature arrays of the given rows, as a model batch."""
        return {
            "sparse": self.sparse[rows],
            "tags": self.tags[rows],
            "hist_items": self.hist_items[rows],
            "hist_ratings": self.hist_ratings[rows],
            "label": self.labels[rows],
        }

    def use_item_vectors(self, vectors: np.ndarray) -> None:
        """Item text embeddings (row idx - 1) for similarity-retrieved prompt histories."""
        if vectors.shape[0] != len(self.items):
            raise ConfigError(f"{vectors.shape[0]} item vectors for {len(self.items)} items")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self.item_vectors = (vectors / np.clip(norms, 1e-12, None)).astype(np.float32)

    def prompt_history_columns(self, row: int) -> np.ndarray:
        """Which columns of the row's history the prompt shows, in time order: the most recent
        `prompt_history`, or with order "similar" the most similar to the target (ReLLa)."""
        k = self.config.prompt_history
        hist = self.hist_items[row]
        present = np.flatnonzero(hist > 0)
        if self.config.prompt_history_order == "recent" or len(present) <= k:
            return present[-k:]
        if self.item_vectors is None:
            raise ConfigError("prompt_history_order='similar' needs item text embeddings "
                              "(task.use_item_vectors; the pipeline computes them)")
        target = int(self.samples["item_idx"].iat[row])
        sims = self.item_vectors[hist[present] - 1] @ self.item_vectors[target - 1]
        # most similar first; ties go to the more recent item
        order = np.lexsort((-present, -sims))
        return np.sort(present[order[:k]])

    def prompts(self, rows: Sequence[int] | np.ndarray) -> list[str]:
        """Template text the LLM reads for each row (`prompt_history` of its history items:
        the most recent, or the most similar to the target)."""
        titles = self.items["title"].to_numpy()
        target = self.samples["item_idx"].to_numpy()
        out = []
        for r in np.asarray(rows):
            keep = self.prompt_history_columns(int(r))
            out.append(sample_prompt(titles, self.rating_levels, self.hist_items[r][keep],
                                     self.hist_ratings[r][keep], int(target[r]),
                                     self.config.prompt_template, len(keep) or 1))
        return out

    def prompt_parts(self, row: int, target_idx: int) -> tuple[str, str]:
        """Row `row`'s prompt with another target item (idx), cut before the target: the
        prefix (template and history) is the same for every target of this row, so its
        history is always the most recent items (retrieval would depend on the target)."""
        titles = self.items["title"].to_numpy()
        history = history_text(titles, self.rating_levels, self.hist_items[row],
                               self.hist_ratings[row], self.config.prompt_history)
        return render_parts(self.config.prompt_template, history, titles[target_idx - 1])

    def summary(self) -> dict[str, float | int]:
        s = self.samples
        out: dict[str, float | int] = {"samples": len(s), "build_seconds": self.build_seconds}
        for split in SPLITS:
            part = s[s["split"] == split]
            out[f"{split}_samples"] = len(part)
            out[f"{split}_click_rate"] = float(part["label"].mean()) if len(part) else 0.0
        out["cold_user_test_share"] = float(s.loc[s["split"] == "test", "cold_user"].mean())
        out["long_tail_test_share"] = float(s.loc[s["split"] == "test", "long_tail_item"].mean())
        return out


def sample_prompt(titles: np.ndarray, rating_levels: np.ndarray, hist_items: np.ndarray,
                  hist_levels: np.ndarray, target_idx: int, template: str, n_history: int
                  ) -> str:
    """One sample's prompt: its `n_history` most recent history items (right-aligned rows of
    item idx and rating level ids, 0 = padding) and the target item idx (titles[idx - 1])."""
    history = history_text(titles, rating_levels, hist_items, hist_levels, n_history)
    return render(template, history, titles[target_idx - 1])


def history_text(titles: np.ndarray, rating_levels: np.ndarray, hist_items: np.ndarray,
                 hist_levels: np.ndarray, n_history: int) -> str:
    """The prompt's history: the `n_history` most recent items with their ratings."""
    h_items, h_levels = hist_items[-n_history:], hist_levels[-n_history:]
    keep = h_items > 0
    return format_history([titles[i - 1] for i in h_items[keep]],
                          [float(rating_levels[lv - 1]) for lv in h_levels[keep]],
                          bool(rating_levels.max() <= 1))


def build_task(dataset: Dataset, config: TaskConfig = TaskConfig()) -> CTRTask:
    """Turn a Dataset into a CTRTask under the protocol in the module docstring."""
    import time

    start = time.perf_counter()
    threshold = (
        dataset.click_threshold if config.click_threshold is None else config.click_threshold
    )
    inter = _subsample_users(dataset.interactions, config)
    items = dataset.items.reset_index(drop=True).copy()
    items["idx"] = np.arange(1, len(items) + 1)
    item_idx = _lookup(items["item"], inter["item"])
    users = dataset.users.reset_index(drop=True)
    user_pos = _lookup(users["user"], inter["user"]) - 1

    # sort each user's ratings in time; ties keep file order (stable) but never count as history
    order = np.lexsort((inter["timestamp"].to_numpy(), user_pos))
    u = user_pos[order]
    ts = inter["timestamp"].to_numpy()[order]
    it = item_idx[order]
    rating = inter["rating"].to_numpy(dtype=np.float32)[order]
    levels, rating_level = np.unique(rating, return_inverse=True)
    rating_level = rating_level + 1

    n = len(u)
    pos = np.arange(n)
    user_start = _group_start(u == np.roll(u, 1), pos)
    # first position with the same (user, timestamp): history must be strictly earlier
    tie_start = _group_start((u == np.roll(u, 1)) & (ts == np.roll(ts, 1)), pos)
    hist_len = tie_start - user_start

    keep = hist_len >= config.min_history
    if not keep.any():
        raise DataError(
            f"no sample has {config.min_history} earlier ratings; lower min_history or "
            "bring more data", file=dataset.source, field="timestamp")
    k = config.history_len
    hist_items = np.zeros((n, k), dtype=np.int64)
    hist_ratings = np.zeros((n, k), dtype=np.int64)
    for j in range(1, k + 1):  # column k-j holds the j-th most recent earlier rating
        src = tie_start - j
        ok = src >= user_start
        hist_items[ok, k - j] = it[src[ok]]
        hist_ratings[ok, k - j] = rating_level[src[ok]]

    rows = np.flatnonzero(keep)
    samples = pd.DataFrame({
        "user": users["user"].to_numpy()[u[rows]],
        "item": items["item"].to_numpy()[it[rows] - 1],
        "user_idx": u[rows] + 1,
        "item_idx": it[rows],
        "rating": rating[rows],
        "label": (rating[rows] >= threshold).astype(np.float32),
        "timestamp": ts[rows],
        "hist_len": np.minimum(hist_len[rows], 10**9),
    })
    hist_items, hist_ratings = hist_items[rows], hist_ratings[rows]
    samples, perm = _time_split(samples, config.split)
    hist_items, hist_ratings = hist_items[perm], hist_ratings[perm]
    notes = _check_split(samples, dataset.source)
    train_end = samples.loc[samples["split"] == "train", "timestamp"].max()
    _add_segments(samples, inter, items, u_all=users["user"], train_end=train_end, config=config)

    tag_matrix, n_tags = _tag_matrix(items)
    codes, fields = _entity_codes(users, items, dataset, tag_matrix)
    sparse = codes.sparse_rows(samples["user_idx"].to_numpy(), samples["item_idx"].to_numpy())
    schema = FeatureSchema(
        sparse_fields=tuple(fields), item_field=1, n_tags=n_tags,
        max_tags=tag_matrix.shape[1], history_len=k, n_rating_levels=len(levels),
    )
    task = CTRTask(
        name=dataset.name, config=config, samples=samples, users=users, items=items,
        ratings=inter,
        sparse=sparse, tags=tag_matrix[samples["item_idx"].to_numpy()],
        hist_items=hist_items, hist_ratings=hist_ratings,
        labels=samples["label"].to_numpy(dtype=np.float32).copy(), schema=schema,
        rating_levels=levels, click_threshold=float(threshold), codes=codes, notes=notes,
    )
    task.build_seconds = time.perf_counter() - start
    return task


def _subsample_users(inter: pd.DataFrame, config: TaskConfig) -> pd.DataFrame:
    if config.max_users is None:
        return inter
    users = np.sort(pd.unique(inter["user"]))
    if len(users) <= config.max_users:
        return inter
    rng = np.random.default_rng(config.seed)
    chosen = rng.choice(users, size=config.max_users, replace=False)
    return inter[inter["user"].isin(chosen)].reset_index(drop=True)


def _lookup(keys: pd.Series, values: pd.Series) -> np.ndarray:
    """1-based position of each value in keys (keys are unique)."""
    index = pd.Index(keys)
    pos = index.get_indexer(values)
    assert (pos >= 0).all(), "finish_frames adds every interacted user and item"
    return pos + 1


def _group_start(same_as_previous: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """For sorted rows, the position where each row's run of equal keys starts."""
    same = same_as_previous.copy()
    same[0] = False
    starts = np.where(same, 0, pos)
    return np.maximum.accumulate(starts)


def _time_split(samples: pd.DataFrame, shares: tuple[float, float, float]
                ) -> tuple[pd.DataFrame, np.ndarray]:
    """Global time split; ties at a boundary are ordered by (user, item) deterministically."""
    perm = np.lexsort((samples["item_idx"].to_numpy(), samples["user_idx"].to_numpy(),
                       samples["timestamp"].to_numpy()))
    samples = samples.iloc[perm].reset_index(drop=True)
    n = len(samples)
    n_train = int(round(n * shares[0]))
    n_valid = int(round(n * shares[1]))
    split = np.full(n, "test", dtype=object)
    split[:n_train] = "train"
    split[n_train:n_train + n_valid] = "valid"
    samples.insert(0, "sample_id", np.arange(n, dtype=np.int64))
    samples["split"] = split
    return samples, perm


def _check_split(samples: pd.DataFrame, source: str) -> list[str]:
    """Empty splits and a one-class train split are errors; a one-class valid or test split
    is a note (its AUC cannot be computed, the rest still can)."""
    notes = []
    for name in SPLITS:
        part = samples.loc[samples["split"] == name, "label"]
        if len(part) == 0:
            raise DataError(f"the {name} split is empty ({len(samples)} samples in all); "
                            "bring more data or change the split", file=source)
        clicks = int(part.sum())
        if name == "train" and clicks in (0, len(part)):
            raise DataError("the train split has a single label class", file=source,
                            field="rating")
        if clicks in (0, len(part)):
            notes.append(f"the {name} split has one label class ({len(part):,} samples, "
                         f"{clicks:,} clicks): its AUC and UAUC are n/a")
    return notes


def _add_segments(samples: pd.DataFrame, inter: pd.DataFrame, items: pd.DataFrame, *,
                  u_all: pd.Series, train_end: int, config: TaskConfig) -> None:
    """cold_user: < cold_user_max ratings up to the train cutoff; long_tail_item: bottom
    long_tail_share of items by train-period popularity."""
    in_train = inter[inter["timestamp"] <= train_end]
    user_count = in_train.groupby("user").size()
    samples["user_train_ratings"] = samples["user"].map(user_count).fillna(0).astype(np.int64)
    samples["cold_user"] = samples["user_train_ratings"] < config.cold_user_max
    pop = in_train.groupby("item").size()
    items["popularity"] = items["item"].map(pop).fillna(0).astype(np.int64)
    seen = items[items["item"].isin(samples["item"])]
    cut = np.quantile(seen["popularity"].to_numpy(), config.long_tail_share)
    items["long_tail"] = items["popularity"] <= cut
    samples["long_tail_item"] = samples["item"].map(
        dict(zip(items["item"], items["long_tail"]))).astype(bool)
    samples["item_popularity"] = samples["item"].map(
        dict(zip(items["item"], items["popularity"]))).astype(np.int64)


def _entity_codes(users: pd.DataFrame, items: pd.DataFrame, dataset: Dataset,
                  tag_matrix: np.ndarray) -> tuple[EntityCodes, list[tuple[str, int]]]:
    """user, item, then user and item attributes as ids (0 = unknown), one row per entity."""
    fields = [("user", len(users) + 1), ("item", len(items) + 1)]
    user_cols, item_cols = [], []
    for attr in dataset.user_attributes:
        codes, uniq = pd.factorize(users[attr])
        user_cols.append(np.concatenate([[0], codes + 1]))
        fields.append((f"user_{attr}", len(uniq) + 1))
    for attr in dataset.item_attributes:
        codes, uniq = pd.factorize(items[attr])
        item_cols.append(np.concatenate([[0], codes + 1]))
        fields.append((f"item_{attr}", len(uniq) + 1))

    def table(cols: list[np.ndarray], n: int) -> np.ndarray:
        return np.stack(cols, axis=1).astype(np.int64) if cols else np.zeros((n + 1, 0), np.int64)

    return EntityCodes(table(user_cols, len(users)), table(item_cols, len(items)),
                       tag_matrix), fields


def _tag_matrix(items: pd.DataFrame) -> tuple[np.ndarray, int]:
    """(n_items + 1, T) tag ids per item (row 0 = padding item)."""
    vocab: dict[str, int] = {}
    width = max(1, max((len(t) for t in items["tags"]), default=1))
    mat = np.zeros((len(items) + 1, width), dtype=np.int64)
    for row, tags in enumerate(items["tags"], start=1):
        for col, tag in enumerate(tags):
            mat[row, col] = vocab.setdefault(tag, len(vocab) + 1)
    return mat, len(vocab) + 1
