"""Reasoning: LLM-CF's chains of thought. What did the LLM write, what does a sample read, and
does the CRM follow its examples?"""

from __future__ import annotations

import streamlit as st

from engine.formatting import number
from ui import export, reasoning
from ui.common import page_header, plain, require_run, require_table
from ui.variants import method_config

page_header("Reasoning", ":material/psychology:",
            "LLM-CF: the LLM explains a pool of training decisions offline; each sample "
            "retrieves the most similar explained examples, and a small transformer (ICT) "
            "reads their features, explanations and labels into one more CRM field. No LLM "
            "at inference.")
reader = require_run()
require_table(reader, "neighbours", "This run has no in-context method (LLM-CF). Make a run "
              "whose profile includes `llmcf` (the demo profile does).")
mtime = reader.path.stat().st_mtime
state = st.session_state


@st.cache_data(show_spinner="Reading the explanations and the retrieved examples…",
               max_entries=4)
def load(run_id: str, mtime: float, _reader) -> dict:
    return {"cot": _reader.frame("cot"), "neighbours": _reader.frame("neighbours"),
            "items": _reader.frame("items"), "methods": _reader.methods(),
            "metrics": _reader.metrics("test")}


data = load(reader.run_id, mtime, reader)
methods = reasoning.llmcf_methods(data["neighbours"])
method = st.selectbox("Method", methods, key="reasoning_method") if len(methods) > 1 \
    else methods[0]
config = method_config(data["methods"], method)
cot = data["cot"][data["cot"]["method"] == method] if "method" in data["cot"] else data["cot"]
neighbours = data["neighbours"][data["neighbours"]["method"] == method]
shape = (reader.run_id, mtime, method)  # what every chart below is a function of

speed = config.get("cot_tokens_per_s")
cols = st.columns(5)
cols[0].metric("Explanations", f"{config.get('kept', len(cot)):,}",
               help=f"of {config.get('pool', len(cot)):,} written for a label-balanced pool of "
                    "training samples (kept: quality above the configured minimum)")
cols[1].metric("Tokens each", number(config.get("cot_mean_tokens"), digits=1),
               help=f"mean new tokens; cap {config.get('config', {}).get('cot_tokens', '?')}")
cols[2].metric("Tokens/s", "cached" if speed is None or speed != speed else f"{speed:.1f}",
               help="generation speed of this run (cached: every text came from the cache)")
cols[3].metric("Mean quality", number(config.get("cot_mean_quality")),
               help="mean of completeness, relevance, consistency and repetition (0–1)")
cols[4].metric("Examples per sample", f"{config.get('k', '?')}",
               help="K: half clicked, half not; never the sample itself nor a later sample "
                    "of the same user")
offline = number(config.get("offline_seconds"), digits=0)
st.caption(f"Written by **{plain(config.get('writer', '?'))}** (the base model, or the run's "
           f"LoRA adapter), greedy, in its chat template; {offline} s offline (cached texts "
           "cost nothing).")

st.markdown("#### LLM-CF and its ablations per segment (test)")
rows = reasoning.variant_table(data["metrics"], method)
export.variants_panel(rows, reasoning.variants_figure, "reasoning_variants", method,
                      "AUC. none: the backbone alone; kd: distilled from the LLM's P(yes) on "
                      "the pool's samples; random: random examples instead of similar ones; "
                      "mean_pool: examples averaged instead of read by the decoder; no_cot: "
                      "features and labels without the explanations; llmcf: LLM-CF.", shape)

left, right = st.columns(2)
with left:
    export.chart_once(lambda: reasoning.similarity_figure(neighbours), "reasoning_similarity",
                      shape)
with right:
    export.chart_once(lambda: reasoning.vote_figure(
        reasoning.vote_table(reasoning.neighbour_votes(neighbours))), "reasoning_votes", shape)
    st.caption("Each sample's examples vote with their labels, weighted by the ICT's "
               "attention. If the examples carry signal, the click rate rises with the vote; "
               "if LLM-CF follows them, its accuracy does too.")

st.markdown("#### The explanations")
export.chart_once(lambda: reasoning.quality_figure(reasoning.quality_by_decision(cot)),
                  "reasoning_quality_parts", shape)
c1, c2, c3, c4 = st.columns([1, 2, 2, 2])
label = c1.radio("Decision", ["all", "clicked", "not clicked"], key="reasoning_label")
quality = c2.slider("Quality", 0.0, 1.0, (0.0, 1.0), 0.01, key="reasoning_quality")
item_query = c3.text_input("Item", key="reasoning_item", placeholder="id or part of a title")
genre = c4.selectbox("Genre", reasoning.genres(data["items"]), index=None, key="reasoning_genre",
                     placeholder="any genre")
shown = reasoning.cot_view(cot, data["items"], label, quality, item_query, genre)
st.caption(f"{len(shown):,} of {len(cot):,} explanations, best quality first.")
st.dataframe(shown, hide_index=True, key="reasoning_cot", placeholder="–",
             column_config={"text": st.column_config.TextColumn("explanation", width="large"),
                            **{c: st.column_config.NumberColumn(format="%.3f")
                               for c in ("quality", *reasoning.QUALITY_PARTS)}})
export.table_csv(shown, f"{method}-explanations")

st.markdown("#### A sample and what it read")
moved = reasoning.moved_samples(neighbours)
asked = state.get("reasoning_sample")
ids = moved["sample_id"].tolist()
if asked is not None and asked in set(neighbours["sample_id"]) and asked not in ids:
    ids = [asked, *ids]
if state.get("reasoning_pick") not in ids:
    state["reasoning_pick"] = asked if asked in ids else (ids[0] if ids else None)
if ids:
    moves = dict(zip(moved["sample_id"], moved["moved"]))
    pick = st.selectbox("Sample (those LLM-CF moved most from the backbone first)", ids,
                        key="reasoning_pick",
                        format_func=lambda i: f"#{i}" + (f" · moved {moves[i]:+.3f}"
                                                         if i in moves else ""))
    summary = reasoning.sample_summary(neighbours, int(pick))
    m = st.columns(5)
    m[0].metric("Label", "clicked" if summary["label"] > 0.5 else "not clicked")
    m[1].metric("Backbone P(click)", number(summary["p_backbone"]))
    m[2].metric("LLM-CF P(click)", number(summary["p_llmcf"]),
                delta=f"{summary['p_llmcf'] - summary['p_backbone']:+.4f}")
    m[3].metric("Examples' vote", number(summary["vote"]),
                help="the examples' labels weighted by the ICT's attention on them")
    m[4].metric("Attention on itself", number(summary["attention_self"]),
                help="the final position's attention on the sample's own token")
    examples = reasoning.sample_examples(neighbours, cot, data["items"], int(pick))
    st.dataframe(examples, hide_index=True, key="reasoning_examples", placeholder="–",
                 column_config={"text": st.column_config.TextColumn("explanation",
                                                                    width="large"),
                                **{c: st.column_config.NumberColumn(format="%.3f")
                                   for c in ("similarity", "sim_history", "sim_target",
                                             "attention", "recon_cos")}})
    export.table_csv(examples, f"{method}-sample-{pick}-examples")
    samples = reader.samples_for(sample_ids=[int(pick)])
    if len(samples):
        user = str(samples["user"].iloc[0])
        if st.button(f"Open user {plain(user)} in the case browser", key="reasoning_open",
                     icon=":material/person:"):
            state["cases_query"] = user
            state["cases_match"] = f"user:{user}"
            state["cases_prompt_sample"] = int(pick)
            st.switch_page("pages/3_Case_browser.py")
