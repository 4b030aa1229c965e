"""Case browser: one user's or one item's samples with every method's probability, the CRM's
entropy and the route at the shared threshold; and the hardest cases, each one click away."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ui import cases, export, reasoning
from ui.common import page_header, page_link, plain, require_run
from ui.pair_panel import ask_llm_panel, pair_panel

MAX_MATCHES = 200
MAX_PICKS = 1000

page_header("Case browser", ":material/manage_search:",
            "Look up a user or an item and see, sample by sample, what every method predicted "
            "and where the router sent it; or start from the cases the models got worst.")

reader = require_run()
mtime = reader.path.stat().st_mtime
state = st.session_state


# resources: one read-only copy for every rerun (cache_data would unpickle every table per
# rerun); the page's helpers copy before they change a frame
@st.cache_resource(show_spinner="Reading users and items…", max_entries=4)
def catalogue(run_id: str, mtime: float, _reader) -> dict:
    return {"users": _reader.frame("users"), "items": _reader.frame("items"),
            "methods": _reader.methods(), "routed": _reader.routed_methods(),
            "gates": _reader.frame("gates") if _reader.has_table("gates") else None,
            "pairs": _reader.frame("pairs") if _reader.has_table("pairs") else None,
            "neighbours": _reader.frame("neighbours") if _reader.has_table("neighbours")
            else None,
            "cot": _reader.frame("cot") if _reader.has_table("cot") else None,
            "deltas": _reader.frame("deltas") if _reader.has_table("deltas") else None,
            "prompt_usage": _reader.frame("prompt_usage")
            if _reader.has_table("prompt_usage") else None}


@st.cache_data(show_spinner=False, max_entries=64)
def case_reads(run_id: str, mtime: float, kind: str, ident: str, method: str | None,
               _reader) -> dict:
    samples = _reader.samples_for(**{kind: ident}, splits=cases.EVAL_SPLITS)
    ids = samples["sample_id"].tolist()
    out = {"samples": samples, "predictions": _reader.predictions_for(ids),
           "routing": _reader.routing_for(method, ids) if method else None}
    if kind == "user":
        out["history"] = _reader.history(ident)
        out["all_samples"] = _reader.samples_for(user=ident)
    return out


@st.cache_resource(show_spinner="Reading the routed samples…", max_entries=4)
def routed_reads(run_id: str, mtime: float, method: str, _reader) -> dict:
    routing = _reader.routing_for(method)
    ids = routing["sample_id"].tolist()
    return {"samples": _reader.samples_for(sample_ids=ids),
            "predictions": _reader.predictions_for(ids), "routing": routing}


@st.cache_resource(show_spinner="Reading the method's scored samples…", max_entries=4)
def method_reads(run_id: str, mtime: float, judged: str, routed: str | None, _reader) -> dict:
    """Every valid and test sample a method scored (the whole split for a CRM), with the
    routed method's signals where it analysed the same sample."""
    predictions = _reader.predictions_of(judged)
    ids = predictions["sample_id"].tolist()
    return {"samples": _reader.samples_for(sample_ids=ids), "predictions": predictions,
            "routing": _reader.routing_for(routed, ids) if routed else None}


# the case tables: pandas joins and a pivot per rerun (~30 ms each), kept per case, method
# and threshold as read-only resources
@st.cache_resource(show_spinner=False, max_entries=64)
def case_rows(run_id: str, mtime: float, kind: str, ident: str, method: str | None,
              threshold: float) -> pd.DataFrame:
    reads = case_reads(run_id, mtime, kind, ident, method, reader)
    return cases.with_alpha(cases.case_table(reads["samples"], catalog["items"],
                                             reads["predictions"], reads["routing"], threshold),
                            catalog["gates"])


@st.cache_resource(show_spinner=False, max_entries=16)
def judged_rows(run_id: str, mtime: float, judged: str, method: str | None,
                threshold: float) -> pd.DataFrame:
    base = (routed_reads(run_id, mtime, method, reader) if judged in cases.JUDGED
            else method_reads(run_id, mtime, judged, method, reader))
    return cases.case_table(base["samples"], catalog["items"], base["predictions"],
                            base["routing"], threshold)


