"""The one shape every loader returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from engine.data.text import choose_title, clean_text, is_junk_title
from engine.errors import DataError

INTERACTION_COLUMNS = ("user", "item", "rating", "timestamp")
# optional interaction text (Amazon reviews): kept for the case browser, never in prompts
REVIEW_COLUMNS = ("summary", "review")
ITEM_COLUMNS = ("item", "title", "text", "tags", "has_text")  # the rest are attributes
FEW_WITH_TEXT = 0.5  # below this share of items with text, a load warns


@dataclass
class Dataset:
    """Interactions, users and items of one source, with ids as strings.

    interactions: columns user (str), item (str), rating (float32), timestamp (int64, unix s),
        and optionally summary/review (str; review text, shown by the case browser only).
        The click label is derived later by the task builder (rating >= threshold).
    users: column user (str) + attribute columns (str, categorical).
    items: columns item (str), title (str), text (str, free text for the LLM/encoder),
        tags (list[str], e.g. genres; may be empty), has_text (bool: the source gave the item
        a title or text, so the LLM and the maps see more than its id) + attribute columns.
    notes: what a user should know about the data (printed at load and stored with the run).
    stats: numbers behind the notes (duplicates dropped, items with text, title fallbacks).
    """

    name: str
    interactions: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    source: str = ""  # where it was read from, for the run record
    click_threshold: float = 4.0  # source default: rating >= this is a click
    user_attributes: list[str] = field(default_factory=list)
    item_attributes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [c for c in INTERACTION_COLUMNS if c not in self.interactions.columns]
        if missing:
            raise DataError(f"interactions lack columns {missing}", file=self.source)
        if len(self.interactions) == 0:
            raise DataError("no interactions", file=self.source)
        if "has_text" not in self.items.columns:
            self.items = self.items.assign(has_text=True)
        for col in ITEM_COLUMNS:
            if col not in self.items.columns:
                raise DataError(f"items lack column '{col}'", file=self.source, field=col)
        if "user" not in self.users.columns:
            raise DataError("users lack column 'user'", file=self.source, field="user")
        self.user_attributes = [c for c in self.users.columns if c != "user"]
        self.item_attributes = [c for c in self.items.columns if c not in ITEM_COLUMNS]

    @property
    def rating_kind(self) -> str:
        """"label" for 0/1 click data (a table's label column), else "rating"."""
        values = self.interactions["rating"]
        return "label" if bool(values.isin([0.0, 1.0]).all()) else "rating"

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
            "click_threshold": float(self.click_threshold),
            "click_rate": float((inter["rating"] >= self.click_threshold).mean()),
            **self.stats,
        }


def finish_frames(
    name: str,
    interactions: pd.DataFrame,
    users: pd.DataFrame | None,
    items: pd.DataFrame | None,
    *,
    source: str | Path,
    click_threshold: float = 4.0,
    items_source: str | Path | None = None,
    notes: list[str] | None = None,
) -> Dataset:
    """Normalise dtypes and text, drop exact duplicate ratings, fill users/items missing from
    the side tables, count what a user should know, build the Dataset.

    Every loader ends here so the shape is identical whatever the source. `items_source`
    names the file `items` came from (None: the source has no item text of its own side).
    """
    notes = list(notes or [])
    stats: dict[str, float] = {}
    inter = _interactions(interactions, source)
    before = len(inter)
    inter = inter.drop_duplicates(list(INTERACTION_COLUMNS)).reset_index(drop=True)
    stats["duplicates_dropped"] = before - len(inter)
    if stats["duplicates_dropped"]:
        notes.append(f"{before - len(inter):,} exact duplicate ratings (same user, item, "
                     "rating and time) were dropped")
    users = _users(users, inter)
    items, item_stats = _items(items, inter, source=items_source)
    stats.update(item_stats)
    notes += _text_notes(int(item_stats["items_with_text"]), inter["item"].nunique(),
                         items_source)
    check_two_classes(inter["rating"], click_threshold, source)
    return Dataset(name=name, interactions=inter, users=users, items=items, source=str(source),
                   click_threshold=click_threshold, notes=notes, stats=stats)


def _interactions(interactions: pd.DataFrame, source: str | Path) -> pd.DataFrame:
    columns = list(INTERACTION_COLUMNS) + [c for c in REVIEW_COLUMNS
                                           if c in interactions.columns]
    inter = interactions[columns].copy()
    inter["user"] = inter["user"].astype(str)
    inter["item"] = inter["item"].astype(str)
    inter["rating"] = inter["rating"].astype("float32")
    if not np.isfinite(inter["rating"].to_numpy()).all():  # loaders catch these with a line
        raise DataError("a rating is not a finite number", file=source, field="rating")
    inter["timestamp"] = inter["timestamp"].astype("int64")
    for col in REVIEW_COLUMNS:
        if col in inter.columns:
            inter[col] = [clean_text(v) for v in inter[col].fillna("")]
    return inter.reset_index(drop=True)


