"""Router lab: CoReLLa's entropy router, live. Samples whose CRM prediction is uncertain
(entropy above the threshold) take the LLM's probability; see what that costs and buys."""

from __future__ import annotations

import streamlit as st

from engine import routing
from engine.formatting import METRIC_NAMES, duration_ms
from engine.metrics import LOW_CLASS, LOW_N
from ui import export
from ui import router_charts as charts
from ui.common import page_header, plain, require_run, require_table
from ui.glossary import TERMS

page_header("Router lab", ":material/alt_route:",
            "CoReLLa routes a sample to the LLM when the CRM's click probability is uncertain: "
            "binary entropy of p_crm (bits) above the threshold.")
reader = require_run()
require_table(reader, "routing", "This run has no routed method (such as CoReLLa), so there "
              "is nothing to route. Make a run whose profile includes `corella` to use the "
              "router lab.")
mtime = reader.path.stat().st_mtime


@st.cache_data(show_spinner="Reading the routing table…", max_entries=4)
def routed_splits(run_id: str, mtime: float, _reader) -> dict[str, list[str]]:
    rows = _reader.frame("routing")[["method", "split"]].drop_duplicates()
    return {m: sorted(g["split"]) for m, g in rows.groupby("method")}


# a resource, not data: one read-only copy shared by every rerun (cache_data would unpickle
# the samples' arrays and the figures on each), with the charts that do not move with the
# threshold built whole and those that do built without their line or marker
@st.cache_resource(show_spinner="Preparing the router…", max_entries=8)
def lab_data(run_id: str, mtime: float, method: str, split: str, _reader) -> dict:
    rows = _reader.frame("routing")
    rows = rows[(rows["method"] == method) & (rows["split"] == split)].sort_values("sample_id")
    data = routing.RouterData(rows["label"], rows["p_crm"], rows["p_llm"],
                              rows["entropy"] if "entropy" in rows else None)
    settings = routing.method_settings(_reader.methods(), method)
    curve = routing.quality_curve(data)
    crm_rel = routing.reliability(data.p_crm, data.labels)
    llm_rel = routing.reliability(data.p_llm, data.labels)
    whole = data.metrics_at(1.0)  # threshold 1: no sample goes to the LLM
    return {"data": data, "settings": settings, "crm_rel": crm_rel, "llm_rel": llm_rel,
            "hist_base": charts.entropy_histogram_base(
                charts.entropy_counts(data.entropy, data.crm_correct)).to_dict(),
            "curve_base": charts.quality_curve_base(curve, whole["crm_auc"],
                                                    whole["llm_auc"]).to_dict(),
            "buckets_fig": charts.bucket_bars(routing.bucket_table(data)),
            "reliability_fig": charts.reliability_diagram(crm_rel, llm_rel)}


choices = routed_splits(reader.run_id, mtime, reader)
left, right = st.columns([2, 1])
method = left.selectbox("Routed method", list(choices), key="router_method")
split = right.radio("Split", ["valid", "test"], index=1, horizontal=True, key="router_split")
if split not in choices[method]:
    st.info(f"{plain(method)} has no routed {split} samples in this run.")
    st.stop()
lab = lab_data(reader.run_id, mtime, method, split, reader)
data: routing.RouterData = lab["data"]

state = st.session_state
if "router_threshold" not in state:  # first visit: the method's own setting, else 20% LLM
    configured = lab["settings"]["threshold"]
    state.router_threshold = configured if configured is not None else min(
        1.0, max(0.0, data.threshold_for_share(0.2)))
state.router_budget = round(100 * data.share_for_threshold(state.router_threshold))
n_pos = int(data.labels.sum())
if data.labels.size < LOW_N or min(n_pos, data.labels.size - n_pos) < LOW_CLASS:
    st.warning(f"Low confidence: {data.labels.size:,} routed {split} samples with {n_pos:,} "
               "clicks; the metrics below move a lot with a few samples.",
               icon=":material/warning:")


def threshold_moved() -> None:
    state.router_budget = round(100 * data.share_for_threshold(state.router_threshold))


def budget_moved() -> None:
    state.router_threshold = min(1.0, max(0.0, data.threshold_for_share(state.router_budget / 100)))


# why an AUC is NaN here: the split's analysed samples hold one label class
NAN_REASON = (f"n/a (one class in {split})" if n_pos in (0, data.labels.size) else "n/a")


def fmt(value: float, pattern: str = "{:.4f}") -> str:
    return NAN_REASON if value != value else pattern.format(value)


@st.fragment
def router() -> None:
    a, b = st.columns(2)
    threshold = a.slider("Entropy threshold (above it the LLM answers)", 0.0, 1.0, step=0.01,
                         format="%.3f", key="router_threshold", on_change=threshold_moved,
                         persist_state="session")
    b.slider("LLM budget (% of samples sent to the LLM)", 0, 100, step=1, format="%d%%",
             key="router_budget", on_change=budget_moved)
    m = data.metrics_at(threshold)
    cost = routing.cost_per_1k(m["llm_share"], lab["settings"]["crm_ms"],
                               lab["settings"]["llm_ms"])

    cols = st.columns(6)
    cols[0].metric("LLM share", f"{100 * m['llm_share']:.1f}%", help=f"{m['n_llm']:,} of "
                   f"{m['n']:,} {split} samples go to the LLM")
    for col, key, name in zip(cols[1:4], ("auc", "logloss", "acc"), ("AUC", "LogLoss", "ACC")):
        delta = m[f"routed_{key}"] - m[f"crm_{key}"]
        col.metric(f"Routed {name}", fmt(m[f"routed_{key}"]),
                   delta=None if delta != delta else f"{delta:+.4f} vs CRM",
                   delta_color="inverse" if key == "logloss" else "normal")
    cols[4].metric("LLM calls / 1k samples", f"{cost['llm_calls_per_1k']:.0f}")
    cols[5].metric("Est. time / 1k samples", duration_ms(cost["ms_per_1k"], "no latency"),
                   help="1000 × CRM latency + LLM calls × LLM latency (measured per sample); "
                        "n/a when the run did not record both latencies")
    cols = st.columns(8)
    for i, (who, name) in enumerate((("crm", "CRM"), ("llm", "LLM"))):
        values = {"auc": m[f"{who}_auc"], "logloss": m[f"{who}_logloss"],
                  "ece": charts.calibration_error(lab[f"{who}_rel"]), "acc": m[f"{who}_acc"]}
        for j, (key, label) in enumerate(METRIC_NAMES.items()):
            if key in values:
                cols[4 * i + j].metric(f"{name} {label}", fmt(values[key]),
                                       help=TERMS[label])

    top_left, top_right = st.columns(2)
    export.chart(charts.with_threshold(lab["hist_base"], threshold), "router_hist", top_left)
    export.chart(charts.with_setting(lab["curve_base"], m["llm_share"], m["routed_auc"]),
                 "router_curve", top_right)


router()
# what the threshold does not move stays out of the fragment: a slider step redraws two
# charts, not four
low_left, low_right = st.columns(2)
export.chart(lab["buckets_fig"], "router_buckets", low_left)
export.chart(lab["reliability_fig"], "router_reliability", low_right)