@st.cache_resource(show_spinner=False, max_entries=64)
def search(run_id: str, mtime: float, query: str) -> pd.DataFrame:
    """The search's matches, once per query (the search box's callback and the case view
    both ask); read-only."""
    return cases.search(catalog["users"], catalog["items"], query)


@st.cache_data(show_spinner=False, max_entries=256)
def prompt_of(run_id: str, mtime: float, sample_id: int, _reader) -> str | None:
    return _reader.prompt_for(sample_id)


def column_config(table: pd.DataFrame) -> dict:
    number = st.column_config.NumberColumn
    config = {
        "sample_id": number("Sample", format="%d"),
        "split": st.column_config.TextColumn("Split"),
        "time": st.column_config.DatetimeColumn("Time", format="YYYY-MM-DD HH:mm"),
        "user": st.column_config.TextColumn("User"),
        "item": st.column_config.TextColumn("Item"),
        "title": st.column_config.TextColumn("Title"),
        "rating": number("Rating", format="%.0f"),
        "label": number("Label", format="%.0f", help="1 = a positive (liked) sample"),
        "p": number("p", format="%.4f", help="the judged probability"),
        "error": number("|p − label|", format="%.4f"),
        "p_crm": number("p_crm", format="%.4f", help="the routed method's CRM"),
        "p_llm": number("p_llm", format="%.4f", help="the routed method's LLM"),
        "entropy": number("CRM entropy", format="%.3f",
                          help="binary entropy of p_crm in bits (routed samples only)"),
        "route": st.column_config.TextColumn(
            "Route", help="LLM where the CRM entropy is above the threshold, else CRM"),
        "answer": st.column_config.TextColumn("LLM answer", help="where the run stored it"),
        "alpha": number("Gate α", format="%.3f",
                        help="S-LLMR's gate for this sample: how much the teacher would be "
                             "trusted here"),
        "cold_user": st.column_config.CheckboxColumn("Cold-start user"),
        "long_tail_item": st.column_config.CheckboxColumn("Long-tail item"),
    }
    for name in cases.method_columns(table):
        config[name] = number(name, format="%.4f")
    return config


def samples_section(table: pd.DataFrame, what: str, ident: str, method: str | None) -> None:
    if table.empty:
        st.info(f"This {what} has no valid or test samples.")
        return
    st.markdown(f"#### Valid and test samples ({len(table):,})")
    shown = table[cases.shown_columns(table)]
    st.dataframe(shown, hide_index=True, key="cases_samples", column_config=column_config(shown),
                 placeholder="–")
    st.download_button("Download CSV", lambda: cases.to_csv(shown),  # written on click
                       file_name=f"{what}-{ident}.csv",
                       mime="text/csv", key="cases_samples_csv", on_click="ignore")
    titles = dict(zip(table["sample_id"], table["title"].fillna("")))
    splits = dict(zip(table["sample_id"], table["split"]))
    ids = table["sample_id"].tolist()
    if state.get("cases_prompt_sample") not in splits:  # default: the first test sample
        state["cases_prompt_sample"] = next((i for i in ids if splits[i] == "test"), ids[0])
    sample = st.selectbox("Prompt of sample", ids, key="cases_prompt_sample",
                          format_func=lambda i: f"#{i} · {splits[i]} · {titles[i]}")
    prompt = prompt_of(reader.run_id, mtime, int(sample), reader)
    with st.expander(f"Prompt of sample #{sample}"):
        if prompt is None:
            st.caption("No prompt stored for this sample (runs store test samples' prompts); "
                       "asking the LLM below rebuilds it exactly from the run.")
        else:
            st.code(prompt, language=None, wrap_lines=True)
    retrieved_examples(int(sample))
    generated_weights(int(sample))
    chosen_prompts(int(sample))
    ask_llm_panel(reader, table.set_index("sample_id", drop=False).loc[sample], method, prompt)