def _users(users: pd.DataFrame | None, inter: pd.DataFrame) -> pd.DataFrame:
    if users is None:
        users = pd.DataFrame({"user": pd.unique(inter["user"])})
    users = users.copy()
    users["user"] = users["user"].astype(str)
    for col in users.columns:
        if col != "user":
            users[col] = [clean_text(v) for v in users[col].fillna("").astype(str)]
    known = set(users["user"])
    extra = [u for u in pd.unique(inter["user"]) if u not in known]
    if extra:
        users = pd.concat([users, pd.DataFrame({"user": extra})], ignore_index=True)
        users = users.fillna("")
    return users.drop_duplicates("user").reset_index(drop=True)


def _items(items: pd.DataFrame | None, inter: pd.DataFrame, *, source: str | Path | None
           ) -> tuple[pd.DataFrame, dict[str, float]]:
    """Clean every text field, fall back from junk titles, add the items only the
    interactions name (id only, no text), and count how many items carry text."""
    if items is None:
        items = pd.DataFrame({"item": pd.unique(inter["item"]), "title": "", "text": ""})
    items = items.copy()
    items["item"] = items["item"].astype(str)
    for col in ("title", "text"):
        items[col] = [clean_text(v) for v in items[col].fillna("")] if col in items else ""
    if "tags" not in items.columns:
        items["tags"] = [[] for _ in range(len(items))]
    items["tags"] = [_clean_tags(t) for t in items["tags"]]
    for col in items.columns:
        if col not in ITEM_COLUMNS and col != "title_fallback":
            items[col] = [clean_text(v) for v in items[col].fillna("").astype(str)]
    fallbacks = _fix_titles(items)
    if "title_fallback" in items.columns:  # a loader that chose titles itself (Amazon)
        fallbacks += int(items.pop("title_fallback").astype(bool).sum())
    items["has_text"] = (items["title"] != "") | (items["text"] != "")
    interacted = pd.unique(inter["item"])
    matched = int(items["item"].isin(interacted).sum())
    if source is not None and len(items) and matched == 0:
        raise DataError(
            f"the items file matches none of the {len(interacted):,} items in the "
            f"interactions (its ids look like {_examples(items['item'])}, the interactions' "
            f"like {_examples(pd.Series(interacted))}); is it the right file and id column?",
            file=source)
    extra = [i for i in interacted if i not in set(items["item"])]
    if extra:
        filler = pd.DataFrame({"item": extra, "title": "", "text": "", "has_text": False})
        filler["tags"] = [[] for _ in range(len(filler))]
        items = pd.concat([items, filler], ignore_index=True)
    items = items.drop_duplicates("item").reset_index(drop=True)
    for col in items.columns:
        if col not in ITEM_COLUMNS:
            items[col] = items[col].fillna("").astype(str)
    # an item without a title is shown and prompted by its id
    items["title"] = items["title"].where(items["title"] != "", items["item"])
    items["text"] = items["text"].where(items["text"] != "", items["title"])
    used = items["item"].isin(interacted)
    with_text = int(items.loc[used, "has_text"].sum())
    return items, {"items_with_text": with_text,
                   "items_with_text_share": with_text / max(1, int(used.sum())),
                   "items_title_fallback": fallbacks}


def _fix_titles(items: pd.DataFrame) -> int:
    """Replace junk titles (markup only, leaked page code) by the first sentence of the
    item's text or its first tag; returns how many needed it."""
    count = 0
    for row in np.flatnonzero([t != "" and is_junk_title(t) for t in items["title"]]):
        tags = items["tags"].iat[row]
        title, _ = choose_title(items["title"].iat[row], items["text"].iat[row],
                                tags[0] if len(tags) else "")
        items.iat[row, items.columns.get_loc("title")] = title
        count += 1
    return count


def _clean_tags(tags: object) -> list[str]:
    if not isinstance(tags, (list, tuple, np.ndarray)):
        return []
    cleaned = (clean_text(t) for t in tags)
    return list(dict.fromkeys(t for t in cleaned if t))


def _text_notes(with_text: int, total: int, items_source: str | Path | None) -> list[str]:
    if with_text >= total:
        return []
    if items_source is None:
        return ["no item text (no items or metadata file given): the LLM and the maps see "
                "item ids only; pass one with --side"]
    share = with_text / total
    if with_text == 0:
        return [f"no item in {items_source} has a title or text: the LLM and the maps see "
                "item ids only"]
    if share < FEW_WITH_TEXT:
        return [f"only {with_text:,} of {total:,} items ({share:.0%}) have a title or text in "
                f"{items_source}; the others reach the LLM and the maps as bare ids: is it the "
                "right file?"]
    return [f"{with_text:,} of {total:,} items ({share:.0%}) have a title or text; the rest "
            "reach the LLM and the maps as bare ids"]


def _examples(ids: pd.Series, n: int = 3) -> str:
    return ", ".join(repr(str(i)[:40]) for i in ids.head(n))


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
