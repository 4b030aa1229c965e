"""Case browser data shaping: pure pandas functions (and one plotly figure), no Streamlit.

A "case table" has one row per evaluation sample: when, which item, the rating and label,
every method's probability (one column per method), and for samples a routed method analysed
(CoReLLa's routing table) the CRM's entropy, the route at a threshold and the LLM's answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from engine.data.dataset import REVIEW_COLUMNS
from engine.routing import binary_entropy, method_settings
from ui.figures import styled

DEFAULT_METHOD = "corella"
DEFAULT_THRESHOLD = 0.5
EVAL_SPLITS = ["valid", "test"]
ROUTES = ("any", "LLM", "CRM")
SEGMENTS = {"cold-start user": "cold_user", "long-tail item": "long_tail_item"}
JUDGED = {"routed": "routed prediction (LLM where routed, else CRM)",
          "p_crm": "CRM probability (p_crm)", "p_llm": "LLM probability (p_llm)"}
DISAGREE = {"any": "any", "crm_right": "CRM right, LLM wrong",
            "llm_right": "LLM right, CRM wrong"}
BASE_COLUMNS = ["sample_id", "split", "time", "user", "item", "title", "rating", "label"]
ROUTE_COLUMNS = ["entropy", "route", "answer"]
# what a reader needs first comes first, so entropy and route show without scrolling sideways
HARD_COLUMNS = ["sample_id", "p", "error", "label", "entropy", "route", "p_crm", "p_llm",
                "title", "user", "item", "split", "time", "rating", "cold_user",
                "long_tail_item", "answer"]
TIMELINE_KINDS = ["history only", "train", "valid", "test"]
TIMELINE_COLOURS = {"history only": "#BAB0AC", "train": "#4C78A8", "valid": "#F58518",
                    "test": "#E45756"}


# --- threshold and routes ----------------------------------------------------------------

def shared_threshold(state_value: Any, methods: pd.DataFrame | None,
                     method: str = DEFAULT_METHOD) -> tuple[float, str]:
    """The threshold every page shares: the router lab's (session state) when set, else the
    routed method's configured one, else corella's, else 0.5. Returns (value, where from)."""
    if isinstance(state_value, (int, float, np.number)) and not isinstance(state_value, bool):
        return float(state_value), "router lab"
    for name in dict.fromkeys([method, DEFAULT_METHOD]):
        configured = method_settings(methods, name)["threshold"]
        if configured is not None:
            return float(configured), f"{name}'s configured threshold"
    return DEFAULT_THRESHOLD, "default"


def route_at(entropy: pd.Series, threshold: float) -> pd.Series:
    """"LLM" where entropy > threshold, "CRM" where not, None where there is no entropy."""
    entropy = pd.to_numeric(entropy, errors="coerce")
    known = entropy.notna()
    out = pd.Series([None] * len(entropy), index=entropy.index, dtype=object)
    out[known] = np.where(entropy[known].to_numpy() > threshold, "LLM", "CRM")
    return out


def routed_prob(frame: pd.DataFrame) -> pd.Series:
    """The routed method's output at the frame's routes: p_llm on "LLM", p_crm on "CRM"."""
    out = pd.Series(np.nan, index=frame.index, dtype=float)
    out[frame["route"] == "LLM"] = frame.loc[frame["route"] == "LLM", "p_llm"]
    out[frame["route"] == "CRM"] = frame.loc[frame["route"] == "CRM", "p_crm"]
    return out


def confident_wrong(prob: pd.Series, label: pd.Series, entropy: pd.Series,
                    max_entropy: float) -> pd.Series:
    """Wrong (|p - label| > 0.5) although the CRM was sure (entropy < max_entropy).
    Missing values are never confident and wrong."""
    prob, label, entropy = (pd.to_numeric(s, errors="coerce") for s in (prob, label, entropy))
    return ((prob - label).abs() > 0.5) & (entropy < max_entropy)


# --- search ------------------------------------------------------------------------------

def _natural_order(ids: pd.Series) -> dict[str, pd.Series]:
    """Sort keys for ids: numeric ids as numbers ("2" before "10"), others after them, as
    text (columns, so a search sorts without a Python call per row)."""
    numbers = pd.to_numeric(ids, errors="coerce")
    return {"is_text": numbers.isna(), "number": numbers.fillna(0), "text": ids}


# the store's internal columns are not attributes; some attributes read better renamed
HIDDEN_USER_COLUMNS = ("user", "idx")
ATTRIBUTE_NAMES = {"zip": "zip region", "age": "age"}


def _user_labels(users: pd.DataFrame, ids: pd.Series) -> pd.Series:
    """'user 5 · age 25-34 · gender M · occupation writer · zip region 1' per row, built a
    column at a time (a row-wise apply cost ~20 ms per search)."""
    labels = "user " + ids
    for column in users.columns:
        if column in HIDDEN_USER_COLUMNS:
            continue
        values = users[column]
        text = values.astype(str)
        present = values.notna() & (text != "")
        labels = labels.where(~present, labels + f" · {ATTRIBUTE_NAMES.get(column, column)} "
                              + text)
    return labels


def user_attributes_of(row: pd.Series) -> dict[str, Any]:
    return {k: v for k, v in row.items()
            if k not in HIDDEN_USER_COLUMNS and pd.notna(v) and str(v) != ""}


def search(users: pd.DataFrame, items: pd.DataFrame, query: str) -> pd.DataFrame:
    """Users whose id starts with the query and items whose id starts with it or whose title
    contains it (any case). Order: exact ids (user, item), other users, items by id prefix,
    items by title; each group in id order.
    Columns: key ("user:<id>" / "item:<id>"), kind, id, label."""
    columns = ["key", "kind", "id", "label"]
    q = (query or "").strip()
    if not q:
        return pd.DataFrame(columns=columns)
    frames = []
    uid = users["user"].astype(str)
    hit = uid.str.startswith(q)
    if hit.any():
        frames.append(pd.DataFrame({
            "kind": "user", "id": uid[hit], "label": _user_labels(users[hit], uid[hit]),
            "rank": np.where(uid[hit] == q, 0, 2), **_natural_order(uid[hit])}))
    iid = items["item"].astype(str)
    titles = items["title"].astype(str) if "title" in items else iid
    by_id = iid.str.startswith(q)
    hit = by_id | titles.str.contains(q, case=False, regex=False)
    if hit.any():
        rank = np.where(iid[hit] == q, 1, np.where(by_id[hit], 3, 4))
        frames.append(pd.DataFrame({
            "kind": "item", "id": iid[hit], "label": "item " + iid[hit] + " · " + titles[hit],
            "rank": rank, **_natural_order(iid[hit])}))
    if not frames:
        return pd.DataFrame(columns=columns)
    out = pd.concat(frames, ignore_index=True).sort_values(
        ["rank", "is_text", "number", "text"], kind="stable")
    out["key"] = out["kind"] + ":" + out["id"]
    return out[columns].reset_index(drop=True)


def parse_key(key: str | None) -> tuple[str, str] | None:
    """"user:5" -> ("user", "5"); None for anything else."""
    if not key or ":" not in key:
        return None
    kind, ident = key.split(":", 1)
    return (kind, ident) if kind in ("user", "item") else None


# --- case tables ---------------------------------------------------------------------------

def as_time(values: pd.Series) -> pd.Series:
    """Timestamps as datetimes: numbers are Unix seconds."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return values
    if pd.api.types.is_numeric_dtype(values):
        return pd.to_datetime(values, unit="s")
    return pd.to_datetime(values, errors="coerce")


