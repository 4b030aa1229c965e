"""The reasoning page's data shaping and figures (pure pandas and plotly, no Streamlit).

LLM-CF stores its chain-of-thought pool (`cot`: one row per explanation with its quality
parts) and, per valid/test sample, the K retrieved examples (`neighbours`: rank, CoT id,
similarity parts, the example's label, the ICT's attention on it, the reconstruction cosine,
both models' probabilities). The page asks: what did the LLM write, what does a sample get to
read, and does LLM-CF follow what its examples say?
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from ui import variants
from ui.figures import styled

VARIANT_ORDER = ["none", "kd", "random", "mean_pool", "no_cot", "llmcf"]
LABELS = {1.0: "clicked", 0.0: "not clicked"}
QUALITY_PARTS = ["completeness", "relevance", "consistency", "repetition"]
COT_COLUMNS = ["cot_id", "decision", "title", "genres", "quality", *QUALITY_PARTS, "tokens",
               "times_retrieved", "user", "item", "sample_id", "text"]


def llmcf_methods(neighbours: pd.DataFrame) -> list[str]:
    return sorted(neighbours["method"].unique()) if "method" in neighbours else []


def genres(items: pd.DataFrame) -> list[str]:
    """Every tag of the run's items (MovieLens: genres), sorted."""
    if "tags" not in items:
        return []
    found = {str(t) for tags in items["tags"].dropna() for t in _tags(tags)}
    return sorted(found)


def _tags(value: object) -> list[str]:
    if isinstance(value, str):
        return [t.strip() for t in value.split("|") if t.strip()]
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(t) for t in value]
    return []


def with_items(frame: pd.DataFrame, items: pd.DataFrame, column: str = "item") -> pd.DataFrame:
    """Frame with its item's title and genres (items keyed by `item`, as strings)."""
    info = items.assign(item=items["item"].astype(str)).set_index("item")
    keys = frame[column].astype(str)
    out = frame.copy()
    out["title"] = keys.map(info["title"]) if "title" in info else keys
    out["genres"] = keys.map(info["tags"].map(lambda t: ", ".join(_tags(t)))) \
        if "tags" in info else ""
    return out


def cot_view(cot: pd.DataFrame, items: pd.DataFrame, label: str = "all",
             quality: tuple[float, float] = (0.0, 1.0), item_query: str = "",
             genre: str | None = None) -> pd.DataFrame:
    """The CoT browser: explanations filtered by decision, quality range, item (id or part
    of the title) and genre, best quality first."""
    out = with_items(cot.assign(decision=cot["label"].map(LABELS)), items)
    if label != "all":
        out = out[out["decision"] == label]
    out = out[out["quality"].between(*quality)]
    query = item_query.strip().lower()
    if query:
        out = out[out["item"].astype(str).str.lower().eq(query)
                  | out["title"].fillna("").str.lower().str.contains(query, regex=False)]
    if genre:
        out = out[out["genres"].str.split(", ").map(lambda g: genre in g)]
    return out.sort_values(["quality", "cot_id"], ascending=[False, True])[
        [c for c in COT_COLUMNS if c in out]].reset_index(drop=True)


def quality_by_decision(cot: pd.DataFrame) -> pd.DataFrame:
    """Mean of each quality part per decision (long form for a grouped bar chart)."""
    parts = cot.assign(decision=cot["label"].map(LABELS))
    mean = parts.groupby("decision")[[*QUALITY_PARTS, "quality"]].mean().reset_index()
    return mean.melt(id_vars="decision", var_name="part", value_name="mean")


def moved_samples(neighbours: pd.DataFrame, limit: int = 500) -> pd.DataFrame:
    """One row per analysed sample, those LLM-CF moved most from the backbone first."""
    per = neighbours.drop_duplicates("sample_id")[["sample_id", "split", "label",
                                                   "p_backbone", "p_llmcf"]].copy()
    per["moved"] = per["p_llmcf"] - per["p_backbone"]
    per = per.reindex(per["moved"].abs().sort_values(ascending=False, kind="stable").index)
    return per.head(limit).reset_index(drop=True)


def sample_examples(neighbours: pd.DataFrame, cot: pd.DataFrame, items: pd.DataFrame,
                    sample_id: int) -> pd.DataFrame:
    """What one sample read: its examples in retrieval order with their explanation."""
    mine = neighbours[neighbours["sample_id"] == sample_id].sort_values("rank")
    texts = cot.set_index("cot_id")
    out = mine[["rank", "cot_id", "neighbour_label", "similarity", "sim_history",
                "sim_target", "attention", "recon_cos"]].copy()
    out["decision"] = out["neighbour_label"].map(LABELS)
    out["item"] = out["cot_id"].map(texts["item"]).astype(str)
    out["user"] = out["cot_id"].map(texts["user"]).astype(str)
    out["text"] = out["cot_id"].map(texts["text"])
    out = with_items(out, items)
    return out[["rank", "decision", "title", "similarity", "sim_history", "sim_target",
                "attention", "recon_cos", "user", "item", "cot_id", "text"]].reset_index(
        drop=True)


