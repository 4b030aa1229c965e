"""Real-world data without surprises (loader level): markup-free text, title fallbacks, text
coverage, review text, duplicates, one-class splits, the 2023 Amazon schema, JSON arrays,
zip archives, headerless tables, rating scales and pathological lines. Every file is written
by the test."""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from engine.data.amazon import load_amazon
from engine.data.movielens import load_ml1m, load_ml100k
from engine.data.sources import load_dataset
from engine.data.tabular import TableColumns, load_table_pair
from engine.data.task import TaskConfig, build_task
from engine.data.text import choose_title, clean_text, is_junk_title
from engine.errors import ConfigError, DataError
from tests.synthetic import write_ml100k


def reviews_2018(n_users: int = 6, items: tuple[str, ...] = ("B1", "B2", "B3", "B4")) -> list:
    rows = []
    for u in range(n_users):
        for k, item in enumerate(items):
            rows.append({"reviewerID": f"U{u}", "asin": item, "overall": float(1 + (u + k) % 5),
                         "unixReviewTime": 1_500_000_000 + 1000 * (u * 10 + k),
                         "summary": f"<b>Nice</b> &amp; {item}",
                         "reviewText": f"Read it.<br/>Loved {item}!"})
    return rows


META_2018_HTML = [
    {"asin": "B1", "title": '<span class="a-size-medium a-color-secondary',
     "description": ["<i>A desert planet</i> epic.<br>With worms."],
     "category": ["Books", "Science Fiction &amp; Fantasy"], "brand": "Ace &amp; Co"},
    {"asin": "B2", "title": "var aPageStart = (new Date()).getTime();", "description": [],
     "category": ["Books", "Classics"], "brand": "Penguin"},
    {"asin": "B3", "title": "Emma <i>(Penguin Classics)</i>", "description": ["A comedy."],
     "category": ["Books", "Romance"]},
]


def jsonl(path: Path, records: list) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


# --- text ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "clean"), [
    ('<span class="a-size-medium a-color-secondary', ""),  # a bare, unfinished tag
    ("Dune <i>novel</i><br/>second line", "Dune novel second line"),
    ("Science Fiction &amp; Fantasy", "Science Fiction & Fantasy"),
    ("Tom &amp;amp; Jerry", "Tom & Jerry"),  # escaped twice
    ("<script>var a = 1;</script>Title", "Title"),
    ("a < b and c > d", "a < b and c > d"),  # not markup: kept as written
    ("  spaced\n\tout  ", "spaced out"),
])
def test_clean_text_strips_markup_with_the_html_parser(raw: str, clean: str) -> None:
    assert clean_text(raw) == clean


def test_junk_titles_and_their_fallback() -> None:
    assert is_junk_title("") and is_junk_title("***")
    assert is_junk_title("var aPageStart = (new Date()).getTime();")
    assert not is_junk_title("The function of art (1995)")
    assert choose_title("", "A desert planet epic. With worms.", "Ace") == (
        "A desert planet epic.", True)
    assert choose_title("", "", "Ace Books") == ("Ace Books", True)
    assert choose_title("Dune", "x") == ("Dune", False)


def test_amazon_2018_markup_never_reaches_items_prompts_or_reviews(tmp_path: Path) -> None:
    reviews = jsonl(tmp_path / "r.json", reviews_2018())
    meta = jsonl(tmp_path / "m.json", META_2018_HTML)
    ds = load_amazon(reviews, meta, click_threshold=4)
    items = ds.items.set_index("item")
    assert items.loc["B1", "title"] == "A desert planet epic."  # from the description
    assert items.loc["B1", "text"].startswith("A desert planet epic. A desert planet epic. With")
    assert items.loc["B1", "tags"] == ["Science Fiction & Fantasy"]
    assert items.loc["B1", "brand"] == "Ace & Co"
    assert items.loc["B2", "title"] == "Penguin Classics"  # brand + category leaf
    assert items.loc["B3", "title"] == "Emma (Penguin Classics)"
    assert ds.stats["items_title_fallback"] == 2
    assert not items.loc["B4", "has_text"] and items.loc["B1", "has_text"]
    assert ds.stats["items_with_text"] == 3
    assert ds.notes == ["3 of 4 items (75%) have a title or text; the rest reach the LLM and "
                        "the maps as bare ids"]
    # review text is kept, cleaned, for the case browser; prompts never carry it
    inter = ds.interactions
    assert inter.loc[0, "summary"] == "Nice & B1"
    assert inter.loc[0, "review"] == "Read it. Loved B1!"
    task = build_task(ds, TaskConfig(min_history=1, max_users=None))
    for prompt in task.prompts(np.arange(len(task))):
        assert "<" not in prompt and "&amp;" not in prompt and "Loved" not in prompt


