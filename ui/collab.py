"""The Collaborative weights page's data shaping and figures (pure pandas and plotly).

CoRA stores, per analysed sample, both LLM probabilities (with the generated weights and
without), the MF score, the embedding norms, the delta norm per module type and A's cosine
to the mean A (`deltas`). The page asks: do the generated weights move the LLM, for whom, and
does the move follow the collaborative signal?
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from ui import variants
from ui.figures import rolling_lines, styled

VARIANT_ORDER = ["base", "zero_pair", "shuffled_user", "crm", "mf", "cora"]
SEGMENT_NAMES = {(False, False): "warm user · head item",
                 (False, True): "warm user · long-tail item",
                 (True, False): "cold user · head item", (True, True): "cold user · long-tail item"}
LABELS = {0.0: "not clicked", 1.0: "clicked"}


def cora_methods(deltas: pd.DataFrame) -> list[str]:
    return sorted(deltas["method"].unique()) if "method" in deltas else []


def module_columns(deltas: pd.DataFrame) -> list[str]:
    """The per-module-type norms CoRA stored (delta_q_proj, ...), not the page's total."""
    return [c for c in deltas.columns if c.startswith("delta_") and c != "delta_norm"]


def with_delta(deltas: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """The deltas with the total delta norm (the module types' norms summed), the move of
    the LLM's probability, the label's name and each sample's (user, item) segment."""
    out = deltas.merge(samples[["sample_id", "user", "item", "cold_user", "long_tail_item"]],
                       on="sample_id", how="left")
    out["delta_norm"] = out[module_columns(deltas)].sum(axis=1)
    out["move"] = out["p_cora"] - out["p_base"]
    out["label_name"] = out["label"].map(LABELS)
    out["segment"] = [SEGMENT_NAMES[(bool(c), bool(t))] if c == c and t == t else "unknown"
                      for c, t in zip(out["cold_user"], out["long_tail_item"])]
    return out


def module_norms(deltas: pd.DataFrame) -> pd.DataFrame:
    """Mean, 10th and 90th percentile of the delta norm per module type."""
    rows = []
    for column in module_columns(deltas):
        values = deltas[column].dropna()
        rows.append({"module": column.removeprefix("delta_"), "mean": values.mean(),
                     "p10": values.quantile(0.1), "p90": values.quantile(0.9),
                     "samples": len(values)})
    return pd.DataFrame(rows, columns=["module", "mean", "p10", "p90", "samples"])


def by_segment(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (user, item) segment: samples, mean delta norm, mean |move| and the mean move
    toward the label (positive: the weights push the LLM the right way)."""
    toward = np.where(frame["label"] > 0.5, frame["move"], -frame["move"])
    grouped = frame.assign(abs_move=frame["move"].abs(), toward=toward).groupby("segment")
    table = grouped.agg(samples=("sample_id", "size"), delta_norm=("delta_norm", "mean"),
                        abs_move=("abs_move", "mean"), toward_label=("toward", "mean"))
    order = [s for s in SEGMENT_NAMES.values() if s in table.index]
    return table.reindex(order + [s for s in table.index if s not in order]).reset_index()


def mf_deciles(frame: pd.DataFrame, bins: int = 10) -> pd.DataFrame:
    """Per MF-score decile: the mean delta norm and the mean move of P(yes): if the weights
    carry the collaborative signal, the move rises with the MF score."""
    if frame.empty:
        return pd.DataFrame(columns=["decile", "mf_lo", "mf_hi", "samples", "delta_norm",
                                     "move"])
    ranks = frame["p_mf"].rank(method="first")
    decile = np.minimum((ranks - 1) * bins // len(frame), bins - 1).astype(int) + 1
    grouped = frame.assign(decile=decile).groupby("decile")
    return pd.DataFrame({"mf_lo": grouped["p_mf"].min(), "mf_hi": grouped["p_mf"].max(),
                         "samples": grouped.size(), "delta_norm": grouped["delta_norm"].mean(),
                         "move": grouped["move"].mean()}).reset_index()


def variant_table(metrics: pd.DataFrame, method: str, metric: str = "auc") -> pd.DataFrame:
    """CoRA's stored variants x segments (see ui.variants)."""
    return variants.variant_table(metrics, method, VARIANT_ORDER, "cora", metric)


def sample_view(frame: pd.DataFrame, order: str = "largest move") -> pd.DataFrame:
    """The sample browser: by the largest move of P(yes) either way, or the largest delta."""
    key = frame["move"].abs() if order == "largest move" else frame["delta_norm"]
    out = frame.assign(_key=key).sort_values("_key", ascending=False)
    columns = ["sample_id", "split", "user", "item", "label", "p_base", "p_cora", "move",
               "p_mf", "delta_norm", "user_norm", "item_norm", "a_cos_mean", "segment"]
    return out[[c for c in columns if c in out]].reset_index(drop=True)


# --- figures ---------------------------------------------------------------------------------

def cora_vs_base_figure(frame: pd.DataFrame, sample: int = 4000, seed: int = 0) -> go.Figure:
    """p_cora against p_base, coloured by label, with the diagonal (no move)."""
    shown = frame.sample(sample, random_state=seed) if len(frame) > sample else frame
    fig = px.scatter(shown, x="p_base", y="p_cora", color="label_name", opacity=0.65,
                     category_orders={"label_name": list(LABELS.values())},
                     color_discrete_map={"clicked": "#54A24B", "not clicked": "#E45756"},
                     hover_data={"sample_id": True, "user": True, "item": True,
                                 "p_mf": ":.3f", "label_name": False})
    fig.update_traces(marker={"size": 6})
    low = float(min(shown["p_base"].min(), shown["p_cora"].min(), 1.0)) if len(shown) else 0.0
    high = float(max(shown["p_base"].max(), shown["p_cora"].max(), 0.0)) if len(shown) else 1.0
    fig.add_trace(go.Scatter(x=[low, high], y=[low, high], mode="lines", name="no move",
                             line={"dash": "dot", "color": "grey"}, hoverinfo="skip"))
    return styled(fig, "P(yes) with the generated weights against the base LLM",
                  "base LLM P(yes)", "CoRA P(yes)")


def module_norms_figure(table: pd.DataFrame) -> go.Figure:
    fig = go.Figure(go.Bar(
        x=table["module"], y=table["mean"], marker_color="#4C78A8",
        error_y={"type": "data", "symmetric": False,
                 "array": (table["p90"] - table["mean"]).to_numpy(),
                 "arrayminus": (table["mean"] - table["p10"]).to_numpy()},
        hovertemplate="%{x}: mean %{y:.4f}<extra></extra>"))
    return styled(fig, "Delta norm per module type (mean over layers; bars: 10th-90th "
                  "percentile)", "", "||(alpha/r) A P||", legend=False)


def segment_figure(table: pd.DataFrame) -> go.Figure:
    fig = go.Figure(go.Bar(x=table["segment"], y=table["delta_norm"], customdata=np.stack(
        [table["samples"], table["toward_label"]], axis=1), marker_color="#72B7B2",
        hovertemplate="%{x}<br>mean delta norm %{y:.4f}<br>%{customdata[0]:,} samples<br>"
                      "move toward the label %{customdata[1]:+.4f}<extra></extra>"))
    return styled(fig, "Delta norm by segment", "", "mean delta norm", legend=False)


def mf_figure(deciles: pd.DataFrame) -> go.Figure:
    """Mean move of P(yes) per MF-score decile (bars) with the delta norm (line)."""
    fig = go.Figure()
    fig.add_trace(go.Bar(x=deciles["decile"], y=deciles["move"], name="mean move of P(yes)",
                         marker_color="#F58518", customdata=np.stack(
                             [deciles["mf_lo"], deciles["mf_hi"], deciles["samples"]], axis=1),
                         hovertemplate="decile %{x}: MF %{customdata[0]:.3f}-%{customdata[1]:"
                                       ".3f}<br>move %{y:+.4f} (%{customdata[2]:,} samples)"
                                       "<extra></extra>"))
    fig.add_trace(go.Scatter(x=deciles["decile"], y=deciles["delta_norm"], name="delta norm",
                             mode="lines+markers", yaxis="y2",
                             hovertemplate="decile %{x}: delta norm %{y:.4f}<extra></extra>"))
    fig.update_layout(yaxis2={"overlaying": "y", "side": "right", "title": "delta norm",
                              "showgrid": False})
    fig.update_xaxes(dtick=1)
    return styled(fig, "Does the move follow the collaborative signal? (per MF-score decile)",
                  "MF score decile (1 = lowest)", "mean P(yes) move")


def variants_figure(rows: pd.DataFrame, segments: list[str]) -> go.Figure:
    return variants.variants_figure(rows, segments, "CoRA, its ablations and baselines per "
                                    "segment (test)")


def training_curves(log: pd.DataFrame) -> pd.DataFrame:
    """The generated weights' BCE per step (one curve per trained variant)."""
    rows = log[log["metric"] == "llm_loss"]
    return (rows.rename(columns={"stage": "variant", "epoch": "step"})
            [["variant", "step", "value"]].reset_index(drop=True))


def training_figure(curves: pd.DataFrame) -> go.Figure:
    return styled(rolling_lines(curves, "variant", 8), "Training BCE of the generated weights "
                  "(rolling mean of 8 steps)", "step", "BCE")
