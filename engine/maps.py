"""Embedding maps: where items sit in the semantic spaces (the encoder over item text, the
LLM's hidden states) and in the behavioural space (the CRM's item embeddings), each reduced
to 2-D with UMAP when a run is built (never in a page request), plus a per-item agreement
score between spaces: the overlap of each item's k nearest neighbours."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from engine.data.task import CTRTask
from engine.errors import ConfigError

SPACES = ("semantic", "llm", "behavioural")


@dataclass(frozen=True)
class MapConfig:
    n_neighbors: int = 15
    min_dist: float = 0.1
    metric: str = "cosine"
    knn: int = 10  # neighbours compared for the agreement score
    max_items: int | None = None  # keep the most popular items (smoke runs)
    llm_space: bool = True  # the LLM's last-token state over the item text
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_neighbors < 2 or self.knn < 1:
            raise ConfigError(f"n_neighbors must be >= 2 and knn >= 1, got "
                              f"{self.n_neighbors}, {self.knn}")
        if not 0 <= self.min_dist <= 1:
            raise ConfigError(f"min_dist must be in [0, 1], got {self.min_dist}")


def map_items(task: CTRTask, config: MapConfig) -> pd.DataFrame:
    """The items to map: those in any sample, most popular first, capped by max_items."""
    used = task.items[task.items["item"].isin(task.samples["item"])]
    used = used.sort_values(["popularity", "idx"], ascending=[False, True])
    if config.max_items is not None:
        used = used.head(config.max_items)
    return used.reset_index(drop=True)


def umap_2d(vectors: np.ndarray, config: MapConfig) -> np.ndarray:
    """(N, d) -> (N, 2) with umap-learn; seeded, so a rebuilt run draws the same map."""
    import umap

    n_neighbors = min(config.n_neighbors, len(vectors) - 1)
    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=config.min_dist,
                        metric=config.metric, random_state=config.seed, n_jobs=1)
    return reducer.fit_transform(vectors).astype(np.float64)


def nearest_neighbours(vectors: np.ndarray, k: int) -> np.ndarray:
    """(N, k) indices of each row's k most cosine-similar other rows."""
    unit = vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    k = min(k, len(vectors) - 1)
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return top


def knn_agreement(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """Per row: the share of its k nearest neighbours in space a that are also among its k
    nearest in space b (1 = the spaces agree about this item's company, 0 = not at all)."""
    na, nb = nearest_neighbours(a, k), nearest_neighbours(b, k)
    return np.array([len(set(x) & set(y)) / na.shape[1] for x, y in zip(na, nb)])


def build_maps(items: pd.DataFrame, spaces: dict[str, np.ndarray], config: MapConfig,
               log: Callable[[str], None] = print) -> tuple[pd.DataFrame, pd.DataFrame]:
    """UMAP coordinates per space (long frame) and pairwise agreement per item."""
    params = json.dumps(asdict(config))
    coords = []
    for space, vectors in tqdm(spaces.items(), desc="UMAP", unit="space", leave=False):
        xy = umap_2d(vectors, config)
        coords.append(pd.DataFrame({"entity": "item", "entity_id": items["item"].to_numpy(),
                                    "space": space, "x": xy[:, 0], "y": xy[:, 1],
                                    "params": params}))
        log(f"  UMAP {space}: {len(vectors):,} items x {vectors.shape[1]} dims")
    names = list(spaces)
    agreement = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            agreement.append(pd.DataFrame({
                "entity_id": items["item"].to_numpy(), "space_a": a, "space_b": b,
                "k": min(config.knn, len(items) - 1),
                "agreement": knn_agreement(spaces[a], spaces[b], config.knn)}))
    return pd.concat(coords, ignore_index=True), pd.concat(agreement, ignore_index=True)


def behavioural_vectors(crm_weights: dict, items: pd.DataFrame, item_field: int) -> np.ndarray:
    """The CRM's item embedding rows (its shared item table) for the mapped items."""
    table = crm_weights[f"embedding.tables.{item_field}.weight"].float().numpy()
    return table[items["idx"].to_numpy()]
