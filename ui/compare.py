"""The Compare page's tables and figures (pure pandas and plotly): every method on the same
samples (engine.compare), their costs, the quality-vs-cost front and two methods head to
head."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from engine import compare
from engine import formatting as fmt
from engine.formatting import METRIC_NAMES, metric_cells
from ui.figures import styled

COST_AXES = {  # cost column -> (axis title, log axis)
    "infer_ms_per_1k": ("measured inference ms per 1,000 samples", True),
    "llm_calls_per_1k": ("LLM calls per 1,000 samples", False),
    "train_seconds": ("training seconds", True),
    "offline_llm_seconds": ("offline LLM seconds (teacher, reasoning)", False),
}
FAMILY_COLOURS = {"crm": "#636EFA", "corella": "#EF553B", "sllmr": "#00CC96",
                  "llmcf": "#AB63FA", "cora": "#FFA15A", "coco": "#19D3F3"}


def default_methods(methods: list[str]) -> list[str]:
    """The CRMs and each hybrid's headline: what a first look compares."""
    return [m for m in methods if compare.family(m) == "crm" or m in compare.HYBRIDS]


def overall_table(long: pd.DataFrame, costs: pd.DataFrame) -> pd.DataFrame:
    """Per method on the common samples: the metrics as display text (⚠ where few), n, and
    its costs with units; best AUC first."""
    overall = long[long["segment"] == "all"]
    if overall.empty:
        return pd.DataFrame()
    cells = metric_cells(overall, "method", "metric").reindex(
        columns=list(METRIC_NAMES), fill_value=fmt.NA)
    cells.columns = list(METRIC_NAMES.values())
    auc = overall[overall["metric"] == "auc"].set_index("method")["value"].reindex(cells.index)
    cost = costs.set_index("method").reindex(cells.index)
    table = pd.DataFrame({"Method": cells.index, "Family": cost["family"].fillna("").to_numpy()})
    for name in METRIC_NAMES.values():
        table[name] = cells[name].to_numpy()
    table["Samples"] = [fmt.count(n) for n in overall.groupby("method")["n"].max()
                        .reindex(cells.index)]
    table["LLM calls / 1k"] = [fmt.count(v) for v in cost["llm_calls_per_1k"]]
    table["Inference / 1k"] = [fmt.duration_ms(v, "not recorded")
                               for v in cost["infer_ms_per_1k"]]
    table["Train time"] = [fmt.duration(v, "not recorded") for v in cost["train_seconds"]]
    table["Offline LLM"] = [fmt.duration(v, "—") if v else "—"
                            for v in cost["offline_llm_seconds"]]
    order = np.argsort(-auc.fillna(-np.inf).to_numpy(), kind="stable")
    return table.iloc[order].reset_index(drop=True)


def segment_table(long: pd.DataFrame, metric: str = "auc") -> pd.DataFrame:
    """Methods x segments of one metric as display text on the common samples (⚠ where a
    segment has few samples or one class); each column names its n."""
    part = long[long["metric"] == metric]
    if part.empty:
        return pd.DataFrame()
    wide = metric_cells(part, "method", "segment")
    sizes = part.groupby("segment")["n"].max()
    order = [s for s in part["segment"].drop_duplicates() if s in wide.columns]
    wide = wide[order]
    wide.columns = [f"{s} (n={sizes[s]:,})" for s in order]
    return wide.reset_index().rename(columns={"method": "Method"})


def frontier(long: pd.DataFrame, costs: pd.DataFrame, cost: str,
             metric: str = "auc") -> pd.DataFrame:
    """Per method: its cost, its quality on the common samples and whether it is on the
    Pareto front (no method both cheaper and better)."""
    quality = long[(long["segment"] == "all") & (long["metric"] == metric)].set_index(
        "method")["value"]
    out = costs.set_index("method").reindex(quality.index)[["family", cost]].rename(
        columns={cost: "cost"})
    out["quality"] = quality
    out["front"] = compare.pareto_front(out["cost"].to_numpy(), out["quality"].to_numpy())
    return out.reset_index()


