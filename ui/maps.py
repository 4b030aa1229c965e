"""Shaping the stored embedding maps for the page, and their figures (no Streamlit here)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from ui import figures
from ui.figures import inside_label_position, styled

COLOURINGS = ("genre", "popularity", "mean entropy", "CRM vs LLM")


def item_signals(items: pd.DataFrame, samples: pd.DataFrame,
                 routing: pd.DataFrame | None) -> pd.DataFrame:
    """Per item: title, first genre, popularity, whether the data gave it text, and, where the
    LLM scored the item's samples,
    the CRM's mean entropy and which model erred less on them (mean |p - label|)."""
    out = items[["item", "title", "popularity"]].copy()
    # a multi-genre item is coloured by its first (primary) genre and found by any of them
    out["genre"] = [tags[0] if len(tags) else "(none)" for tags in items["tags"]]
    out["genres"] = [" | ".join(map(str, tags)) for tags in items["tags"]]
    out["long_tail"] = items["long_tail"].to_numpy() if "long_tail" in items else False
    # runs before 0.3 did not record it; their loaders gave every item a title
    out["has_text"] = items["has_text"].astype(bool).to_numpy() if "has_text" in items else True
    if routing is None or routing.empty:
        out["mean entropy"] = np.nan
        out["CRM vs LLM"] = "not scored"
        return out
    rows = routing.merge(samples[["sample_id", "item"]], on="sample_id")
    rows["crm_err"] = (rows["p_crm"] - rows["label"]).abs()
    rows["llm_err"] = (rows["p_llm"] - rows["label"]).abs()
    per = rows.groupby("item").agg(entropy=("entropy", "mean"), crm_err=("crm_err", "mean"),
                                   llm_err=("llm_err", "mean"), n=("sample_id", "size"))
    per["winner"] = np.where(per["llm_err"] < per["crm_err"], "LLM better", "CRM better")
    out = out.merge(per, left_on="item", right_index=True, how="left")
    out["mean entropy"] = out.pop("entropy")
    out["CRM vs LLM"] = out.pop("winner").fillna("not scored")
    return out


def space_frame(embeddings: pd.DataFrame, signals: pd.DataFrame, space: str,
                agreement: pd.Series | None = None) -> pd.DataFrame:
    """One space's points joined with the item signals (and agreement, when given)."""
    points = embeddings[embeddings["space"] == space][["entity_id", "x", "y"]]
    frame = points.merge(signals, left_on="entity_id", right_on="item", how="left")
    if agreement is not None:
        frame["agreement"] = frame["entity_id"].map(agreement)
    return frame.reset_index(drop=True)


def pair_agreement(agreement: pd.DataFrame, a: str, b: str) -> pd.Series:
    """Per item agreement of two spaces (order-free), indexed by item id."""
    mask = ((agreement["space_a"] == a) & (agreement["space_b"] == b)) | (
        (agreement["space_a"] == b) & (agreement["space_b"] == a))
    return agreement[mask].set_index("entity_id")["agreement"]


WINNER_COLOURS = {"CRM better": "#4C78A8", "LLM better": "#F58518",
                  "not scored": "#CFCFCF"}
HIGHLIGHT_COLOUR = "#111111"


def scatter(frame: pd.DataFrame, colour: str, title: str,
            highlight: set[str] | frozenset[str] = frozenset()) -> go.Figure:
    """One space's items; `highlight` (item ids, e.g. selected on the other map or found by
    title) is drawn ringed on top, the rest faded."""
    return with_highlight(scatter_base(frame, colour, title).to_dict(), frame, highlight)


def scatter_base(frame: pd.DataFrame, colour: str, title: str) -> go.Figure:
    """One space's items coloured by `colour`, nothing highlighted: what the page builds once
    per space, colouring and genres (plotly express takes ~0.1-0.3 s for 1,681 points)."""
    hover = {"entity_id": True, "popularity": True, "genres": True, "x": False, "y": False}
    hover = {k: v for k, v in hover.items() if k in frame or k in ("x", "y")}
    if "has_text" in frame:
        hover["has_text"] = True
    if "agreement" in frame:
        hover["agreement"] = ":.2f"
    if colour == "popularity":
        fig = px.scatter(frame, x="x", y="y", color=np.log1p(frame["popularity"]),
                         hover_name="title", hover_data=hover,
                         color_continuous_scale="Viridis", labels={"color": "log(1+pop.)"})
    elif colour == "mean entropy":
        fig = px.scatter(frame, x="x", y="y", color="mean entropy", hover_name="title",
                         hover_data=hover, color_continuous_scale="Plasma", range_color=(0, 1))
    else:
        fig = px.scatter(frame, x="x", y="y", color=colour, hover_name="title",
                         hover_data=hover, color_discrete_map=WINNER_COLOURS,
                         category_orders={"CRM vs LLM": list(WINNER_COLOURS)})
    fig.update_traces(marker={"size": 6, "opacity": 0.8})
    styled(fig, title, height=520)
    fig.update_layout(xaxis_visible=False, yaxis_visible=False, dragmode="lasso")
    return fig