def _titles(items: pd.DataFrame) -> dict[str, str]:
    if "title" not in items:
        return {}
    return dict(zip(items["item"].astype(str), items["title"].astype(str)))


def wide_predictions(predictions: pd.DataFrame) -> pd.DataFrame:
    """Long (sample_id, method, prob) -> one column per method, methods in name order."""
    if predictions.empty:
        return pd.DataFrame(index=pd.Index([], name="sample_id"))
    wide = predictions.pivot_table(index="sample_id", columns="method", values="prob",
                                   aggfunc="first")
    wide.columns.name = None
    return wide[sorted(wide.columns)]


def case_table(samples: pd.DataFrame, items: pd.DataFrame, predictions: pd.DataFrame,
               routing: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """One row per sample, in the samples' order: BASE_COLUMNS, one probability column per
    method, p_crm and p_llm, entropy / route / answer (routing of one method; None where the
    sample has no routing row), cold_user and long_tail_item when the samples have them."""
    frame = samples.reset_index(drop=True).copy()
    frame["user"] = frame["user"].astype(str)
    frame["item"] = frame["item"].astype(str)
    frame["time"] = as_time(frame["timestamp"])
    frame["title"] = frame["item"].map(_titles(items))
    wide = wide_predictions(predictions)
    methods = [m for m in wide.columns if m not in frame.columns]
    frame = frame.join(wide[methods], on="sample_id")
    route = pd.DataFrame({"sample_id": pd.Series(dtype="int64")})
    if routing is not None and not routing.empty:
        route = routing.drop_duplicates("sample_id").copy()
        if "entropy" not in route:
            route["entropy"] = binary_entropy(route["p_crm"].to_numpy())
    for column in ("p_crm", "p_llm", "entropy", "answer"):
        if column not in route:
            route[column] = pd.Series(dtype=object if column == "answer" else float)
    frame = frame.merge(route[["sample_id", "p_crm", "p_llm", "entropy", "answer"]],
                        on="sample_id", how="left")
    frame["route"] = route_at(frame["entropy"], threshold)
    frame["answer"] = frame["answer"].astype(object).where(frame["answer"].notna(), None)
    segments = [c for c in SEGMENTS.values() if c in frame]
    return frame[BASE_COLUMNS + methods + ["p_crm", "p_llm"] + ROUTE_COLUMNS + segments
                 + ["timestamp"]]


def with_alpha(table: pd.DataFrame, gates: pd.DataFrame | None) -> pd.DataFrame:
    """The case table with S-LLMR's gate alpha per sample (its first gated method's)."""
    if gates is None or gates.empty:
        return table
    first = gates[gates["method"] == sorted(gates["method"].unique())[0]]
    alpha = first.drop_duplicates("sample_id").set_index("sample_id")["alpha"]
    return table.assign(alpha=table["sample_id"].map(alpha))


def teacher_pairs(pairs: pd.DataFrame | None, user: str) -> pd.DataFrame:
    """The teacher pairs S-LLMR built for one user, with titles' items and its gate."""
    columns = ["item_i", "item_j", "kind_i", "kind_j", "s_llm_i", "s_llm_j", "label_i",
               "label_j", "alpha", "gap_before", "gap_after"]
    if pairs is None or pairs.empty:
        return pd.DataFrame(columns=columns)
    mine = pairs[pairs["user"].astype(str) == str(user)]
    return mine[[c for c in columns if c in mine]].sort_values("alpha", ascending=False)


def method_columns(table: pd.DataFrame) -> list[str]:
    fixed = set(BASE_COLUMNS + ROUTE_COLUMNS + ["p_crm", "p_llm", "timestamp", "alpha"]
                + list(SEGMENTS.values()))
    return [c for c in table.columns if c not in fixed]


def shown_columns(table: pd.DataFrame) -> list[str]:
    """What the user/item samples table shows, the decisive columns first: sample, split,
    title, label, entropy, route, every method's probability, the answer, then the rest."""
    first = ["sample_id", "split", "title", "label", "entropy", "route"]
    first += ["alpha"] if "alpha" in table else []
    rest = [c for c in BASE_COLUMNS if c not in first]
    return first + method_columns(table) + ["answer"] + rest


def hardest_cases(cases: pd.DataFrame, *, judged: str = "routed", route: str = "any",
                  wrong_only: bool = False, max_entropy: float = 0.5,
                  segments: Iterable[str] = (), disagree: str = "any") -> pd.DataFrame:
    """Filter a case table (routed samples) to the hard ones, worst first.

    `p` is the judged probability ("routed", "p_crm", "p_llm" or a method column) and
    `error` = |p - label|. route: "any", "LLM" or "CRM" (at the table's threshold);
    wrong_only keeps the confident and wrong (error > 0.5, CRM entropy < max_entropy);
    segments (keys of SEGMENTS) must all hold; disagree (keys of DISAGREE) keeps the samples
    where one of the routed method's CRM and LLM is right (|p - label| < 0.5) and the other
    wrong. Sorted by error, largest first."""
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, not {route!r}")
    if disagree not in DISAGREE:
        raise ValueError(f"disagree must be one of {tuple(DISAGREE)}, not {disagree!r}")
    frame = cases.copy()
    frame["p"] = routed_prob(frame) if judged == "routed" else frame[judged].astype(float)
    frame["error"] = (frame["p"] - frame["label"].astype(float)).abs()
    keep = pd.Series(True, index=frame.index)
    if route != "any":
        keep &= frame["route"] == route
    if wrong_only:
        keep &= confident_wrong(frame["p"], frame["label"], frame["entropy"], max_entropy)
    for name in segments:
        keep &= frame[SEGMENTS[name]].fillna(False).astype(bool)
    if disagree != "any":
        label = frame["label"].astype(float)
        crm_right = (frame["p_crm"].astype(float) - label).abs() < 0.5
        llm_right = (frame["p_llm"].astype(float) - label).abs() < 0.5
        both = frame["p_crm"].notna() & frame["p_llm"].notna()
        keep &= both & ((crm_right & ~llm_right) if disagree == "crm_right"
                        else (llm_right & ~crm_right))
    out = frame[keep].sort_values(["error", "sample_id"], ascending=[False, True],
                                  na_position="last")
    return out[[c for c in HARD_COLUMNS if c in out]].reset_index(drop=True)


# --- one user, one item -------------------------------------------------------------------

def user_attributes(users: pd.DataFrame, user: str) -> dict[str, Any]:
    """The user's attributes by readable name (no internal columns)."""
    row = users[users["user"].astype(str) == str(user)]
    if row.empty:
        return {}
    return {ATTRIBUTE_NAMES.get(k, k): v for k, v in user_attributes_of(row.iloc[0]).items()}


def item_info(items: pd.DataFrame, item: str) -> dict[str, Any]:
    """The item's row as a dict; tags as a plain list of strings."""
    row = items[items["item"].astype(str) == str(item)]
    if row.empty:
        return {}
    info = dict(row.iloc[0].items())
    tags = info.get("tags")
    if isinstance(tags, str):
        try:
            tags = json.loads(tags)
        except ValueError:
            tags = [tags]
    if tags is not None and not isinstance(tags, str):
        info["tags"] = [str(t) for t in list(tags)]
    return info


def timeline(history: pd.DataFrame, samples: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """A user's ratings over time: time, rating, item, title and kind (the split of the sample
    the rating became, or "history only"), oldest first."""
    frame = history.copy()
    frame["item"] = frame["item"].astype(str)
    frame["title"] = frame["item"].map(_titles(items))
    split = samples.assign(item=samples["item"].astype(str))[["item", "timestamp", "split"]]
    frame = frame.merge(split.drop_duplicates(["item", "timestamp"]),
                        on=["item", "timestamp"], how="left")
    frame["kind"] = frame["split"].fillna("history only").astype(str)
    frame["time"] = as_time(frame["timestamp"])
    return frame.sort_values(["timestamp", "item"])[
        ["time", "rating", "item", "title", "kind"]].reset_index(drop=True)


def reviews(history: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """The user's ratings that came with review text (Amazon: summary and review), newest
    first; empty when the source has none."""
    text_cols = [c for c in REVIEW_COLUMNS if c in history.columns]
    if not text_cols:
        return pd.DataFrame(columns=["time", "item", "title", "rating", *REVIEW_COLUMNS])
    has_text = history[text_cols].fillna("").astype(str).ne("").any(axis=1)
    frame = history[has_text].copy()
    frame["item"] = frame["item"].astype(str)
    frame["title"] = frame["item"].map(_titles(items))
    frame["time"] = as_time(frame["timestamp"])
    return frame.sort_values("timestamp", ascending=False)[
        ["time", "item", "title", "rating", *text_cols]].reset_index(drop=True)


def timeline_figure(frame: pd.DataFrame, user: str) -> go.Figure:
    kinds = [k for k in TIMELINE_KINDS if k in set(frame["kind"])]
    kinds += sorted(set(frame["kind"]) - set(kinds))
    fig = px.scatter(frame, x="time", y="rating", color="kind", hover_name="title",
                     hover_data={"item": True, "kind": True, "time": "|%Y-%m-%d %H:%M"},
                     category_orders={"kind": kinds}, color_discrete_map=TIMELINE_COLOURS)
    fig.update_traces(marker={"size": 9, "opacity": 0.8})
    styled(fig, f"Ratings of user {user} over time", "time", "rating", height=360)
    fig.update_layout(legend_title_text="")
    return fig


def pick_labels(rows: pd.DataFrame) -> dict[int, str]:
    """'#<sample> · user <u> · <title> · error <e>' per case (rows indexed by sample id)."""
    text = ("#" + rows.index.astype(str) + " · user " + rows["user"].astype(str) + " · "
            + rows["title"].astype(str) + " · error "
            + rows["error"].map("{:.3f}".format))
    return dict(zip(rows.index.tolist(), text.tolist()))


def to_csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode("utf-8")


# --- live scoring ---------------------------------------------------------------------------

def live_table(crm_scores: dict[str, float], routed: dict[str, Any] | None = None,
               threshold: float | None = None) -> pd.DataFrame:
    """One row per model for a live-scored pair: model, P(click), and for a routed method
    (engine.scoring.RoutedScore by name) its LLM, CRM entropy and route at `threshold`."""
    rows = [{"model": name, "p": p, "note": "CRM"} for name, p in crm_scores.items()]
    for name, score in (routed or {}).items():
        rows.append({"model": f"{name}_llm", "p": score.p_llm, "note": "LLM (base + LoRA)"})
        rows.append({"model": name, "p": score.p,
                     "note": f"routed to the {score.route}: CRM entropy {score.entropy:.3f} "
                             f"{'>' if score.route == 'LLM' else '<='} threshold "
                             f"{threshold:.3f}"})
    return pd.DataFrame(rows, columns=["model", "p", "note"])
