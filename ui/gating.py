"""The gating page's data shaping and figures (pure pandas and plotly, no Streamlit).

S-LLMR stores, per valid/test sample, the gate's alpha with its inputs (`gates`), and per
teacher pair the teacher's scores, labels where known and the CRM's logit gaps (`pairs`).
The page asks one question above all: is alpha high where the teacher is right?
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from ui import variants
from ui.figures import styled
from ui.variants import method_config  # noqa: F401  (the page reads it from here)

CELLS = {(False, False): "warm user · head item", (False, True): "warm user · long-tail item",
         (True, False): "cold user · head item", (True, True): "cold user · long-tail item"}
VARIANT_ORDER = ["none", "global", "pointwise", "kd", "joint", "gated"]


def teacher_label(teacher: str) -> str:
    """A short name for the teacher ("corella's LoRA adapter" -> "corella adapter")."""
    if teacher.endswith("'s LoRA adapter"):
        return teacher.removesuffix("'s LoRA adapter") + " adapter"
    return teacher.replace(" zero-shot", " (zero-shot)")


def gated_methods(gates: pd.DataFrame) -> list[str]:
    return sorted(gates["method"].unique()) if "method" in gates else []


def gate_weights(config: dict) -> pd.DataFrame:
    """Feature, the applied gate's weight, the reliability fit's and the joint gate's."""
    rows = []
    for feature in ("cold", "tail", "q"):
        rows.append({"feature": {"q": f"q ({config.get('q', '?')})"}.get(feature, feature),
                     "applied": (config.get("gate_w") or {}).get(feature, np.nan),
                     "reliability fit": (config.get("reliability_gate_w") or {}).get(
                         feature, np.nan),
                     "joint (learned with the loss)": (config.get("joint_gate_w") or {}).get(
                         feature, np.nan)})
    rows.append({"feature": "bias b", "applied": config.get("gate_b", np.nan),
                 "reliability fit": config.get("reliability_gate_b", np.nan),
                 "joint (learned with the loss)": np.nan})
    return pd.DataFrame(rows)


def with_cells(gates: pd.DataFrame) -> pd.DataFrame:
    """The gates of one method with the (cold, tail) cell of each sample."""
    out = gates.copy()
    out["cell"] = [CELLS[(bool(c), bool(t))] for c, t in zip(out["cold"], out["tail"])]
    return out


def alpha_by_cell(gates: pd.DataFrame) -> pd.DataFrame:
    """Mean alpha, samples and the mean q per (cold, tail) cell."""
    cells = with_cells(gates)
    table = cells.groupby("cell").agg(samples=("alpha", "size"), mean_alpha=("alpha", "mean"),
                                      mean_q=("q", "mean")).reindex(list(CELLS.values()))
    return table.dropna(subset=["samples"]).reset_index()