def retrieved_examples(sample: int) -> None:
    """The examples LLM-CF retrieved for the sample, with their explanations."""
    neighbours = catalog["neighbours"]
    if neighbours is None or catalog["cot"] is None:
        return
    first = sorted(neighbours["method"].unique())[0]
    mine = neighbours[neighbours["method"] == first]
    examples = reasoning.sample_examples(mine, catalog["cot"][catalog["cot"]["method"] == first],
                                         catalog["items"], sample)
    if examples.empty:
        return
    with st.expander(f"Examples {plain(first)} retrieved for sample #{sample} "
                     f"({len(examples)}; LLM-CF)"):
        st.dataframe(examples, hide_index=True, key="cases_llmcf_examples", placeholder="–",
                     column_config={"text": st.column_config.TextColumn("explanation",
                                                                        width="large"),
                                    **{c: st.column_config.NumberColumn(format="%.3f")
                                       for c in ("similarity", "sim_history", "sim_target",
                                                 "attention", "recon_cos")}})
        if st.button("Open in the Reasoning page", key="cases_open_reasoning",
                     icon=":material/psychology:"):
            state["reasoning_sample"] = sample
            st.switch_page("pages/6_Reasoning.py")


def sample_row(table: str, sample: int) -> pd.Series | None:
    """The sample's row of a per-sample diagnostics table (its first method's), if any."""
    frame = catalog[table]
    if frame is None:
        return None
    rows = frame[frame["sample_id"] == sample]
    return None if rows.empty else rows.iloc[0]


def generated_weights(sample: int) -> None:
    """What CoRA's weights generated for this (user, item) did to the LLM's answer."""
    row = sample_row("deltas", sample)
    if row is None:
        return
    with st.expander(f"Generated weights for sample #{sample} ({plain(row['method'])}; CoRA)"):
        m = st.columns(4)
        m[0].metric("Base LLM P(yes)", f"{row['p_base']:.4f}")
        m[1].metric("With the weights", f"{row['p_cora']:.4f}",
                    delta=f"{row['p_cora'] - row['p_base']:+.4f}")
        m[2].metric("MF score", f"{row['p_mf']:.4f}")
        m[3].metric("A's cosine to the mean A", f"{row['a_cos_mean']:.3f}")
        if st.button("Open in the Collaborative weights page", key="cases_open_collab",
                     icon=":material/hub:"):
            state["collab_sample"] = sample
            st.switch_page("pages/7_Collaborative_weights.py")


def chosen_prompts(sample: int) -> None:
    """The soft prompts CoCo's pool chose for the sample's user, and what they did."""
    row = sample_row("prompt_usage", sample)
    if row is None:
        return
    with st.expander(f"Prompts chosen for sample #{sample} ({plain(row['method'])}; CoCo)"):
        m = st.columns(4)
        m[0].metric("CRM alone", f"{row['p_crm']:.4f}")
        m[1].metric("CoCo", f"{row['p_coco']:.4f}", delta=f"{row['p_coco'] - row['p_crm']:+.4f}")
        m[2].metric("Prompts", str(row["prompt_ids"]),
                    help=f"cosines {row['prompt_cosines']}; weights {row['prompt_weights']}")
        m[3].metric("LLM's attention share", f"{row['llm_share']:.3f}")
        if st.button("Open in the Prompt pool page", key="cases_open_pool",
                     icon=":material/category:"):
            state["pool_sample"] = sample
            st.switch_page("pages/8_Prompt_pool.py")


