"""A method's stored variants (its headline, backbone, ablations and baselines) side by side
per segment: shared by the Gating and Reasoning pages (pure pandas and plotly)."""

from __future__ import annotations

import json

import pandas as pd
import plotly.graph_objects as go

from ui.figures import styled


def method_config(methods: pd.DataFrame, method: str) -> dict:
    row = methods[methods["method"] == method]
    if row.empty or not isinstance(row["config"].iloc[0], str):
        return {}
    return json.loads(row["config"].iloc[0])


def variant_table(metrics: pd.DataFrame, method: str, order: list[str], headline: str,
                  metric: str = "auc") -> pd.DataFrame:
    """The method's stored variants (method, method_<variant>) x segments of one metric,
    long form with n so the page can format and flag it; `headline` names the method's
    own row, `order` sorts the variants."""
    names = {method: headline} | {f"{method}_{v}": v for v in order if v != headline}
    rows = metrics[metrics["method"].isin(names) & (metrics["metric"] == metric)].copy()
    rows["variant"] = rows["method"].map(names)
    rank = {v: i for i, v in enumerate(order)}
    return rows.sort_values(["variant"], key=lambda s: s.map(rank))


def variants_figure(rows: pd.DataFrame, segments: list[str], title: str) -> go.Figure:
    """One bar group per segment, one bar per variant."""
    fig = go.Figure()
    for variant, group in rows[rows["segment"].isin(segments)].groupby("variant", sort=False):
        group = group.set_index("segment").reindex(segments)
        fig.add_trace(go.Bar(x=segments, y=group["value"], name=variant,
                             customdata=group["n"],
                             hovertemplate="%{x}: %{y:.4f} (n=%{customdata:,})"
                                           f"<extra>{variant}</extra>"))
    fig.update_layout(barmode="group")
    values = rows.loc[rows["segment"].isin(segments), "value"].dropna()
    if len(values):
        fig.update_yaxes(range=[max(0.0, values.min() - 0.02), min(1.0, values.max() + 0.02)])
    return styled(fig, title, "", "AUC")