def pair_accuracy_by_alpha(pairs: pd.DataFrame, bins: int = 10) -> pd.DataFrame:
    """The teacher's accuracy on labelled pairs (its order agrees with the labels) per alpha
    decile: the paper's claim holds if it rises with alpha."""
    labelled = pairs[pairs["labelled"].astype(bool)]
    if labelled.empty:
        return pd.DataFrame(columns=["decile", "alpha_lo", "alpha_hi", "pairs", "accuracy"])
    ranks = labelled["alpha"].rank(method="first")
    decile = np.minimum((ranks - 1) * bins // len(labelled), bins - 1).astype(int)
    grouped = labelled.assign(decile=decile + 1).groupby("decile")
    return pd.DataFrame({"alpha_lo": grouped["alpha"].min(), "alpha_hi": grouped["alpha"].max(),
                         "pairs": grouped.size(),
                         "accuracy": grouped["agree"].mean()}).reset_index()


def variant_table(metrics: pd.DataFrame, method: str, metric: str = "auc") -> pd.DataFrame:
    """S-LLMR's stored variants x segments of one metric (see ui.variants)."""
    return variants.variant_table(metrics, method, VARIANT_ORDER, "gated", metric)


# --- figures ---------------------------------------------------------------------------------

def alpha_vs_q_figure(gates: pd.DataFrame, sample: int = 4000, seed: int = 0) -> go.Figure:
    """alpha against q, one colour per (cold, tail) cell (a seeded sample of points)."""
    cells = with_cells(gates)
    if len(cells) > sample:
        cells = cells.sample(sample, random_state=seed)
    fig = px.scatter(cells, x="q", y="alpha", color="cell", opacity=0.6,
                     category_orders={"cell": list(CELLS.values())},
                     hover_data={"sample_id": True, "hist_len": True, "item_popularity": True})
    fig.update_traces(marker={"size": 5})
    fig.update_yaxes(range=[0, 1])
    fig.update_xaxes(exponentformat="e")  # MC-dropout variances are tiny: no "2µ" ticks
    return styled(fig, "Gate alpha against the CRM's uncertainty q, per (user, item) cell",
                  "q (CRM uncertainty, 0-1)", "alpha")


def alpha_by_cell_figure(table: pd.DataFrame) -> go.Figure:
    fig = go.Figure(go.Bar(x=table["cell"], y=table["mean_alpha"],
                           customdata=table["samples"], marker_color="#4C78A8",
                           hovertemplate="%{x}<br>mean alpha %{y:.3f}<br>%{customdata:,} "
                                         "samples<extra></extra>"))
    fig.update_yaxes(range=[0, 1])
    return styled(fig, "Mean gate alpha by segment", "", "mean alpha", legend=False)


def pair_accuracy_figure(table: pd.DataFrame, overall: float) -> go.Figure:
    """Teacher pair accuracy per alpha decile, with the overall accuracy and chance (0.5)."""
    fig = go.Figure(go.Scatter(
        x=table["decile"], y=table["accuracy"], mode="lines+markers", name="teacher accuracy",
        customdata=np.stack([table["alpha_lo"], table["alpha_hi"], table["pairs"]], axis=1),
        hovertemplate="decile %{x}: alpha %{customdata[0]:.3f}-%{customdata[1]:.3f}<br>"
                      "accuracy %{y:.3f} on %{customdata[2]:,} pairs<extra></extra>"))
    fig.add_hline(y=0.5, line_dash="dot", line_color="grey", annotation_text="chance",
                  annotation_position="bottom right")
    if overall == overall:
        fig.add_hline(y=overall, line_dash="dash", line_color="black",
                      annotation_text=f"all labelled pairs {overall:.3f}",
                      annotation_position="top left")
    fig.update_yaxes(range=[0, 1])
    fig.update_xaxes(dtick=1)
    return styled(fig, "Teacher pair accuracy per alpha decile", "alpha decile (1 = lowest)",
                  "pairs ordered as labels",
                  legend=False)


def variants_figure(rows: pd.DataFrame, segments: list[str]) -> go.Figure:
    return variants.variants_figure(rows, segments, "S-LLMR variants per segment (test)")


PAIR_COLUMNS = ["user", "item_i", "item_j", "kind_i", "kind_j", "s_llm_i", "s_llm_j",
                "label_i", "label_j", "alpha", "gap_before", "gap_after", "cold",
                "anchor_sample"]


def pair_view(pairs: pd.DataFrame, only: str = "all", order: str = "alpha") -> pd.DataFrame:
    """The pair browser: all pairs, the labelled ones, or those where the teacher's order
    contradicts the labels; by alpha or by the teacher's gap, largest first."""
    out = pairs.copy()
    labelled = out["labelled"].astype(bool)
    if only == "labelled":
        out = out[labelled]
    elif only == "teacher wrong":
        out = out[labelled & ~out["agree"].astype(bool)]
    key = out["alpha"] if order == "alpha" else out["s_llm_i"] - out["s_llm_j"]
    out = out.assign(_key=key).sort_values("_key", ascending=False)
    return out[[c for c in PAIR_COLUMNS if c in out]].reset_index(drop=True)


LOG_METRICS = {"mean_alpha": "mean alpha", "l_llm": "L_LLM (per pair)",
               "active_hinge_share": "share of active hinges"}


def training_curves(log: pd.DataFrame) -> pd.DataFrame:
    """Per epoch and variant, the regulariser's log (mean alpha, L_LLM, active hinges): the
    joint gate's collapse shows as its mean alpha falling epoch after epoch."""
    rows = log[log["metric"].isin(list(LOG_METRICS))]
    return (rows.rename(columns={"stage": "variant"})[["variant", "epoch", "metric", "value"]]
            .sort_values(["variant", "metric", "epoch"]).reset_index(drop=True))


def training_curves_figure(curves: pd.DataFrame, metric: str = "mean_alpha") -> go.Figure:
    fig = go.Figure()
    for variant, group in curves[curves["metric"] == metric].groupby("variant", sort=False):
        fig.add_trace(go.Scatter(x=group["epoch"], y=group["value"], mode="lines+markers",
                                 name=variant,
                                 hovertemplate="epoch %{x}: %{y:.4f}"
                                               f"<extra>{variant}</extra>"))
    fig.update_xaxes(dtick=1)
    return styled(fig, f"{LOG_METRICS[metric]} per training epoch", "epoch",
                  LOG_METRICS[metric])