def show_user(user: str, method: str | None, threshold: float) -> None:
    reads = case_reads(reader.run_id, mtime, "user", user, method, reader)
    history, samples = reads["history"], reads["all_samples"]
    st.subheader(f"User {plain(user)}")
    attrs = cases.user_attributes(catalog["users"], user)
    if attrs:
        st.markdown(" · ".join(f"{plain(k)} **{plain(v)}**" for k, v in attrs.items()))
    cols = st.columns(4)
    cols[0].metric("Ratings", f"{len(history):,}")
    if not samples.empty and "user_train_ratings" in samples:
        cols[1].metric("Train-period ratings", f"{int(samples['user_train_ratings'].iloc[0]):,}")
    if not samples.empty and "cold_user" in samples:
        cols[2].metric("Cold-start", "yes" if samples["cold_user"].any() else "no")
    cols[3].metric("Valid + test samples", f"{len(reads['samples']):,}")
    if not history.empty:
        st.plotly_chart(export.built(
            ("cases_timeline", reader.run_id, mtime, user),
            lambda: cases.timeline_figure(cases.timeline(history, samples, catalog["items"]),
                                          user)), key="cases_timeline")
    written = cases.reviews(history, catalog["items"])
    if not written.empty:
        with st.expander(f"Reviews the user wrote ({len(written):,}; not shown to the LLM)"):
            st.dataframe(written, hide_index=True, key="cases_reviews")
    table = case_rows(reader.run_id, mtime, "user", user, method, threshold)
    teacher = cases.teacher_pairs(catalog["pairs"], user)
    if not teacher.empty:
        with st.expander(f"The teacher's pairs for this user ({len(teacher):,}; S-LLMR)"):
            st.dataframe(teacher, hide_index=True, key="cases_teacher_pairs", placeholder="–",
                         column_config={c: st.column_config.NumberColumn(format="%.3f")
                                        for c in ("s_llm_i", "s_llm_j", "alpha", "gap_before",
                                                  "gap_after")})
            page_link("pages/5_Gating.py", "The gate behind these pairs", ":material/tune:")
    samples_section(table, "user", user, method)


def show_item(item: str, method: str | None, threshold: float) -> None:
    reads = case_reads(reader.run_id, mtime, "item", item, method, reader)
    info = cases.item_info(catalog["items"], item)
    st.subheader(f"Item {plain(item)} · {plain(info.get('title', ''))}")
    if not info.get("has_text", True):
        st.info("This item has no title or text in the run's data: the LLM's prompts and the "
                "semantic maps see only its id.")
    if info.get("text"):
        st.markdown(plain(info["text"]))
    if info.get("tags"):
        st.markdown("Tags: " + " · ".join(plain(t) for t in info["tags"]))
    cols = st.columns(4)
    if "popularity" in info:
        cols[0].metric("Popularity", f"{int(info['popularity']):,}",
                       help="ratings in the train period")
    if "long_tail" in info:
        cols[1].metric("Long-tail", "yes" if bool(info["long_tail"]) else "no")
    if info.get("decade"):
        cols[2].metric("Decade", str(info["decade"]))
    cols[3].metric("Valid + test samples", f"{len(reads['samples']):,}")
    table = case_rows(reader.run_id, mtime, "item", item, method, threshold)
    samples_section(table, "item", item, method)


def query_changed() -> None:  # a new search shows its best match at once
    found = search(reader.run_id, mtime, state["cases_query"])
    state["cases_match"] = found["key"].iloc[0] if len(found) else None


def open_case(kind: str, ident: str, sample_id: int) -> None:
    state["cases_query"] = ident
    state["cases_match"] = f"{kind}:{ident}"
    state["cases_prompt_sample"] = sample_id


catalog = catalogue(reader.run_id, mtime, reader)
routed = sorted(catalog["routed"], key=lambda m: (m != cases.DEFAULT_METHOD, m))
top = st.columns([1, 2])
method = None
if routed:
    method = top[0].selectbox("Routed method (entropy, route, LLM answer)", routed,
                              key="cases_method")
threshold, source = cases.shared_threshold(state.get("router_threshold"), catalog["methods"],
                                           method or cases.DEFAULT_METHOD)
if method:
    where = "set in the router lab" if source == "router lab" else (
        f"{plain(source)}; move it in the router lab")
    top[1].caption(f"Route at entropy threshold **{threshold:.3f}** ({where}). Entropy above "
                   "it: the LLM answers.")
else:
    top[1].caption("This run has no routed method, so no entropy or route columns.")