def test_amazon_review_text_can_be_left_out(tmp_path: Path) -> None:
    ds = load_amazon(jsonl(tmp_path / "r.json", reviews_2018()), review_text=False)
    assert list(ds.interactions.columns) == ["user", "item", "rating", "timestamp"]


def test_no_metadata_says_items_have_no_text(tmp_path: Path) -> None:
    ds = load_amazon(jsonl(tmp_path / "r.json", reviews_2018()))
    assert not ds.items["has_text"].any()
    assert ds.stats["items_with_text_share"] == 0
    assert "no item text" in ds.notes[0] and "--side" in ds.notes[0]


def test_metadata_matching_no_item_is_the_wrong_file(tmp_path: Path) -> None:
    reviews = jsonl(tmp_path / "r.json", reviews_2018())
    meta = jsonl(tmp_path / "m.json", [{"asin": "X9", "title": "Other"}])
    with pytest.raises(DataError, match="matches none of the 4 reviewed items") as err:
        load_amazon(reviews, meta)
    assert err.value.file == str(meta) and "'X9'" in str(err.value)


def test_metadata_matching_few_items_warns(tmp_path: Path) -> None:
    items = tuple(f"B{i}" for i in range(10))
    reviews = jsonl(tmp_path / "r.json", reviews_2018(items=items))
    meta = jsonl(tmp_path / "m.json", [{"asin": "B1", "title": "Only one"}])
    ds = load_amazon(reviews, meta)
    assert ds.notes[0].startswith("only 1 of 10 items (10%) have a title or text in")


def test_table_items_file_matching_none_is_an_error(tmp_path: Path) -> None:
    inter = tmp_path / "r.csv"
    inter.write_text("user,item,rating,timestamp\nu1,i1,5,1\nu1,i2,1,2\n")
    items = tmp_path / "items.csv"
    items.write_text("item,title\nzz,Zed\n")
    with pytest.raises(DataError, match="matches none of the 2 items"):
        load_table_pair(inter, items)


# --- the 2023 schema, JSON arrays, archives ---------------------------------------------

def test_amazon_2023_schema_and_json_array(tmp_path: Path) -> None:
    rows = [{"user_id": f"U{u}", "parent_asin": f"P{k}", "asin": f"A{k}x",
             "rating": float(1 + (u + k) % 5), "timestamp": 1_600_000_000_000 + 1000 * k + u,
             "title": "Great", "text": "Works &amp; fits"} for u in range(4) for k in range(3)]
    reviews = tmp_path / "Books.jsonl"
    reviews.write_text(json.dumps(rows, indent=1))  # one JSON array over many lines
    meta = tmp_path / "meta_Books.jsonl"
    meta.write_text(json.dumps([
        {"parent_asin": "P0", "title": "Dune", "description": ["Spice."],
         "categories": ["Books", "Science Fiction"], "store": "Ace", "main_category": "Books"},
        {"parent_asin": "P1", "title": "Emma", "categories": [], "main_category": "Books"},
    ]))
    ds = load_amazon(reviews, meta)
    inter = ds.interactions
    assert set(inter["item"]) == {"P0", "P1", "P2"}
    assert inter["timestamp"].min() == 1_600_000_000  # milliseconds -> seconds
    assert inter.loc[0, "review"] == "Works & fits"
    items = ds.items.set_index("item")
    assert items.loc["P0", "tags"] == ["Science Fiction"]  # one flat path, not two
    assert items.loc["P0", "brand"] == "Ace"
    assert items.loc["P1", "tags"] == ["Books"]  # main_category when no categories


def test_json_array_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text('[\n {"reviewerID": "U", "asin": "A", "overall": 5, "unixReviewTime": 1},\n'
                    ' {"reviewerID": oops}\n]\n')
    with pytest.raises(DataError, match="invalid JSON in the array") as err:
        load_amazon(path)
    assert err.value.line == 3


def test_single_file_zip_is_read_and_several_are_refused(tmp_path: Path) -> None:
    inner = jsonl(tmp_path / "r.json", reviews_2018())
    one = tmp_path / "reviews.zip"
    with zipfile.ZipFile(one, "w") as zf:
        zf.write(inner, "reviews.json")
    assert len(load_amazon(one).interactions) == 24
    table = tmp_path / "ratings.csv.zip"
    with zipfile.ZipFile(table, "w") as zf:
        zf.writestr("ratings.csv", "user,item,rating,timestamp\nu1,i1,5,1\nu1,i2,1,2\n")
    assert len(load_table_pair(table).interactions) == 2
    two = tmp_path / "two.zip"
    with zipfile.ZipFile(two, "w") as zf:
        zf.writestr("a.json", "{}")
        zf.writestr("b.json", "{}")
    with pytest.raises(DataError, match="zip archive with 2 files .* unzip it") as err:
        load_amazon(two)
    assert "encoding" not in str(err.value)


