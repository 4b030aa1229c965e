"""Collaborative weights: CoRA's adapter weights generated per (user, item). Do they move the
frozen LLM, for whom, and does the move follow the collaborative signal?"""

from __future__ import annotations

import streamlit as st

from engine.formatting import number
from engine.metrics import auc
from ui import collab, export
from ui.common import decimals, page_header, plain, require_run, require_table
from ui.variants import method_config

page_header("Collaborative weights", ":material/hub:",
            "CoRA: a frozen LLM whose adapter weights are generated for each (user, item) "
            "from collaborative-filtering embeddings. A small query transformer turns the "
            "pair into A(u, i); each projection's output gains (alpha/r)·(x A) P.")
reader = require_run()
require_table(reader, "deltas", "This run has no generated-weights method (CoRA). Make a run "
              "whose profile includes `cora` (the demo profile does).")
mtime = reader.path.stat().st_mtime
state = st.session_state


@st.cache_data(show_spinner="Reading the generated weights' diagnostics…", max_entries=4)
def load(run_id: str, mtime: float, _reader) -> dict:
    return {"deltas": _reader.frame("deltas"), "samples": _reader.samples(),
            "methods": _reader.methods(), "metrics": _reader.metrics("test"),
            "log": _reader.training_log()}


data = load(reader.run_id, mtime, reader)
methods = collab.cora_methods(data["deltas"])
method = st.selectbox("Method", methods, key="collab_method") if len(methods) > 1 \
    else methods[0]
config = method_config(data["methods"], method)
frame = collab.with_delta(data["deltas"][data["deltas"]["method"] == method], data["samples"])
aucs = data["metrics"][(data["metrics"]["segment"] == "all")
                       & (data["metrics"]["metric"] == "auc")].set_index("method")["value"]
inner = config.get("config", {})
shape = (reader.run_id, mtime, method)  # what every chart below is a function of

cols = st.columns(5)
cols[0].metric("CoRA AUC", number(aucs.get(method)),
               help="test AUC on the analysed samples")
cols[1].metric("Base LLM AUC", number(aucs.get(f"{method}_base")),
               help="the same LLM and prompts without generated weights")
test = frame[frame["split"] == "test"]
cols[2].metric("MF alone AUC", number(auc(test["label"].to_numpy(), test["p_mf"].to_numpy())),
               help="the collaborative model CoRA reads, on the same analysed test samples")
cols[3].metric("Training prompts", f"{config.get('train_samples', 0):,}",
               help=f"x {inner.get('epochs', '?')} epochs; only the generator and P learn")
collab_cfg = inner.get("collab", {})
cols[4].metric("Layers with weights", "all" if not collab_cfg.get("top_layers")
               else f"top {collab_cfg.get('top_layers')}",
               help=f"targets {', '.join(collab_cfg.get('targets', []))}; rank "
                    f"{collab_cfg.get('rank', '?')}")
st.caption(f"Collaborative embeddings: **{plain(str(inner.get('cf', '?')).upper())}**; frozen "
           f"layers' states: {plain(config.get('lower_states', '?'))}.")

st.markdown("#### CoRA, its ablations and baselines per segment (test)")
rows = collab.variant_table(data["metrics"], method)
export.variants_panel(rows, collab.variants_figure, "collab_variants", method,
                      "AUC. base: the LLM without generated weights; zero_pair: the pair's "
                      "embeddings zeroed (one adapter for everyone); shuffled_user: another "
                      "sample's user; crm: the CRM's embeddings instead of MF's; mf: the "
                      "collaborative model alone (every sample); cora: CoRA.", shape)

left, right = st.columns(2)
with left:
    export.chart_once(lambda: collab.cora_vs_base_figure(frame), "collab_cora_vs_base", shape)
    st.caption("Above the diagonal the weights raise P(yes). If they help, green points rise "
               "and red points fall.")
with right:
    export.chart_once(lambda: collab.mf_figure(collab.mf_deciles(frame)), "collab_mf_deciles",
                      shape)
    st.caption("If the weights carry the collaborative signal, the move rises with the MF "
               "score.")

left, right = st.columns(2)
with left:
    export.chart_once(lambda: collab.module_norms_figure(collab.module_norms(frame)),
                      "collab_modules", shape)
with right:
    segments = collab.by_segment(frame)
    export.chart_once(lambda: collab.segment_figure(segments), "collab_segments", shape)
st.dataframe(segments, hide_index=True, key="collab_segment_table", placeholder="–",
             column_config=decimals("delta_norm", "abs_move", "toward_label"))
export.table_csv(segments, f"{method}-segments")
cos = frame["a_cos_mean"]
st.caption(f"A(u, i)'s cosine to the mean A: median {number(cos.median())}, 10th percentile "
           f"{number(cos.quantile(0.1))}. Near 1, the weights hardly depend on the pair.")

curves = collab.training_curves(data["log"][data["log"]["method"] == method])
if len(curves):
    export.chart_once(lambda: collab.training_figure(curves), "collab_training", shape)

st.markdown("#### Samples")
order = st.radio("Order by", ["largest move", "largest delta"], horizontal=True,
                 key="collab_order")
shown = collab.sample_view(frame, order)
asked = state.get("collab_sample")
if asked is not None and asked in set(shown["sample_id"]):
    shown = shown.set_index("sample_id", drop=False).loc[
        [asked, *[i for i in shown["sample_id"] if i != asked]]].reset_index(drop=True)
st.dataframe(shown, hide_index=True, key="collab_samples", placeholder="–",
             column_config=decimals("p_base", "p_cora", "move", "p_mf", "delta_norm",
                                    "user_norm", "item_norm", "a_cos_mean"))
export.table_csv(shown, f"{method}-samples")
users = shown["user"].dropna().astype(str).drop_duplicates().head(500).tolist()
if users:
    pick = st.selectbox("Open a user's case", users, key="collab_open_user")
    if st.button("Open in the case browser", key="collab_open", icon=":material/person:"):
        state["cases_query"] = pick
        state["cases_match"] = f"user:{pick}"
        st.switch_page("pages/3_Case_browser.py")
