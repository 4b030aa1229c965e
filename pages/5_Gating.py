"""Gating: S-LLMR's teacher and its gate. Where does the gate trust the LLM's ordering, and
is the teacher right there?"""

from __future__ import annotations

import streamlit as st

from engine.formatting import number
from ui import export, gating
from ui.common import page_header, plain, require_run, require_table

page_header("Gating", ":material/tune:",
            "S-LLMR trains the CRM with the LLM as a teacher: the teacher's within-user pairs "
            "become a hinge on the CRM's logits, weighted by a gate alpha from Cold, Tail and "
            "the CRM's uncertainty q. No LLM at inference.")
reader = require_run()
require_table(reader, "gates", "This run has no gated method (S-LLMR). Make a run whose "
              "profile includes `sllmr` (the demo profile does).")
mtime = reader.path.stat().st_mtime
state = st.session_state


@st.cache_data(show_spinner="Reading the gates and the teacher's pairs…", max_entries=4)
def load(run_id: str, mtime: float, _reader) -> dict:
    pairs = _reader.frame("pairs") if _reader.has_table("pairs") else None
    return {"gates": _reader.frame("gates"), "pairs": pairs, "methods": _reader.methods(),
            "metrics": _reader.metrics("test"), "log": _reader.training_log()}


data = load(reader.run_id, mtime, reader)
methods = gating.gated_methods(data["gates"])
method = st.selectbox("Method", methods, key="gating_method") if len(methods) > 1 else methods[0]
config = gating.method_config(data["methods"], method)
gates = data["gates"][data["gates"]["method"] == method]
pairs = None if data["pairs"] is None else data["pairs"][data["pairs"]["method"] == method]
shape = (reader.run_id, mtime, method)  # what every chart below is a function of

cols = st.columns(5)
cols[0].metric("Teacher", plain(gating.teacher_label(config.get("teacher", "?"))),
               help=f"the LLM whose P(yes) orders the pairs: {plain(config.get('teacher', '?'))}")
cols[1].metric("Teacher AUC", number(config.get("teacher_auc")),
               help="the teacher's P(yes) against the labels of its labelled candidates")
cols[2].metric("Teacher pair accuracy", number(config.get("teacher_pair_accuracy")),
               help="labelled pairs whose teacher order agrees with the labels")
cols[3].metric("Pairs", f"{config.get('pairs', 0):,}",
               help=f"{config.get('candidates', 0):,} candidates scored")
cols[4].metric("Gate", plain(config.get("gate", "?")),
               help="reliability: fitted to where the teacher is right, applied with "
                    "stop-gradient; joint: learned with the loss (the paper's, collapses)")

left, right = st.columns([1, 2])
with left:
    st.markdown("#### Gate weights")
    weights = gating.gate_weights(config)
    st.dataframe(weights, hide_index=True, key="gating_weights", placeholder="–",
                 column_config={c: st.column_config.NumberColumn(format="%.3f")
                                for c in weights.columns if c != "feature"})
    export.table_csv(weights, f"{method}-gate-weights")
    st.caption(f"alpha = sigmoid(w · [Cold, Tail, q] + b). Cold: the sample's history length "
               f"is at most {config.get('cold_cut_hist_len', float('nan')):.0f} ratings (the "
               "bottom 20% of training samples); q chosen on held-out users: "
               f"{plain(config.get('q', '?'))}.")
with right:
    export.chart_once(lambda: gating.alpha_vs_q_figure(gates), "gating_alpha_q", shape)

left, right = st.columns(2)
with left:
    export.chart_once(lambda: gating.alpha_by_cell_figure(gating.alpha_by_cell(gates)),
                      "gating_alpha_cells", shape)
with right:
    if pairs is not None and len(pairs):
        export.chart_once(lambda: gating.pair_accuracy_figure(
            gating.pair_accuracy_by_alpha(pairs),
            config.get("teacher_pair_accuracy", float("nan"))), "gating_pair_accuracy", shape)
        st.caption("Is alpha high where the teacher is right? If the gate works, accuracy "
                   "rises with the decile.")
    else:
        st.info("This run stored no teacher pairs.")

st.markdown("#### The variants per segment (test)")
rows = gating.variant_table(data["metrics"], method)
export.variants_panel(rows, gating.variants_figure, "gating_variants", method,
                      "AUC. none: the backbone alone; global: every pair at alpha = 1; "
                      "pointwise: squared error to the teacher; kd: distilled from the "
                      "teacher's probabilities; joint: the paper's jointly learned gate; "
                      "gated: S-LLMR.", shape)

st.markdown("#### Training log")
curves = gating.training_curves(data["log"][data["log"]["method"] == method])
if len(curves):
    shown_metric = st.radio("Per epoch", list(gating.LOG_METRICS), horizontal=True,
                            format_func=gating.LOG_METRICS.get, key="gating_log_metric")
    export.chart_once(lambda: gating.training_curves_figure(curves, shown_metric),
                      "gating_training_log", (*shape, shown_metric))
    st.caption("The regulariser's log per variant. The joint gate (the paper's) can only lower "
               "alpha, since the loss grows with it; the reliability gate is fixed before "
               "training, so its mean alpha stays flat.")
else:
    st.info("This run stored no training log for the regularised variants.")

st.markdown("#### Teacher pairs")
if pairs is not None and len(pairs):
    c1, c2 = st.columns(2)
    only = c1.radio("Pairs", ["all", "labelled", "teacher wrong"], horizontal=True,
                    key="gating_pairs_filter")
    order = c2.radio("Order by", ["alpha", "teacher gap"], horizontal=True,
                     key="gating_pairs_order")
    shown = gating.pair_view(pairs, only, order)
    st.dataframe(shown, hide_index=True, key="gating_pairs", placeholder="–",
                 column_config={c: st.column_config.NumberColumn(format="%.3f")
                                for c in ("s_llm_i", "s_llm_j", "gap_before", "gap_after",
                                          "alpha")})
    export.table_csv(shown, f"{method}-pairs")
    users = shown["user"].astype(str).drop_duplicates().head(500).tolist()
    if users:
        pick = st.selectbox("Open a user's case", users, key="gating_open_user")
        if st.button("Open in the case browser", key="gating_open", icon=":material/person:"):
            state["cases_query"] = pick
            state["cases_match"] = f"user:{pick}"
            st.switch_page("pages/3_Case_browser.py")