def test_a_zipped_movielens_folder_says_unzip(tmp_path: Path) -> None:
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ml-100k/u.data", "1\t1\t5\t1\n")
    with pytest.raises(DataError, match="zip archive; unzip it and pass the ML-100k folder"):
        load_ml100k(archive)


def test_binary_file_is_called_binary_not_badly_encoded(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv"
    path.write_bytes(b"\x00\x01\x02binary\x00" * 20)
    with pytest.raises(DataError, match="binary file, not text") as err:
        load_table_pair(path)
    assert "encoding" not in str(err.value)


def test_gzip_without_the_suffix_and_parquet_by_content(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv"
    path.write_bytes(gzip.compress(b"user,item,rating,timestamp\nu1,i1,5,1\nu2,i1,1,2\n"))
    assert len(load_table_pair(path).interactions) == 2
    import pandas as pd

    named_csv = tmp_path / "events.csv"
    pd.DataFrame({"user": ["a", "b"], "item": ["x", "x"], "rating": [5, 1],
                  "timestamp": [1, 2]}).to_parquet(named_csv)
    assert len(load_table_pair(named_csv).interactions) == 2


# --- headerless tables -------------------------------------------------------------------

HEADERLESS = "1,10,5,100\n1,11,2,200\n2,10,4,300\n"


def test_headerless_csv_by_position(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text(HEADERLESS)
    ds = load_table_pair(path, header="none")
    assert ds.interactions["user"].tolist() == ["1", "1", "2"]
    assert ds.interactions["rating"].tolist() == [5.0, 2.0, 4.0]
    shuffled = tmp_path / "s.csv"
    shuffled.write_text("x,5,10,1,100\nx,2,11,1,200\nx,4,10,2,300\n")
    ds = load_table_pair(shuffled, header="none", columns="_,rating,item,user,timestamp")
    assert ds.interactions["item"].tolist() == ["10", "11", "10"]
    ds = load_table_pair(shuffled, header="none",
                         columns={"user": 3, "item": 2, "rating": 1, "timestamp": 4})
    assert ds.interactions["user"].tolist() == ["1", "1", "2"]


def test_header_that_looks_like_data_gets_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text(HEADERLESS)
    with pytest.raises(DataError, match="looks like data.*header=none"):
        load_table_pair(path)


# --- ratings, duplicates, one-class splits ------------------------------------------------

@pytest.mark.parametrize("bad", ["99", "-7", "inf"])
def test_table_rating_outside_its_scale(tmp_path: Path, bad: str) -> None:
    rows = ["user,item,rating,timestamp"] + [f"u{i},i{i % 7},{1 + i % 5},{i}" for i in
                                             range(200)]
    rows[150] = f"u9,i3,{bad},149"
    path = tmp_path / "r.csv"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError) as err:
        load_table_pair(path)
    assert (err.value.line, err.value.field) == (151, "rating")
    assert bad in str(err.value)


def test_declared_rating_scale(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("user,item,rating,timestamp\nu1,i1,-3,1\nu1,i2,3,2\n")
    ds = load_table_pair(path, rating_scale="-5,5", click_threshold=1)
    assert ds.interactions["rating"].tolist() == [-3.0, 3.0]
    with pytest.raises(DataError, match="outside the rating scale -2 to 5"):
        load_table_pair(path, rating_scale=(-2, 5))


@pytest.mark.parametrize("bad", ["99", "-7", "0"])
def test_movielens_rating_outside_1_to_5(tmp_path: Path, bad: str) -> None:
    root = write_ml100k(tmp_path / "ml")
    lines = (root / "u.data").read_text().splitlines()
    user, item, _, stamp = lines[4].split("\t")
    lines[4] = "\t".join([user, item, bad, stamp])
    (root / "u.data").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=f"{bad} is outside the scale 1 to 5") as err:
        load_ml100k(root)
    assert (err.value.line, err.value.field) == (5, "rating")


@pytest.mark.parametrize("bad", [99, -7, "Infinity"])
def test_amazon_rating_outside_1_to_5(tmp_path: Path, bad) -> None:
    rows = reviews_2018()
    rows[3]["overall"] = bad
    path = tmp_path / "r.json"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(DataError) as err:
        load_amazon(path)
    assert (err.value.line, err.value.field) == (4, "overall")


def test_ml1m_errors_name_its_own_separator(tmp_path: Path) -> None:
    for name, text in {"ratings.dat": "1::10::5\n", "movies.dat": "10::Heat (1995)::Crime\n",
                       "users.dat": "1::F::1::10::48067\n"}.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match="separated by '::'") as err:
        load_ml1m(tmp_path)
    assert "\\t" not in str(err.value)


def test_exact_duplicates_are_dropped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("user,item,rating,timestamp\nu1,i1,5,1\nu1,i1,5,1\nu1,i1,5,1\n"
                    "u1,i1,4,1\nu2,i1,1,2\n")
    ds = load_table_pair(path)
    assert len(ds.interactions) == 3  # same user, item and time, other rating: kept
    assert ds.stats["duplicates_dropped"] == 2
    assert ds.summary()["duplicates_dropped"] == 2
    assert ds.notes[0].startswith("2 exact duplicate ratings")


def test_one_class_test_split_is_a_note_not_an_error(tmp_path: Path) -> None:
    root = write_ml100k(tmp_path / "ml")
    lines = [line.split("\t") for line in (root / "u.data").read_text().splitlines()]
    cut = np.quantile([int(r[3]) for r in lines], 0.85)
    for r in lines:
        if int(r[3]) > cut:
            r[2] = "5"
    (root / "u.data").write_text("\n".join("\t".join(r) for r in lines) + "\n")
    task = build_task(load_ml100k(root), TaskConfig())
    test = task.samples[task.samples["split"] == "test"]
    assert test["label"].nunique() == 1
    assert task.notes == [f"the test split has one label class ({len(test):,} samples, "
                          f"{len(test):,} clicks): its AUC and UAUC are n/a"]


# --- one click rule, typed options ------------------------------------------------------

@pytest.mark.parametrize(("name", "default"), [("ml-100k", 4.0), ("table", 4.0),
                                               ("amazon", 5.0)])
def test_every_source_takes_click_threshold(tmp_path: Path, name: str, default: float) -> None:
    if name == "ml-100k":
        path = write_ml100k(tmp_path / "ml")
    elif name == "amazon":
        path = jsonl(tmp_path / "r.json", reviews_2018())
    else:
        path = tmp_path / "r.csv"
        path.write_text("user,item,rating,timestamp\nu1,i1,5,1\nu1,i2,3,2\nu2,i1,1,3\n")
    assert load_dataset(name, path).click_threshold == default
    ds = load_dataset(name, path, options={"click_threshold": "3"})
    assert ds.click_threshold == 3.0


def test_the_old_amazon_option_name_points_to_the_new_one(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "r.json", reviews_2018())
    with pytest.raises(ConfigError, match="unknown key 'click_rating' of the amazon source "
                                          r"\(did you mean 'click_threshold'\?\)"):
        load_dataset("amazon", path, options={"click_rating": "4"})


def test_columns_with_python_quotes_and_unknown_roles(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("uid,iid,stars,ts\nu1,i1,5,1\nu1,i2,1,2\n")
    ds = load_dataset("table", path, options={
        "columns": "{'user': 'uid', 'item': 'iid', 'rating': 'stars', 'timestamp': 'ts'}"})
    assert ds.interactions["rating"].tolist() == [5.0, 1.0]
    with pytest.raises(ConfigError, match="--option columns: unknown role 'usr'; valid roles: "
                                          "user, item"):
        load_dataset("table", path, options={"columns": '{"usr": "uid"}'})
    with pytest.raises(ConfigError, match="--option columns: expected a mapping"):
        load_dataset("table", path, options={"columns": "{user: uid"})
    assert TableColumns.from_option("user,item,rating,timestamp", "x").rating == "2"


# --- pathological lines -------------------------------------------------------------------

def test_long_fields_load(tmp_path: Path) -> None:
    long_text = "word " * 60_000  # 300,000 characters, over csv's 131,072 default limit
    inter = tmp_path / "r.csv"
    inter.write_text("user,item,rating,timestamp\nu1,i1,5,1\nu1,i2,1,2\n")
    items = tmp_path / "items.csv"
    items.write_text(f'item,title,text\ni1,Long,"{long_text}"\ni2,Short,ok\n')
    ds = load_table_pair(inter, items)
    assert len(ds.items.set_index("item").loc["i1", "text"]) > 290_000
    sep = tmp_path / "r2.txt"  # a two-character separator goes through the python engine
    sep.write_text(f"user::item::rating::timestamp::note\nu1::i1::5::1::{long_text}\n"
                   "u1::i2::1::2::x\n")
    assert len(load_table_pair(sep, sep="::").interactions) == 2


def test_deeply_nested_json_line_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    rows = [json.dumps(r) for r in reviews_2018()[:3]]
    rows.insert(1, "[" * 200_000 + "]" * 200_000)
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError) as err:
        load_amazon(path)
    assert err.value.line == 2
    assert len(str(err.value)) < 700


def test_a_huge_bad_value_is_quoted_short(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("user,item,rating,timestamp\nu1,i1," + "9" * 5_000_000 + "x,1\n")
    with pytest.raises(DataError) as err:
        load_table_pair(path)
    assert err.value.line == 2 and len(str(err.value)) < 700
