"""Prompt pool: CoCo's soft prompts chosen per user. Does the pool specialise, whom does each
prompt serve, and where does the LLM's knowledge help the CRM?"""

from __future__ import annotations

import streamlit as st

from engine.formatting import number
from ui import export
from ui import prompt_pool as pp
from ui.common import decimals, page_header, plain, require_run, require_table
from ui.variants import method_config

page_header("Prompt pool", ":material/category:",
            "CoCo: each user's CRM representation selects soft prompts from a learned pool; "
            "the LLM reads the user's history with them, each prompt pulls out one vector, "
            "and the CRM attends over those vectors. Contradiction elimination trains the "
            "LLM's LoRA only on the samples its knowledge made worse.")
reader = require_run()
require_table(reader, "prompt_usage", "This run has no prompt-pool method (CoCo). Make a run "
              "whose profile includes `coco` (the demo profile does).")
mtime = reader.path.stat().st_mtime
state = st.session_state


@st.cache_data(show_spinner="Reading the prompt pool's diagnostics…", max_entries=4)
def load(run_id: str, mtime: float, _reader) -> dict:
    return {"usage": _reader.frame("prompt_usage"), "pool": _reader.frame("prompt_pool"),
            "users": _reader.frame("prompt_users"), "samples": _reader.samples(),
            "methods": _reader.methods(), "metrics": _reader.metrics("test"),
            "log": _reader.training_log()}


data = load(reader.run_id, mtime, reader)
methods = pp.coco_methods(data["usage"])
method = st.selectbox("Method", methods, key="pool_method") if len(methods) > 1 \
    else methods[0]
config = method_config(data["methods"], method)
inner = config.get("config", {})
pool_cfg = inner.get("pool", {})
usage = pp.with_segments(data["usage"][data["usage"]["method"] == method], data["samples"])
pool = data["pool"][data["pool"]["method"] == method]
users = data["users"][data["users"]["method"] == method]
log = data["log"][data["log"]["method"] == method]
codebook = pp.codebook_log(log)
shape = (reader.run_id, mtime, method)  # what every chart below is a function of
aucs = data["metrics"][(data["metrics"]["segment"] == "all")
                       & (data["metrics"]["metric"] == "auc")].set_index("method")["value"]

cols = st.columns(5)
cols[0].metric("CoCo AUC", number(aucs.get(method)), help="test AUC on the analysed samples")
cols[1].metric("Its CRM AUC", number(aucs.get(f"{method}_crm")),
               help=f"{inner.get('crm', 'the CRM')} alone on the same samples")
cols[2].metric("Codebook perplexity", number(codebook["perplexity"], digits=2),
               help=f"exp(entropy) of the users' top prompts after training; the pool has "
                    f"{pool_cfg.get('size', len(pool))} prompts, "
                    f"{number(codebook['dead_codes'], digits=0)} chosen by no training user")
cols[3].metric("Prompts per user", number(usage["n_selected"].mean(), digits=2),
               help=f"cosine >= {pool_cfg.get('theta', '?')}, the top one always, at most "
                    f"{pool_cfg.get('max_selected', '?')}")
cols[4].metric("LLM passes per 1k samples", number(
    1000 * config.get("eval_windows", 0) / max(len(usage), 1), digits=0),
    help=f"one pass per user window of up to {inner.get('window', '?')} samples")
st.caption(f"Trained on {config.get('train_windows', 0):,} windows "
           f"({config.get('train_samples', 0):,} samples): "
           f"{inner.get('prompt_epochs', '?')} epoch(s) with the LLM frozen, then "
           f"{inner.get('lora_epochs', '?')} with LoRA in the top "
           f"{inner.get('lora_top_layers', '?')} layers. Last L_Q "
           f"{number(codebook['l_q'])}, L_ortho {number(codebook['l_ortho'])}.")

st.markdown("#### CoCo, its CRM and ablations per segment (test)")
export.variants_panel(pp.variant_table(data["metrics"], method), pp.variants_figure,
                      "pool_variants", method,
                      "AUC. crm: the CRM alone; shared_only: no pool, the shared prompt only; "
                      "mean_pool: the LLM's states averaged instead of decoupled; "
                      "no_elimination: the LoRA learns from every sample; k<K>: other pool "
                      "sizes; coco: CoCo.", shape)

left, right = st.columns(2)
with left:
    export.chart_once(lambda: pp.usage_figure(pp.usage_long(pool)), "pool_usage", shape)
with right:
    matrix = pp.cosine_matrix(pool)
    export.chart_once(lambda: pp.cosine_figure(matrix), "pool_cosines", shape)
    off = pp.off_diagonal(matrix)
    if len(off):
        st.caption(f"Off-diagonal cosines: mean |cos| {number(abs(off).mean())}, largest "
                   f"{number(off.max())}.")

left, right = st.columns(2)
with left:
    if len(users):
        export.chart_once(lambda: pp.users_figure(users), "pool_users", shape)
with right:
    gain = pp.auc_gain(pool)
    export.chart_once(lambda: pp.gain_figure(gain), "pool_gain", shape)
st.dataframe(gain, hide_index=True, key="pool_prompts", placeholder="–",
             column_config=decimals("auc_crm", "auc_coco", "gain"))
export.table_csv(gain, f"{method}-prompts")

left, right = st.columns(2)
with left:
    curves = pp.mask_curves(log)
    if len(curves):
        export.chart_once(lambda: pp.mask_figure(curves), "pool_mask", shape)
    by_segment = pp.mask_by_segment(log, "coco:lora")  # the headline's LoRA phase
    if len(by_segment):
        export.chart_once(lambda: pp.mask_segment_figure(by_segment, "coco:lora"),
                          "pool_mask_segments", shape)
with right:
    segments = pp.helped_by_segment(usage)
    export.chart_once(lambda: pp.helped_figure(segments), "pool_helped", shape)
st.dataframe(segments, hide_index=True, key="pool_segments", placeholder="–",
             column_config=decimals("helped", "abs_move", "llm_share"))

st.markdown("#### Samples")
shown = pp.sample_view(usage)
asked = state.get("pool_sample")
if asked is not None and asked in set(shown["sample_id"]):
    shown = shown.set_index("sample_id", drop=False).loc[
        [asked, *[i for i in shown["sample_id"] if i != asked]]].reset_index(drop=True)
st.dataframe(shown, hide_index=True, key="pool_samples", placeholder="–",
             column_config=decimals("p_crm", "p_coco", "move", "top_cosine", "llm_share"))
export.table_csv(shown, f"{method}-samples")
if len(shown):
    pick = st.selectbox("A sample's prompts", shown["sample_id"].head(500).tolist(),
                        key="pool_case")
    row = usage.set_index("sample_id").loc[pick]
    st.markdown(f"User **{plain(row['user'])}**, item **{plain(row['item'])}**, label "
                f"{int(row['label'])}: CRM {number(row['p_crm'])} → CoCo "
                f"{number(row['p_coco'])}; the LLM's vectors took "
                f"{number(row['llm_share'], digits=2)} of the fusion's attention.")
    st.dataframe(pp.case_prompts(row, pool), hide_index=True, key="pool_case_prompts",
                 column_config=decimals("cosine", "weight"))
    if st.button("Open in the case browser", key="pool_open", icon=":material/person:"):
        state["cases_query"] = str(row["user"])
        state["cases_match"] = f"user:{row['user']}"
        st.switch_page("pages/3_Case_browser.py")