@st.fragment
def case_view(method: str | None, threshold: float) -> None:
    """Search, the case and the live pair: a fragment, so typing a search or picking a match
    reruns this part alone, not the hardest cases below (bench/interaction_latency.py)."""
    left, right = st.columns([1, 2])
    query = left.text_input("Search users and items", key="cases_query",
                            on_change=query_changed,
                            placeholder="user id, item id or part of a title")
    matches = search(reader.run_id, mtime, query)
    options = matches.head(MAX_MATCHES)
    if state.get("cases_match") in set(matches["key"]) - set(options["key"]):  # keep the chosen
        options = pd.concat([options, matches[matches["key"] == state["cases_match"]]])
    labels = dict(zip(options["key"], options["label"]))
    more = f", first {MAX_MATCHES} listed" if len(matches) > MAX_MATCHES else ""
    choice = right.selectbox(
        f"Matches ({len(matches):,}{more})", options["key"].tolist(),
        format_func=lambda k: labels.get(k, k), key="cases_match",
        placeholder="type in the search box" if not query else "no match")
    picked = cases.parse_key(choice)
    if picked is None:
        st.info("Search a user id, an item id or part of a title, or open one of the hardest "
                "cases below.")
    elif picked[0] == "user":
        show_user(picked[1], method, threshold)
    else:
        show_item(picked[1], method, threshold)

    st.divider()
    st.subheader("Score a pair live")
    st.caption("Any user with any item, through the run's saved models: every CRM, and the "
               "routed method's CRM, LLM and route at the shared threshold.")
    pair_panel(reader, catalog["users"], catalog["items"],
               picked[1] if picked and picked[0] == "user" else None,
               picked[1] if picked and picked[0] == "item" else None, method, threshold)


case_view(method, threshold)

st.divider()
st.subheader("Hardest cases")
judges = ([*cases.JUDGED] if method else []) + sorted(catalog["methods"]["method"])
c = st.columns([2, 2, 2, 2])
judged = c[0].selectbox(
    "Judge", judges, key="cases_hard_judged",
    format_func=lambda j: cases.JUDGED.get(j, f"{j} (every sample it scored)"),
    help="p, whose error |p − label| ranks cases: the routed method's parts on its analysed "
         "samples, or any stored method on every valid and test sample it scored")
table = judged_rows(reader.run_id, mtime, judged, method, threshold)
route = c[1].radio("Route", cases.ROUTES, horizontal=True, key="cases_hard_route",
                   disabled=not method, help="the routed method's route at the threshold")
disagree = c[1].selectbox("CRM vs LLM", list(cases.DISAGREE), key="cases_hard_disagree",
                          format_func=cases.DISAGREE.get, disabled=not method,
                          help="samples where the routed method's CRM and LLM disagree")
wrong = c[2].checkbox("Confident and wrong only", key="cases_hard_wrong",
                      help="|p − label| > 0.5 while the CRM entropy is below the slider")
max_entropy = c[2].slider("CRM entropy below", 0.0, 1.0, 0.5, 0.01, key="cases_hard_entropy",
                          disabled=not wrong)
segments = c[3].multiselect("Segment", list(cases.SEGMENTS), key="cases_hard_segments",
                            placeholder="all samples")
hard = cases.hardest_cases(table, judged=judged, route=route if method else "any",
                           wrong_only=wrong, max_entropy=max_entropy, segments=segments,
                           disagree=disagree if method else "any")
scope = (f"that {plain(method)} analysed" if judged in cases.JUDGED
         else f"that {plain(judged)} scored")
st.caption(f"{len(hard):,} of the {len(table):,} valid and test samples {scope}, worst first "
           "(click a header to sort).")
st.dataframe(hard, hide_index=True, key="cases_hard", column_config=column_config(hard),
             placeholder="–")
st.download_button("Download CSV", lambda: cases.to_csv(hard),  # written on click
                   file_name=f"hardest-{judged}.csv",
                   mime="text/csv", key="cases_hard_csv", on_click="ignore")
if not hard.empty:
    rows = hard.head(MAX_PICKS).set_index("sample_id")
    if state.get("cases_hard_pick") not in rows.index:  # follow the filter, not a stale pick
        state.pop("cases_hard_pick", None)
    labels = cases.pick_labels(rows)  # one pass, not three lookups per listed case
    pick = st.selectbox("Open a case", rows.index.tolist(), key="cases_hard_pick",
                        format_func=labels.get)
    a, b, _ = st.columns([1, 1, 4])
    a.button("Open its user", key="cases_open_user", on_click=open_case,
             args=("user", str(rows.at[pick, "user"]), int(pick)), icon=":material/person:")
    b.button("Open its item", key="cases_open_item", on_click=open_case,
             args=("item", str(rows.at[pick, "item"]), int(pick)), icon=":material/movie:")