def frontier_figure(points: pd.DataFrame, cost: str, metric: str = "auc") -> go.Figure:
    title, log = COST_AXES[cost]
    fig = go.Figure()
    for name, part in points.groupby("family", sort=False):
        fig.add_trace(go.Scatter(
            x=part["cost"], y=part["quality"], mode="markers+text", name=name,
            text=part["method"], textposition="top center", textfont={"size": 10},
            marker={"size": 11, "color": FAMILY_COLOURS.get(name, "#888"),
                    "line": {"width": [2 if f else 0 for f in part["front"]],
                             "color": "#222"}},
            hovertemplate="%{text}: %{y:.4f} at %{x:,.1f}<extra>" + name + "</extra>"))
    front = points[points["front"]].sort_values("cost")
    if len(front) > 1:
        fig.add_trace(go.Scatter(x=front["cost"], y=front["quality"], mode="lines",
                                 name="Pareto front", line={"dash": "dot", "color": "#222"},
                                 hoverinfo="skip"))
    if log and (points["cost"] > 0).any():
        fig.update_xaxes(type="log")
    return styled(fig, f"{METRIC_NAMES.get(metric, metric)} against cost on the same samples "
                       "(outlined: on the Pareto front)", title, METRIC_NAMES.get(metric, metric),
                  height=440)


def head_to_head_figure(table: pd.DataFrame, a: str, b: str) -> go.Figure:
    """AUC(b) - AUC(a) per segment with one standard error (DeLong, paired); faded where
    the segment is small or one-class."""
    colours = ["#BBBBBB" if s else ("#00CC96" if g > 0 else "#EF553B")
               for s, g in zip(table["shaky"], table["gap"].fillna(0))]
    fig = go.Figure(go.Bar(
        x=table["segment"], y=table["gap"], marker_color=colours,
        error_y={"type": "data", "array": table["se"], "visible": True},
        customdata=np.stack([table["n"], table["auc_a"], table["auc_b"], table["winner"]], 1)
        if len(table) else None,
        hovertemplate="%{x} (n=%{customdata[0]:,}): " + f"{a} " + "%{customdata[1]:.4f}, "
                      + f"{b} " + "%{customdata[2]:.4f}<br>winner: %{customdata[3]}"
                      "<extra></extra>"))
    fig.add_hline(y=0, line_color="#444", line_width=1)
    return styled(fig, f"AUC of {b} minus {a} per segment (± one standard error; grey: few "
                       "samples)", "", "AUC difference", legend=False)


def wins_summary(table: pd.DataFrame, a: str, b: str) -> str:
    """One line: where each method wins beyond the standard error."""
    solid = table[~table["shaky"]]

    def listed(name: str) -> str:
        segs = solid.loc[solid["winner"] == name, "segment"].tolist()
        return ", ".join(segs) if segs else "nowhere"

    ties = solid.loc[solid["winner"] == "tie", "segment"].tolist()
    return (f"{a} wins in {listed(a)}; {b} wins in {listed(b)}; within one standard error "
            f"in {', '.join(ties) if ties else 'no segment'}.")


def report_sections(predictions: pd.DataFrame, samples: pd.DataFrame, methods: pd.DataFrame,
                    segments: list[str]) -> dict[str, tuple[str, go.Figure]]:
    """The run report's part built from the store alone (whatever pages were opened): the
    quality-vs-inference-cost front of the CRMs and headlines, then one section per method
    of the five the run holds with its variants beside the run's first CRM per segment, each
    on the samples all of them scored. key -> (section title, figure)."""
    from ui.variants import variants_figure

    stored = [m for m in methods["method"] if m in predictions and predictions[m].notna().any()]
    crms = [m for m in stored if compare.family(m) == "crm"]
    costs = compare.costs(methods)
    out: dict[str, tuple[str, go.Figure]] = {}
    chosen = default_methods(stored)
    if chosen:
        common = compare.same_samples(predictions, samples, chosen)
        points = frontier(compare.metrics(common, chosen), costs, "infer_ms_per_1k")
        out["report_frontier"] = ("Compare: quality against inference cost",
                                  frontier_figure(points, "infer_ms_per_1k"))
    for name in compare.HYBRIDS:
        variants = [m for m in stored if compare.family(m) == name]
        if not variants:
            continue
        names = crms[:1] + variants
        common = compare.same_samples(predictions, samples, names)
        long = compare.metrics(common, names)
        rows = long[long["metric"] == "auc"].assign(variant=lambda f: f["method"])
        title = f"{name}: its variants and {crms[0] if crms else 'no CRM'} per segment " \
                f"(AUC on the same {len(common):,} samples)"
        out[f"report_{name}"] = (name, variants_figure(rows, segments, title))
    return out


def run_report_sections(reader, split: str) -> dict[str, tuple[str, go.Figure]]:
    """report_sections of a run (engine.store.RunReader); the home page builds them only when
    the report is downloaded."""
    from ui.export import SEGMENTS

    return report_sections(reader.predictions(split), reader.samples(split), reader.methods(),
                           SEGMENTS)
