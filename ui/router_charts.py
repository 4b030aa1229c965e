"""Plotly figures for the router lab (no Streamlit here; the page only places them).

Every builder takes small precomputed frames (histogram counts, curve points, bins), never
the raw samples, so a redraw sends a few hundred numbers to the browser at any data size.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ui.figures import marked, styled, vline

CRM_COLOUR = "#4C78A8"
LLM_COLOUR = "#F58518"
MIX_COLOUR = "#54A24B"
WRONG_COLOUR = "#E45756"


def entropy_counts(entropy: np.ndarray, crm_correct: np.ndarray, bins: int = 40) -> pd.DataFrame:
    """Histogram counts of the entropy on [0, 1], split by whether the CRM was right."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    right, _ = np.histogram(entropy[crm_correct], bins=edges)
    wrong, _ = np.histogram(entropy[~crm_correct], bins=edges)
    return pd.DataFrame({"lo": edges[:-1], "hi": edges[1:], "correct": right, "wrong": wrong})


def entropy_histogram(counts: pd.DataFrame, threshold: float) -> go.Figure:
    return with_threshold(entropy_histogram_base(counts).to_dict(), threshold)


def with_threshold(base: dict, threshold: float) -> go.Figure:
    """The histogram (entropy_histogram_base(...).to_dict(), built once per method and split)
    with the threshold's line: all a slider step redraws."""
    line, label = vline(threshold, f"threshold {threshold:.3f} → LLM")
    return marked(base, shapes=[line], annotations=[label])


def entropy_histogram_base(counts: pd.DataFrame) -> go.Figure:
    mid = (counts["lo"] + counts["hi"]) / 2
    width = float((counts["hi"] - counts["lo"]).iloc[0]) if len(counts) else 0.025
    fig = go.Figure([
        go.Bar(x=mid, y=counts["correct"], width=width, name="CRM correct",
               marker_color=CRM_COLOUR),
        go.Bar(x=mid, y=counts["wrong"], width=width, name="CRM wrong",
               marker_color=WRONG_COLOUR),
    ])
    fig.update_layout(barmode="stack", bargap=0)
    fig.update_xaxes(range=[0, 1.02])
    return styled(fig, "CRM uncertainty (entropy of p_crm, bits)", "entropy", "samples")


def quality_vs_share(curve: pd.DataFrame, share: float, auc: float, crm_auc: float,
                     llm_auc: float) -> go.Figure:
    return with_setting(quality_curve_base(curve, crm_auc, llm_auc).to_dict(), share, auc)


def with_setting(base: dict, share: float, auc: float) -> go.Figure:
    """The curve (quality_curve_base(...).to_dict(), built once per method and split) with
    the current setting's marker: all a slider step redraws."""
    return marked(base, traces=[{
        "type": "scatter", "x": [100 * share], "y": [auc], "mode": "markers",
        "name": "current setting",
        "marker": {"size": 12, "color": "black", "symbol": "diamond"}}])


def quality_curve_base(curve: pd.DataFrame, crm_auc: float, llm_auc: float) -> go.Figure:
    fig = go.Figure([
        go.Scatter(x=100 * curve["llm_share"], y=curve["auc"], mode="lines", name="routed mix",
                   line_color=MIX_COLOUR, customdata=curve["threshold"],
                   hovertemplate="LLM share %{x:.1f}%<br>AUC %{y:.4f}"
                                 "<br>threshold %{customdata:.3f}<extra></extra>"),
    ])
    fig.add_hline(y=crm_auc, line_dash="dot", line_color=CRM_COLOUR,
                  annotation_text="CRM only", annotation_position="bottom left")
    fig.add_hline(y=llm_auc, line_dash="dot", line_color=LLM_COLOUR,
                  annotation_text="LLM only", annotation_position="bottom right")
    fig.update_xaxes(range=[-1, 101])
    return styled(fig, "Quality of the mix vs LLM share", "samples sent to the LLM (%)", "AUC")


def bucket_bars(buckets: pd.DataFrame) -> go.Figure:
    labels = [f"{b}<br>(n={n:,})" for b, n in zip(buckets["bucket"], buckets["n"])]
    fig = go.Figure([
        go.Bar(x=labels, y=buckets["crm_auc"], name="CRM", marker_color=CRM_COLOUR,
               customdata=buckets["crm_acc"],
               hovertemplate="AUC %{y:.4f}<br>ACC %{customdata:.4f}<extra>CRM</extra>"),
        go.Bar(x=labels, y=buckets["llm_auc"], name="LLM", marker_color=LLM_COLOUR,
               customdata=buckets["llm_acc"],
               hovertemplate="AUC %{y:.4f}<br>ACC %{customdata:.4f}<extra>LLM</extra>"),
    ])
    fig.update_layout(barmode="group")
    low = np.nanmin(buckets[["crm_auc", "llm_auc"]].to_numpy(), initial=0.5)
    fig.update_yaxes(range=[max(0.0, min(0.5, low) - 0.05), 1.0])
    return styled(fig, "CRM vs LLM by CRM uncertainty (entropy terciles)", "", "AUC")


def calibration_error(frame: pd.DataFrame) -> float:
    """ECE from a reliability table: the count-weighted mean gap of prediction and rate."""
    count = frame["count"].to_numpy(dtype=float)
    if count.sum() == 0:
        return float("nan")
    gap = np.abs(frame["mean_pred"].to_numpy() - frame["click_rate"].to_numpy())
    return float((count * gap).sum() / count.sum())


def reliability_diagram(crm: pd.DataFrame, llm: pd.DataFrame) -> go.Figure:
    """Observed click rate against the mean prediction per probability bin for both models,
    with each bin's sample count as bars (right axis) and each model's ECE in the legend."""
    fig = go.Figure([go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect",
                                line={"dash": "dot", "color": "grey"})])
    for name, frame, colour in (("CRM", crm, CRM_COLOUR), ("LLM", llm, LLM_COLOUR)):
        fig.add_trace(go.Bar(
            x=(frame["bin_lo"] + frame["bin_hi"]) / 2, y=frame["count"], yaxis="y2",
            width=0.045, offset=-0.045 if name == "CRM" else 0.0, marker_color=colour,
            opacity=0.25, name=f"{name} samples per bin", showlegend=False,
            hovertemplate="%{y:,} samples<extra>" + name + "</extra>"))
        fig.add_trace(go.Scatter(
            x=frame["mean_pred"], y=frame["click_rate"], mode="lines+markers",
            name=f"{name} (ECE {calibration_error(frame):.3f})", line_color=colour,
            customdata=frame["count"],
            hovertemplate="predicted %{x:.3f}<br>observed %{y:.3f}<br>n=%{customdata:,}"
                          f"<extra>{name}</extra>"))
    fig.update_xaxes(range=[0, 1])
    fig.update_yaxes(range=[0, 1])
    fig.update_layout(yaxis2={"overlaying": "y", "side": "right", "showgrid": False,
                              "title": "samples per bin", "rangemode": "tozero"})
    return styled(fig, "Reliability (10 probability bins; bars: samples per bin)",
                  "mean predicted click probability", "observed click rate")
