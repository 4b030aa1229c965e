"""Embedding maps: items in the semantic spaces (encoder, LLM) and the behavioural space
(the CRM's item embeddings), side by side. UMAP ran when the run was built."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from ui import export, maps
from ui.common import page_header, plain, require_run, require_table

page_header("Embedding maps", ":material/scatter_plot:",
            "Where items sit by meaning (semantic spaces) and by behaviour (the CRM's item "
            "embeddings). Agreement: the share of an item's k nearest neighbours two spaces "
            "have in common.")
reader = require_run()
require_table(reader, "embeddings", "This run has no embedding maps. Make a run without "
              "`--no-maps` (the demo profile builds them).")
mtime = reader.path.stat().st_mtime


# a resource: one read-only copy for every rerun (cache_data unpickles every frame per rerun)
@st.cache_resource(show_spinner="Reading the maps…", max_entries=4)
def load(run_id: str, mtime: float, _reader) -> dict:
    routing = _reader.frame("routing") if _reader.has_table("routing") else None
    if routing is not None:
        routing = routing[routing["method"] == "corella"]
    samples = _reader.query("SELECT sample_id, item FROM samples")
    return {"emb": _reader.frame("embeddings"), "agreement": _reader.frame("map_agreement"),
            "signals": maps.item_signals(_reader.frame("items"), samples, routing)}


data = load(reader.run_id, mtime, reader)
spaces = sorted(data["emb"]["space"].unique())
params = json.loads(data["emb"]["params"].iloc[0])
c1, c2, c3 = st.columns(3)
left = c1.selectbox("Left space", spaces, index=spaces.index("semantic")
                    if "semantic" in spaces else 0, key="maps_left")
right = c2.selectbox("Right space", spaces, index=spaces.index("behavioural")
                     if "behavioural" in spaces else len(spaces) - 1, key="maps_right")
colour = c3.selectbox("Colour by", maps.COLOURINGS, key="maps_colour")
agreement = maps.pair_agreement(data["agreement"], left, right) if left != right else None
mapped = data["signals"][data["signals"]["item"].isin(data["emb"]["entity_id"].astype(str))]
if not mapped["has_text"].all():
    missing = mapped.loc[~mapped["has_text"], "item"].astype(str)
    st.warning(f"{len(missing):,} of the {len(mapped):,} mapped items have no title or text "
               "in the run's data: in the semantic spaces they are placed by their id alone "
               f"(e.g. {plain(', '.join(missing.head(5)))}).", icon=":material/text_fields:")

state = st.session_state
c4, c5 = st.columns([1, 1])
query = c4.text_input("Find items by title (highlighted on both maps)", key="maps_find",
                      placeholder="part of a title, or an item id")
genres = c5.multiselect("Only items of these genres (any of an item's genres)",
                        maps.all_genres(data["signals"]), key="maps_genres",
                        placeholder="every genre")


def selected_on(side: int) -> None:
    """A selection on either map becomes the highlight of both (the search box is cleared)."""
    state["maps_highlight"] = sorted(maps.selection_ids(state.get(f"maps_plot_{side}")))
    state["maps_find"] = ""


@st.fragment
def maps_view() -> None:
    """Both maps and what is ringed on them: a fragment, so a selection (click, box, lasso)
    reruns this part alone, not the agreement charts below."""
    found = maps.find_items(data["signals"], query)
    highlight = found if query else set(state.get("maps_highlight", []))
    frames = [maps.with_genres(maps.space_frame(data["emb"], data["signals"], space, agreement),
                               genres) for space in (left, right)]
    largest = max(len(f) for f in frames)
    # large runs draw a seeded sample of each map (the ringed items always), all on request
    everything = largest <= maps.MAX_POINTS or st.toggle(
        f"Draw all {largest:,} items (slower: the maps show {maps.MAX_POINTS:,} sampled ones)",
        key="maps_all_points")
    for side, (column, space, frame) in enumerate(zip(st.columns(2), (left, right), frames)):
        drawn = frame if everything else maps.downsampled(frame)
        shown = (f"{len(frame):,} items" if len(drawn) == len(frame)
                 else f"{len(drawn):,} of {len(frame):,} items")
        # the map is built once per space, colouring, genres and sampling; a selection or a
        # search only rings its items (from every item, drawn or not) on a copy of it
        # (maps.with_highlight, milliseconds)
        base = export.built(("maps_plot", reader.run_id, mtime, space, left, right, colour,
                             tuple(genres), everything),
                            lambda f=drawn, s=space, n=shown: maps.scatter_base(
                                f, colour, f"{s} ({n})").to_dict())
        fig = maps.with_highlight(base, frame, highlight)
        column.plotly_chart(fig, key=f"maps_plot_{side}", on_select=lambda s=side: selected_on(s),
                            selection_mode=("points", "box", "lasso"))
        export.export_buttons(fig, f"maps_plot_{side}", column)
        export.remember(f"maps_plot_{side}", f"Embedding map: {space}", fig)
    both = pd.concat(frames).drop_duplicates("entity_id")
    picked = both[both["entity_id"].astype(str).isin(highlight)]
    if query and not found:
        st.caption(f"No item title contains {plain(query)}.")
    if picked.empty:
        st.caption("Select points (click, box or lasso) on either map, or find items by title, "
                   "to ring them on both maps, list them and open a case.")
        return
    how = "found by title" if query else "selected"
    st.markdown(f"#### {len(picked)} {how} items (ringed on both maps)")
    table = picked[["entity_id", "title", "genres", "popularity", "mean entropy",
                    "CRM vs LLM"] + (["agreement"] if "agreement" in picked else [])]
    st.dataframe(table, hide_index=True, key="maps_selected", placeholder="–",
                 column_config={"mean entropy": st.column_config.NumberColumn(format="%.3f"),
                                "agreement": st.column_config.NumberColumn(format="%.2f")})
    export.table_csv(table, "maps_selected")
    titles = dict(zip(table["entity_id"], table["title"]))
    choice = st.selectbox("Open a case", table["entity_id"], key="maps_open_choice",
                          format_func=lambda i: f"{i} · {titles[i]}")
    if st.button("Open in the case browser", key="maps_open"):
        # the case browser's search box and match list open on this item
        st.session_state["cases_query"] = choice
        st.session_state["cases_match"] = f"item:{choice}"
        st.switch_page("pages/3_Case_browser.py")


maps_view()

if agreement is not None:
    export.chart_once(lambda: maps.agreement_histogram(agreement, left, right, params["knn"]),
                      "maps_agreement", (reader.run_id, mtime, left, right))
    st.caption(plain(f"Mean agreement {agreement.mean():.2f} over {len(agreement):,} items; "
                     f"UMAP n_neighbors={params['n_neighbors']}, min_dist={params['min_dist']}, "
                     f"metric={params['metric']}, seed={params['seed']}."))

for method in maps.aligned_methods(spaces):
    st.divider()
    st.subheader(f"What {plain(method)}'s alignment changed")
    summary = maps.alignment_summary(data["agreement"], method)
    st.dataframe(summary, hide_index=True, key=f"maps_alignment_{method}", column_config={
        "mean agreement": st.column_config.NumberColumn(format="%.3f"),
        "median agreement": st.column_config.NumberColumn(format="%.3f")})
    export.table_csv(summary, f"maps_alignment_{method}")
    st.caption(f"Items are the mean of their samples that {plain(method)} analysed, at the last "
               "aligned layer pair: the LLM's and the CRM's states as they are (before), and "
               "their alignment projections g_llm / g_crm (after). Agreement: the share of k "
               "nearest neighbours the two sides have in common. Pick the spaces "
               f"{plain(method)}: aligned LLM and {plain(method)}: aligned CRM above to see the "
               "maps.")