def sample_summary(neighbours: pd.DataFrame, sample_id: int) -> dict[str, float]:
    mine = neighbours[neighbours["sample_id"] == sample_id]
    if mine.empty:
        return {}
    first = mine.iloc[0]
    return {"label": float(first["label"]), "p_backbone": float(first["p_backbone"]),
            "p_llmcf": float(first["p_llmcf"]), "attention_self": float(first["attention_self"]),
            "vote": float(np.average(mine["neighbour_label"], weights=mine["attention"]))
            if mine["attention"].sum() > 0 else float("nan")}


def neighbour_votes(neighbours: pd.DataFrame) -> pd.DataFrame:
    """Per sample: the examples' labels weighted by the ICT's attention on them (the vote),
    the sample's label, and whether each model is right (p > 0.5 == label)."""
    frame = neighbours.assign(weighted=neighbours["attention"] * neighbours["neighbour_label"])
    per = frame.groupby("sample_id").agg(weighted=("weighted", "sum"),
                                         attention=("attention", "sum"), label=("label", "first"),
                                         p_backbone=("p_backbone", "first"),
                                         p_llmcf=("p_llmcf", "first"))
    per["vote"] = per["weighted"] / per["attention"].where(per["attention"] > 0)
    per["backbone_right"] = (per["p_backbone"] > 0.5) == (per["label"] > 0.5)
    per["llmcf_right"] = (per["p_llmcf"] > 0.5) == (per["label"] > 0.5)
    return per.drop(columns=["weighted"]).reset_index()


def vote_table(votes: pd.DataFrame, bins: int = 5) -> pd.DataFrame:
    """Per quantile bin of the vote: samples, click rate, both models' accuracy."""
    clean = votes.dropna(subset=["vote"])
    if clean.empty:
        return pd.DataFrame(columns=["bin", "vote_lo", "vote_hi", "samples", "click_rate",
                                     "backbone_accuracy", "llmcf_accuracy"])
    ranks = clean["vote"].rank(method="first")
    codes = pd.qcut(ranks, q=min(bins, len(clean)), labels=False)
    grouped = clean.groupby(codes)
    return pd.DataFrame({
        "bin": np.arange(1, grouped.ngroups + 1), "vote_lo": grouped["vote"].min().to_numpy(),
        "vote_hi": grouped["vote"].max().to_numpy(), "samples": grouped.size().to_numpy(),
        "click_rate": grouped["label"].mean().to_numpy(),
        "backbone_accuracy": grouped["backbone_right"].mean().to_numpy(),
        "llmcf_accuracy": grouped["llmcf_right"].mean().to_numpy()})


def variant_table(metrics: pd.DataFrame, method: str, metric: str = "auc") -> pd.DataFrame:
    return variants.variant_table(metrics, method, VARIANT_ORDER, "llmcf", metric)


# --- figures ---------------------------------------------------------------------------------

def similarity_figure(neighbours: pd.DataFrame) -> go.Figure:
    """How similar the retrieved examples are, clicked and not clicked overlaid."""
    frame = neighbours.assign(decision=neighbours["neighbour_label"].map(LABELS))
    fig = px.histogram(frame, x="similarity", color="decision", nbins=40, barmode="overlay",
                       opacity=0.6, category_orders={"decision": list(LABELS.values())})
    return styled(fig, "Similarity of the retrieved examples", "0.5 · history + 0.5 · target",
                  "examples")


def vote_figure(table: pd.DataFrame) -> go.Figure:
    """Click rate and both models' accuracy per bin of the examples' attention-weighted
    vote: if the examples carry signal, the click rate rises with the vote."""
    x = [f"{lo:.2f}–{hi:.2f}" for lo, hi in zip(table["vote_lo"], table["vote_hi"])]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=x, y=table["click_rate"], name="click rate",
                         customdata=table["samples"],
                         hovertemplate="vote %{x}: click rate %{y:.3f} (n=%{customdata:,})"
                                       "<extra></extra>"))
    for column, name in (("backbone_accuracy", "backbone accuracy"),
                         ("llmcf_accuracy", "LLM-CF accuracy")):
        fig.add_trace(go.Scatter(x=x, y=table[column], name=name, mode="lines+markers",
                                 hovertemplate="vote %{x}: %{y:.3f}<extra>" + name + "</extra>"))
    fig.update_yaxes(range=[0, 1])
    return styled(fig, "What the examples say vs what is true", "attention-weighted share of "
                  "clicked examples (bins)", "share")


def quality_figure(table: pd.DataFrame) -> go.Figure:
    fig = px.bar(table, x="part", y="mean", color="decision", barmode="group",
                 category_orders={"decision": list(LABELS.values()),
                                  "part": [*QUALITY_PARTS, "quality"]})
    return styled(fig, "Explanation quality by decision", "", "mean")


def variants_figure(rows: pd.DataFrame, segments: list[str]) -> go.Figure:
    return variants.variants_figure(rows, segments, "LLM-CF and its ablations per segment (test)")