def with_highlight(base: dict, frame: pd.DataFrame,
                   highlight: set[str] | frozenset[str]) -> go.Figure:
    """The built map (scatter_base(...).to_dict()) with `highlight` ringed on top and the
    rest faded: all a selection or a search changes, in milliseconds."""
    if not highlight:
        return figures.marked(base)
    rows = frame[frame["entity_id"].astype(str).isin(highlight)]
    ring = {"type": "scatter", "x": rows["x"].tolist(), "y": rows["y"].tolist(),
            "mode": "markers", "name": f"highlighted ({len(rows)})",
            "marker": {"size": 11, "color": "rgba(0,0,0,0)",
                       "line": {"width": 2, "color": HIGHLIGHT_COLOUR}},
            "customdata": np.stack([rows["entity_id"].astype(str).to_numpy()], axis=1),
            "text": rows["title"].tolist(), "hovertemplate": "%{text}<extra>highlighted</extra>"}
    return figures.marked(base, traces=[ring] if len(rows) else [], opacity=0.35)


MAX_POINTS = 5000  # drawn per map unless the user asks for all: plotly's SVG cost grows with it


def downsampled(frame: pd.DataFrame, limit: int | None = None, seed: int = 0) -> pd.DataFrame:
    """At most `limit` (default MAX_POINTS) of a map's points, a seeded random sample in the
    frame's order (the same points every rerun); the whole frame when it is no larger."""
    limit = MAX_POINTS if limit is None else limit
    if len(frame) <= limit:
        return frame
    keep = np.sort(np.random.default_rng(seed).choice(len(frame), size=limit, replace=False))
    return frame.iloc[keep]


def find_items(signals: pd.DataFrame, query: str) -> set[str]:
    """Item ids whose title contains the query (any case), or whose id equals it."""
    q = (query or "").strip()
    if not q:
        return set()
    titles = signals["title"].astype(str).str.contains(q, case=False, regex=False)
    return set(signals.loc[titles | (signals["item"].astype(str) == q), "item"].astype(str))


def with_genres(frame: pd.DataFrame, genres: list[str]) -> pd.DataFrame:
    """Items having any of `genres` among all their genres (every item when none)."""
    if not genres or "genres" not in frame:
        return frame
    wanted = set(genres)
    keep = [bool(wanted & set(g.split(" | "))) for g in frame["genres"].fillna("")]
    return frame[keep]


def all_genres(signals: pd.DataFrame) -> list[str]:
    found = {g for text in signals.get("genres", pd.Series(dtype=str)).fillna("")
             for g in text.split(" | ") if g}
    return sorted(found)


def selection_ids(event: object) -> set[str]:
    """Item ids in a plotly selection event (the page's session state of a chart)."""
    selection = getattr(event, "selection", None)
    if selection is None and isinstance(event, dict):
        selection = event.get("selection")
    points = (selection or {}).get("points", []) if isinstance(selection, dict) else getattr(
        selection, "points", []) or []
    return {str(p["customdata"][0]) for p in points if p.get("customdata")}


def agreement_histogram(values: pd.Series, a: str, b: str, k: int) -> go.Figure:
    """Per-item agreement of two spaces, with the level two unrelated spaces would reach:
    k / (n - 1) for n items (each item's k neighbours drawn at random from the others)."""
    fig = px.histogram(values, nbins=min(k + 1, 20), range_x=(0, 1))
    chance = k / max(1, len(values) - 1)
    fig.add_vline(x=chance, line_dash="dot", line_color="grey",
                  annotation_text=f"chance {chance:.3f}",
                  annotation_position=inside_label_position(chance))
    fig.add_vline(x=float(values.mean()), line_color="black",
                  annotation_text=f"mean {values.mean():.3f}",
                  annotation_position="bottom right" if values.mean() < 0.6 else "bottom left")
    return styled(fig, f"Agreement of {a} and {b}: shared share of {k} nearest neighbours",
                  "agreement", "items", height=320, legend=False)


ALIGNMENT_PAIRS = {"before: LLM state vs CRM state": ("LLM state", "CRM state"),
                   "after: aligned LLM vs aligned CRM": ("aligned LLM", "aligned CRM")}


def aligned_methods(spaces: list[str]) -> list[str]:
    """Methods that stored before/after-alignment spaces ("<method>: aligned LLM")."""
    return sorted({s.split(": ")[0] for s in spaces if s.endswith(": aligned LLM")})


def alignment_summary(agreement: pd.DataFrame, method: str) -> pd.DataFrame:
    """How much the LLM's and the CRM's item neighbourhoods agree before and after the
    method's alignment projections: mean and median agreement and the items compared."""
    rows = []
    for label, (a, b) in ALIGNMENT_PAIRS.items():
        values = pair_agreement(agreement, f"{method}: {a}", f"{method}: {b}")
        rows.append({"comparison": label, "mean agreement": values.mean(),
                     "median agreement": values.median(), "items": len(values)})
    return pd.DataFrame(rows)
