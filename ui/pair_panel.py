"""The case browser's live-scoring panel: pick any user and item of the run and score the
pair with the run's saved CRMs and LLM (engine.scoring), showing the prompt the LLM read."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pandas as pd
import streamlit as st

from engine.errors import DuetError, StoreError
from engine.models.generation import Decoding
from engine.scoring import PairScorer
from engine.store import RunReader
from ui import cases
from ui.common import plain

RESULT_KEY = "cases_live_result"


@st.cache_resource(show_spinner="Loading the run's feature tables…", max_entries=2)
def scorer_for(path: str, mtime: float, _reader: RunReader) -> PairScorer:
    """One scorer per run file version; its models load on first use and stay loaded."""
    del path, mtime
    return PairScorer(_reader)


def pair_panel(reader: RunReader, users: pd.DataFrame, items: pd.DataFrame,
               default_user: str | None, default_item: str | None,
               method: str | None, threshold: float) -> None:
    state = st.session_state
    try:
        scorer = scorer_for(str(reader.path), reader.path.stat().st_mtime, reader)
    except StoreError as exc:
        st.info(f"This run cannot score new pairs: {plain(exc)}. Runs made with Duet 0.2 or later "
                "store the feature tables it needs; make the run again.")
        return
    user_ids = users["user"].astype(str).tolist()
    item_ids = items["item"].astype(str).tolist()
    titles = dict(zip(item_ids, items["title"].astype(str)))
    # the pickers follow the case opened above whenever that changes, else keep their value
    opened = (default_user, default_item)
    followed = state.get("cases_live_opened") != opened
    state["cases_live_opened"] = opened
    if default_user in user_ids and followed or state.get("cases_live_user") not in user_ids:
        state["cases_live_user"] = default_user if default_user in user_ids else user_ids[0]
    if default_item in item_ids and followed or state.get("cases_live_item") not in item_ids:
        state["cases_live_item"] = default_item if default_item in item_ids else item_ids[0]
    left, mid, right = st.columns([1, 2, 1])
    user = left.selectbox("User", user_ids, key="cases_live_user")
    item = mid.selectbox("Item", item_ids, key="cases_live_item",
                         format_func=lambda i: f"{i} · {titles.get(i, '')}")
    cutoff = right.date_input("History before (empty: all ratings)", value=None,
                              key="cases_live_before",
                              help="only the user's ratings before this day feed the models")
    llm_methods = scorer.llm_methods()
    routed = method if method in llm_methods else (llm_methods[0] if llm_methods else None)
    ask_llm = st.toggle(f"Also ask {plain(routed)}'s LLM (loaded once per app process, ~10 s)",
                        value=True, key="cases_live_llm", disabled=routed is None)
    if st.button("Score this pair", key="cases_live_score", icon=":material/bolt:"):
        state[RESULT_KEY] = _score(scorer, user, item, cutoff, routed if ask_llm else None,
                                   threshold)
    result = state.get(RESULT_KEY)
    if result is None:
        return
    if "error" in result:
        st.error(plain(result["error"]))
        return
    pair = result["pair"]
    st.markdown(f"**User {plain(pair.user)} × {plain(pair.title)}** · history: "
                f"{len(pair.history)} "
                f"rating(s){' before ' + str(result['cutoff']) if result['cutoff'] else ''}"
                + (f" · the user rated it **{pair.own_rating:g}** in the data"
                   if pair.own_rating is not None else ""))
    st.dataframe(result["table"], hide_index=True, key="cases_live_table", column_config={
        "model": "Model", "p": st.column_config.NumberColumn("P(click)", format="%.4f"),
        "note": "How"})
    with st.expander(f"The history the models saw ({len(pair.history)} ratings)"):
        shown = pair.history.assign(time=cases.as_time(pair.history["timestamp"]))
        st.dataframe(shown[["time", "item", "title", "rating"]], hide_index=True,
                     key="cases_live_history")
    with st.expander("The prompt the LLM read", expanded=routed is not None and ask_llm):
        st.code(pair.prompt, language=None, wrap_lines=True)
    generated_panel(scorer, pair, user_ids)


GENERATED_KEY = "cases_live_generated"


def generated_panel(scorer: PairScorer, pair, user_ids: list[str]) -> None:
    """CoRA on the scored pair: the base LLM, the pair's generated weights, and the weights
    generated for another user's embedding on the same prompt: how the weights move the
    answer."""
    methods = scorer.generated_methods()
    if not methods:
        return
    st.markdown("##### Generated weights (CoRA)")
    left, mid, right = st.columns([1, 2, 1])
    method = left.selectbox("Method", methods, key="cases_live_cora_method")
    others = [u for u in user_ids if u != pair.user]
    swap = mid.selectbox("Swap the user embedding for", others, key="cases_live_swap",
                         help="the prompt stays this pair's; only the user embedding the "
                              "weights are generated from changes")
    key = (pair.user, pair.item, pair.as_of, method, swap)
    if right.button("Rescore with CoRA", key="cases_live_cora", icon=":material/hub:"):
        with st.spinner(f"Scoring with {method}'s generated weights (its first use loads the "
                        "LLM, ~10 s)…"):
            try:
                st.session_state[GENERATED_KEY] = (key, scorer.score_generated(pair, method,
                                                                               swap))
            except DuetError as exc:
                st.session_state[GENERATED_KEY] = (key, str(exc))
    stored = st.session_state.get(GENERATED_KEY)
    if stored is None or stored[0] != key:
        return
    score = stored[1]
    if isinstance(score, str):
        st.error(plain(score))
        return
    m = st.columns(3)
    m[0].metric("Base LLM P(yes)", f"{score.p_base:.4f}")
    m[1].metric(f"With user {plain(pair.user)}'s weights", f"{score.p_cora:.4f}",
                delta=f"{score.p_cora - score.p_base:+.4f}")
    m[2].metric(f"With user {plain(score.swap_user)}'s weights", f"{score.p_swapped:.4f}",
                delta=f"{score.p_swapped - score.p_cora:+.4f}",
                help="the change from this pair's own weights")


def _score(scorer: PairScorer, user: str, item: str, cutoff: date | None,
           method: str | None, threshold: float) -> dict:
    as_of = None
    if cutoff is not None:
        as_of = int(datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=UTC).timestamp())
    try:
        pair = scorer.pair(user, item, as_of=as_of)
        crm = scorer.score_crms(pair)
        routed = {}
        if method is not None:
            with st.spinner(f"Scoring with {method}'s LLM…"):
                routed[method] = scorer.score_routed(pair, method, threshold)
    except DuetError as exc:
        return {"error": str(exc)}
    return {"pair": pair, "cutoff": cutoff, "table": cases.live_table(crm, routed, threshold)}


ASK_STYLES = {"answer": ("its answer", Decoding("answer", max_new_tokens=16)),
              "reasoning": ("its reasoning (chain of thought)",
                            Decoding("reasoning", max_new_tokens=96))}
ASKED_KEY = "cases_asked"  # session: (run, sample, method, style) -> generated text


def ask_llm_panel(reader: RunReader, sample: pd.Series, method: str | None,
                  stored_prompt: str | None) -> None:
    """Generate the LLM's answer or chain of thought for one case on demand: any valid or
    test sample (its prompt rebuilt exactly when the run did not store it), cached on disk
    and in the session."""
    try:
        scorer = scorer_for(str(reader.path), reader.path.stat().st_mtime, reader)
    except StoreError:
        return
    llm_methods = scorer.llm_methods()
    if not llm_methods:
        st.caption("No method of this run stored an LLM to ask.")
        return
    method = method if method in llm_methods else llm_methods[0]
    left, right = st.columns([3, 1])
    style = left.radio(f"Ask {plain(method)}'s LLM for", list(ASK_STYLES), horizontal=True,
                       key="cases_ask_style", format_func=lambda s: ASK_STYLES[s][0])
    key = (reader.run_id, int(sample["sample_id"]), method, style)
    asked = st.session_state.setdefault(ASKED_KEY, {})
    if right.button("Ask the LLM", key="cases_ask", icon=":material/chat:",
                    help="generated once per sample and setting, then read from the cache"):
        prompt = stored_prompt or scorer.pair(str(sample["user"]), str(sample["item"]),
                                              as_of=int(sample["timestamp"])).prompt
        with st.spinner("The LLM is writing (its first use loads it, ~10 s)…"):
            asked[key] = scorer.explain(prompt, method, ASK_STYLES[style][1])
    if key in asked:  # plain text in a code block: the model's words, never markup
        st.caption(f"{ASK_STYLES[style][0].capitalize()}, sample #{int(sample['sample_id'])}:")
        st.code(asked[key] or "(nothing: the model ended at once)", language=None,
                wrap_lines=True)
