"""Compare: which method, where, at what cost? Every chosen method on the samples all of them
scored, per segment and CRM-entropy bucket, against its cost; two methods head to head."""

from __future__ import annotations

import streamlit as st

from engine import compare
from ui import compare as cmp
from ui import export
from ui.common import decimals, page_header, plain, require_run
from ui.tables import METRIC_COLUMNS, seed_spread

page_header("Compare", ":material/compare_arrows:",
            "The methods side by side on the same samples: each stores probabilities for the "
            "rows it scored (the CRMs every test sample, the LLM methods an analysed subset), "
            "so every number here is computed on the rows all chosen methods share.")
reader = require_run()
mtime = reader.path.stat().st_mtime
state = st.session_state


# resources, not data: read-only frames shared by every rerun (cache_data would unpickle a
# copy each time), so switching a method recomputes only what that method changes
@st.cache_resource(show_spinner="Reading every method's predictions…", max_entries=4)
def load(run_id: str, mtime: float, split: str, _reader) -> dict:
    return {"predictions": _reader.predictions(split), "samples": _reader.samples(split),
            "methods": _reader.methods()}


@st.cache_resource(show_spinner="Comparing the methods…", max_entries=16)
def analysis(run_id: str, mtime: float, split: str, chosen: tuple[str, ...],
             reference: str | None, _data: dict) -> dict:
    common = compare.same_samples(_data["predictions"], _data["samples"], list(chosen))
    if common.empty:
        return {"common": common}
    long = compare.metrics(common, list(chosen), reference)
    costs = compare.costs(_data["methods"])
    return {"common": common, "long": long, "costs": costs,
            "table": cmp.overall_table(long, costs), "segments": cmp.segment_table(long, "auc")}


@st.cache_resource(show_spinner=False, max_entries=32)
def duel_of(run_id: str, mtime: float, split: str, chosen: tuple[str, ...],
            reference: str | None, a: str, b: str, _common) -> dict:
    duel = compare.head_to_head(_common, a, b, reference)
    return {"duel": duel, "figure": cmp.head_to_head_figure(duel, a, b),
            "worst": compare.disagreements(_common, a, b, k=25)}


split = st.radio("Split", ["test", "valid"], horizontal=True, key="compare_split")
data = load(reader.run_id, mtime, split, reader)
stored = [m for m in data["methods"]["method"] if m in data["predictions"]]
missing = compare.missing_hybrids(stored)
if missing:
    st.info(f"This run has no {', '.join(missing)}: a run of the demo profile holds all five "
            "methods (`python -m engine run --profile demo`).", icon=":material/info:")
if not stored:
    st.warning("This run stored no predictions to compare.")
    st.stop()

chosen = st.multiselect("Methods (each hybrid's stored variants are in the list too)", stored,
                        default=cmp.default_methods(stored), key="compare_methods")
if not chosen:
    st.info("Choose at least one method.")
    st.stop()
crms = [m for m in chosen if compare.family(m) == "crm"]
reference = st.selectbox("Entropy buckets from", crms or [None], key="compare_reference",
                         help="the CRM whose uncertainty (binary entropy of its P(click)) "
                              "splits the samples into quartiles, as CoReLLa's router does",
                         format_func=lambda m: "no CRM chosen" if m is None else m)
shape = (reader.run_id, mtime, split, tuple(chosen), reference)  # what the tables depend on
found = analysis(*shape, data)
common = found["common"]
if common.empty:
    st.warning("The chosen methods share no scored sample in this split.")
    st.stop()
fewest = min(int(data["predictions"][m].notna().sum()) for m in chosen)
st.caption(f"**{len(common):,}** samples scored by every chosen method (of "
           f"{len(data['predictions']):,} in {split}; the fewest any chosen method scored: "
           f"{fewest:,}). ⚠ marks a cell with few samples or one class.")

long, costs = found["long"], found["costs"]

st.markdown("#### Overall, with what each costs")
table = found["table"]
st.dataframe(table, hide_index=True, key="compare_table", column_config=METRIC_COLUMNS)
export.table_csv(table, "compare-overall")

group, spread = seed_spread(reader, split, tuple(chosen))
if spread is not None:
    st.markdown(f"#### Over {len(group)} seeds")
    over = compare.spread_text(spread).reset_index()
    st.dataframe(over, hide_index=True, key="compare_seeds")
    export.table_csv(over, "compare-seeds")
    st.caption(f"Mean ± standard deviation over the runs of this --seeds group "
               f"({plain(', '.join(group))}), each on the samples all chosen methods scored "
               "in that run.")

st.markdown("#### AUC per segment and CRM-entropy bucket")
segments = found["segments"]
st.dataframe(segments, hide_index=True, key="compare_segments")
export.table_csv(segments, "compare-segments")

st.markdown("#### Quality against cost")
cost = st.radio("Cost", list(cmp.COST_AXES), horizontal=True, key="compare_cost",
                format_func=lambda c: cmp.COST_AXES[c][0])
points = cmp.frontier(long, costs, cost)
export.chart_once(lambda: cmp.frontier_figure(points, cost), "compare_frontier",
                  (*shape, cost))
st.dataframe(points, hide_index=True, key="compare_points", placeholder="–",
             column_config=decimals("quality") | decimals("cost", fmt="%.1f"))

st.markdown("#### Two methods head to head")
if len(chosen) < 2:
    st.info("Choose two or more methods to put two of them head to head.")
    st.stop()
left, right = st.columns(2)
a = left.selectbox("Method A", chosen, index=0, key="compare_a")
b = right.selectbox("Method B", chosen, index=len(chosen) - 1, key="compare_b")
if a == b:
    st.info("Pick two different methods.")
    st.stop()
duel_parts = duel_of(*shape, a, b, common)
duel = duel_parts["duel"]
st.markdown(plain(cmp.wins_summary(duel, a, b)))
if spread is not None and compare.inside_spread(spread, a, b):
    st.info(f"Over the {len(group)} seeds, the gap between {plain(a)} and {plain(b)}'s mean "
            "AUC is inside the seed spread: a difference the seeds alone could make.",
            icon=":material/casino:")
export.chart(duel_parts["figure"], "compare_duel")
st.dataframe(duel, hide_index=True, key="compare_duel_table", placeholder="–",
             column_config=decimals("auc_a", "auc_b", "gap", "se"))

st.markdown(f"##### Where {plain(a)} and {plain(b)} disagree most")
worst = duel_parts["worst"]
st.dataframe(worst, hide_index=True, key="compare_disagreements", placeholder="–",
             column_config=decimals(a, b, "gap"))
export.table_csv(worst, "compare-disagreements")
if len(worst):
    pick = st.selectbox("Open a user's case", worst["user"].astype(str).drop_duplicates(),
                        key="compare_open_user")
    if st.button("Open in the case browser", key="compare_open", icon=":material/person:"):
        state["cases_query"] = pick
        state["cases_match"] = f"user:{pick}"
        st.switch_page("pages/3_Case_browser.py")
