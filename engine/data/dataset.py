"""The one shape every loader returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from engine.errors import DataError

INTERACTION_COLUMNS = ("user", "item", "rating", "timestamp")


@dataclass
class Dataset:
    """Interactions, users and items of one source, with ids as strings.

    interactions: columns user (str), item (str), rating (float32), timestamp (int64, unix s).
        The click label is derived later by the task builder (rating >= threshold).
    users: column user (str) + attribute columns (str, categorical).
    items: columns item (str), title (str), text (str, free text for the LLM/encoder),
        tags (list[str], e.g. genres; may be empty) + attribute columns (str, categorical).
    """

    name: str
    interactions: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    source: str = ""  # where it was read from, for the run record
    click_threshold: float = 4.0  # source default: rating >= this is a click
    user_attributes: list[str] = field(default_factory=list)
    item_attributes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        missing = [c for c in INTERACTION_COLUMNS if c not in self.interactions.columns]
        if missing:
            raise DataError(f"interactions lack columns {missing}", file=self.source)
        if len(self.interactions) == 0:
            raise DataError("no interactions", file=self.source)
        for col in ("item", "title", "text", "tags"):
            if col not in self.items.columns:
                raise DataError(f"items lack column '{col}'", file=self.source, field=col)
        if "user" not in self.users.columns:
            raise DataError("users lack column 'user'", file=self.source, field="user")
        self.user_attributes = [c for c in self.users.columns if c != "user"]
        self.item_attributes = [
            c for c in self.items.columns if c not in ("item", "title", "text", "tags")
        ]

    def summary(self) -> dict[str, float | int | str]:
        inter = self.interactions
        n_users = inter["user"].nunique()
        n_items = inter["item"].nunique()
        return {
            "dataset": self.name,
            "source": self.source,
            "interactions": int(len(inter)),
            "users": int(n_users),
            "items": int(n_items),
            "density": float(len(inter) / max(1, n_users * n_items)),
            "first_time": int(inter["timestamp"].min()),
            "last_time": int(inter["timestamp"].max()),
            "click_rate": float((inter["rating"] >= self.click_threshold).mean()),
        }


def finish_frames(
    name: str,
    interactions: pd.DataFrame,
    users: pd.DataFrame | None,
    items: pd.DataFrame | None,
    *,
    source: str | Path,
    click_threshold: float = 4.0,
) -> Dataset:
    """Normalise dtypes, fill users/items missing from the side tables, build the Dataset.

    Every loader ends here so the shape is identical whatever the source.
    """
    inter = interactions[list(INTERACTION_COLUMNS)].copy()
    inter["user"] = inter["user"].astype(str)
    inter["item"] = inter["item"].astype(str)
    inter["rating"] = inter["rating"].astype("float32")
    inter["timestamp"] = inter["timestamp"].astype("int64")
    inter = inter.reset_index(drop=True)
    if users is None:
        users = pd.DataFrame({"user": pd.unique(inter["user"])})
    users = users.copy()
    users["user"] = users["user"].astype(str)
    for col in users.columns:
        if col != "user":
            users[col] = users[col].fillna("").astype(str)
    known_users = set(users["user"])
    extra_users = [u for u in pd.unique(inter["user"]) if u not in known_users]
    if extra_users:
        users = pd.concat([users, pd.DataFrame({"user": extra_users})], ignore_index=True)
        users = users.fillna("")
    if items is None:
        items = pd.DataFrame({"item": pd.unique(inter["item"])})
    items = items.copy()
    items["item"] = items["item"].astype(str)
    if "title" not in items.columns:
        items["title"] = items["item"]
    if "text" not in items.columns:
        items["text"] = items["title"]
    if "tags" not in items.columns:
        items["tags"] = [[] for _ in range(len(items))]
    known_items = set(items["item"])
    extra_items = [i for i in pd.unique(inter["item"]) if i not in known_items]
    if extra_items:
        extra = pd.DataFrame({"item": extra_items, "title": extra_items, "text": extra_items})
        extra["tags"] = [[] for _ in range(len(extra))]
        items = pd.concat([items, extra], ignore_index=True)
    items["title"] = items["title"].fillna("").astype(str)
    items["text"] = items["text"].fillna("").astype(str)
    for col in items.columns:
        if col not in ("item", "title", "text", "tags"):
            items[col] = items[col].fillna("").astype(str)
    check_two_classes(inter["rating"], click_threshold, source)
    users = users.drop_duplicates("user").reset_index(drop=True)
    items = items.drop_duplicates("item").reset_index(drop=True)
    return Dataset(
        name=name,
        interactions=inter,
        users=users,
        items=items,
        source=str(source),
        click_threshold=click_threshold,
    )


def check_two_classes(ratings: pd.Series, click_threshold: float, source: str | Path) -> None:
    """A CTR task needs clicks and non-clicks; say so before anything is trained."""
    clicks = int((ratings >= click_threshold).sum())
    if clicks == 0 or clicks == len(ratings):
        only = "clicks" if clicks else "non-clicks"
        raise DataError(
            f"every one of the {len(ratings)} interactions is one label class ({only} at "
            f"click threshold {click_threshold}); a CTR task needs both",
            file=source,
            field="rating",
        )
