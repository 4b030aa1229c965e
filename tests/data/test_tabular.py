"""load_table_pair: csv/tsv/parquet, column mapping, timestamps, and every error's location."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest

from engine.data.tabular import TableColumns, load_table_pair
from engine.errors import ConfigError, DataError

INTERACTIONS_CSV = """\
user,item,rating,timestamp
u1,m1,5,1600000000
u1,m2,3,2020-09-13T12:26:40Z
u2,m1,4,2020-09-13 12:30:00

u3,m3,1,2020-09-14
"""
ITEMS_CSV = """\
item,title,text,genres,studio
m1,Alien,"In space, no one can hear you scream.",Horror|Sci-Fi,Fox
m2,Heat,A heist in LA.,Crime,
m3,Up,,Animation | Family,Pixar
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_pair_with_iso_timestamps(tmp_path: Path) -> None:
    inter = write(tmp_path / "ratings.csv", INTERACTIONS_CSV)
    items = write(tmp_path / "movies.csv", ITEMS_CSV)

    ds = load_table_pair(inter, items, columns=TableColumns(tags="genres"))

    assert ds.name == "ratings"
    assert ds.source == str(inter)
    frame = ds.interactions
    assert len(frame) == 4
    assert frame["user"].tolist() == ["u1", "u1", "u2", "u3"]
    assert frame["item"].tolist() == ["m1", "m2", "m1", "m3"]
    assert frame["rating"].tolist() == [5.0, 3.0, 4.0, 1.0]
    # 2020-09-13T12:26:40Z is unix 1600000000; naive datetimes are read as UTC
    assert frame["timestamp"].tolist() == [1600000000, 1600000000, 1600000200, 1600041600]
    assert ds.click_threshold == 4.0
    assert ds.summary()["click_rate"] == pytest.approx(2 / 4)
    assert sorted(ds.users["user"]) == ["u1", "u2", "u3"]

    by_id = ds.items.set_index("item")
    assert by_id.loc["m1", "title"] == "Alien"
    assert by_id.loc["m1", "text"] == "In space, no one can hear you scream."
    assert by_id.loc["m3", "text"] == "Up"  # no text: falls back to the title
    assert by_id.loc["m1", "tags"] == ["Horror", "Sci-Fi"]
    assert by_id.loc["m3", "tags"] == ["Animation", "Family"]
    assert ds.item_attributes == ["studio"]  # the remaining items column
    assert by_id.loc["m2", "studio"] == ""


def test_parquet_pair_with_datetime_column_and_mapping(tmp_path: Path) -> None:
    inter = tmp_path / "events.parquet"
    pd.DataFrame({
        "uid": [10, 10, 11, 12],
        "sku": ["a", "b", "a", "c"],
        "stars": [4.5, 2.0, 5.0, 3.0],
        "when": pd.to_datetime(["2021-01-01", "2021-01-02", "2021-01-03", "2021-01-04"]),
        "ignored": [1, 2, 3, 4],
    }).to_parquet(inter)
    items = tmp_path / "catalog.parquet"
    pd.DataFrame({
        "sku": ["a", "b", "c"],
        "name": ["Lamp", "Desk", "Chair"],
        "blurb": ["Bright.", "Oak", None],
        "specs": ["40W", "", "4 legs"],
        "color": ["red", "brown", "black"],
    }).to_parquet(items)
    cols = TableColumns(user="uid", item="sku", rating="stars", timestamp="when",
                        title="name", text=("blurb", "specs"), item_key="sku")

    ds = load_table_pair(inter, items, columns=cols, click_threshold=4.5, name="shop")

    assert ds.name == "shop"
    assert ds.interactions["user"].tolist() == ["10", "10", "11", "12"]
    assert ds.interactions["rating"].tolist() == [4.5, 2.0, 5.0, 3.0]
    assert ds.interactions["timestamp"].tolist() == [1609459200 + 86400 * i for i in range(4)]
    assert ds.summary()["click_rate"] == pytest.approx(2 / 4)
    by_id = ds.items.set_index("item")
    assert by_id.loc["a", "text"] == "Bright. 40W"  # text columns joined, one stop
    assert by_id.loc["b", "text"] == "Oak"  # a blank part adds nothing
    assert by_id.loc["c", "text"] == "4 legs"
    assert by_id.loc["c", "title"] == "Chair"
    assert by_id.loc["a", "tags"] == []
    assert ds.item_attributes == ["color"]


def test_label_column_and_tsv(tmp_path: Path) -> None:
    inter = write(tmp_path / "clicks.tsv",
                  "user\titem\tclicked\tts\nu1\ti1\t1\t10\nu1\ti2\t0\t20\nu2\ti1\t0\t30\n")

    ds = load_table_pair(inter, columns=TableColumns(rating=None, label="clicked",
                                                     timestamp="ts"))

    assert ds.click_threshold == 1.0
    assert ds.interactions["rating"].tolist() == [1.0, 0.0, 0.0]
    assert ds.interactions["timestamp"].tolist() == [10, 20, 30]
    assert ds.summary()["click_rate"] == pytest.approx(1 / 3)
    assert sorted(ds.items["item"]) == ["i1", "i2"]  # no items file: id-only rows
    assert ds.items["title"].tolist() == ds.items["item"].tolist()


def test_txt_with_custom_separator(tmp_path: Path) -> None:
    inter = write(tmp_path / "data.txt",
                  "user;item;rating;timestamp\nu1;i1;5;1\nu2;i1;2;2\n")
    ds = load_table_pair(inter, sep=";")
    assert ds.interactions["rating"].tolist() == [5.0, 2.0]


def test_text_given_as_a_string_is_one_column() -> None:
    assert TableColumns(text="plot").text == ("plot",)


def test_neither_rating_nor_label() -> None:
    with pytest.raises(ConfigError, match="rating=None, label=None"):
        TableColumns(rating=None)


# --- errors: each names the file, the line (header = line 1) and the field -------------


def test_missing_interactions_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="interactions file not found") as err:
        load_table_pair(tmp_path / "nope.csv")
    assert err.value.file == str(tmp_path / "nope.csv")


def test_missing_items_file(tmp_path: Path) -> None:
    inter = write(tmp_path / "r.csv", INTERACTIONS_CSV)
    with pytest.raises(DataError, match="items file not found") as err:
        load_table_pair(inter, tmp_path / "items.csv")
    assert err.value.file == str(tmp_path / "items.csv")


def test_missing_column_lists_real_columns(tmp_path: Path) -> None:
    inter = write(tmp_path / "r.csv", INTERACTIONS_CSV)
    with pytest.raises(DataError) as err:
        load_table_pair(inter, columns=TableColumns(rating="score"))
    assert (err.value.file, err.value.field) == (str(inter), "score")
    message = str(err.value)
    assert "'user', 'item', 'rating', 'timestamp'" in message
    assert "TableColumns.rating" in message


@pytest.mark.parametrize(
    ("cols", "field"),
    [(TableColumns(item_key="movie_id"), "movie_id"),
     (TableColumns(title="name"), "name"),
     (TableColumns(text=("text", "plot")), "plot"),
     (TableColumns(tags="labels"), "labels")],
)
def test_missing_items_column(tmp_path: Path, cols: TableColumns, field: str) -> None:
    inter = write(tmp_path / "r.csv", INTERACTIONS_CSV)
    items = write(tmp_path / "i.csv", ITEMS_CSV)
    with pytest.raises(DataError, match="the file's columns are") as err:
        load_table_pair(inter, items, columns=cols)
    assert (err.value.file, err.value.field) == (str(items), field)


@pytest.mark.parametrize(
    ("column", "value", "line", "message"),
    [("rating", "abc", 3, "not a number: 'abc'"),
     ("rating", "", 4, "missing value"),
     ("timestamp", "last tuesday", 3, "not a unix time or ISO-8601 datetime"),
     ("timestamp", "2020-13-45", 6, "not a unix time or ISO-8601 datetime"),
     ("user", "", 4, "missing value")],
)
def test_bad_value_names_line_and_field(
    tmp_path: Path, column: str, value: str, line: int, message: str
) -> None:
    frame = pd.read_csv(io.StringIO(INTERACTIONS_CSV), dtype=str)
    row = {3: 1, 4: 2, 6: 3}[line]  # file line -> data row, given the blank line below
    frame.loc[row, column] = value
    lines = frame.to_csv(index=False).splitlines()
    lines.insert(4, "")  # a blank line before the last row: line numbers must count it
    path = write(tmp_path / "r.csv", "\n".join(lines) + "\n")
    with pytest.raises(DataError, match=message) as err:
        load_table_pair(path)
    assert (err.value.file, err.value.line, err.value.field) == (str(path), line, column)


def test_line_numbers_count_multiline_quoted_fields(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv",
                 'user,item,rating,timestamp\n"u\n1",m1,5,1\nu2,m2,bad,2\n')
    with pytest.raises(DataError, match="not a number") as err:
        load_table_pair(path)
    assert err.value.line == 4


def test_label_must_be_binary(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", "user,item,y,timestamp\nu1,i1,1,1\nu1,i2,2,2\n")
    with pytest.raises(DataError, match="label must be 0 or 1: '2'") as err:
        load_table_pair(path, columns=TableColumns(rating=None, label="y"))
    assert (err.value.file, err.value.line, err.value.field) == (str(path), 3, "y")


def test_bad_parquet_value_names_row(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    pd.DataFrame({"user": ["a", "b", "c"], "item": ["x", "y", "z"],
                  "rating": ["5", "4", "n/a"], "timestamp": [1, 2, 3]}).to_parquet(path)
    with pytest.raises(DataError, match="not a number: 'n/a'") as err:
        load_table_pair(path)
    assert (err.value.file, err.value.line, err.value.field) == (str(path), 3, "rating")


def test_parquet_null_rating(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    pd.DataFrame({"user": ["a", "b"], "item": ["x", "y"], "rating": [5.0, None],
                  "timestamp": [1, 2]}).to_parquet(path)
    with pytest.raises(DataError, match="missing value") as err:
        load_table_pair(path)
    assert (err.value.line, err.value.field) == (2, "rating")


@pytest.mark.parametrize("text", ["", "\n\n", "user,item,rating,timestamp\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "r.csv", text)
    with pytest.raises(DataError, match="empty") as err:
        load_table_pair(path)
    assert err.value.file == str(path)


def test_empty_parquet(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    pd.DataFrame({"user": [], "item": [], "rating": [], "timestamp": []}).to_parquet(path)
    with pytest.raises(DataError, match="empty") as err:
        load_table_pair(path)
    assert err.value.file == str(path)


def test_wrong_separator(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", INTERACTIONS_CSV.replace(",", "\t"))
    with pytest.raises(DataError, match="single column") as err:
        load_table_pair(path)
    assert (err.value.file, err.value.line, err.value.field) == (str(path), 1, "user")
    assert "pass sep='\\t'" in str(err.value)


def test_wrong_number_of_fields(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", "user,item,rating,timestamp\nu1,i1,5,1\nu2,i2,4,2,9\n")
    with pytest.raises(DataError, match="wrong number of fields") as err:
        load_table_pair(path)
    assert (err.value.file, err.value.line) == (str(path), 3)


@pytest.mark.parametrize("name", ["r.xlsx", "ratings", "r.parquet.gz"])
def test_unknown_extension(tmp_path: Path, name: str) -> None:
    path = write(tmp_path / name, INTERACTIONS_CSV)
    with pytest.raises(DataError, match="unknown file type") as err:
        load_table_pair(path)
    assert err.value.file == str(path)


def test_unknown_encoding(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", INTERACTIONS_CSV)
    with pytest.raises(ConfigError, match="--option encoding: unknown encoding 'klingon'"):
        load_table_pair(path, encoding="klingon")  # checked before the file is read


def test_wrong_encoding_names_line(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_bytes("user,item,rating,timestamp\nu1,i1,5,1\nJosé,i2,1,2\n".encode("latin-1"))
    with pytest.raises(DataError, match="cannot decode") as err:
        load_table_pair(path)
    assert err.value.line == 3
    assert load_table_pair(path, encoding="latin-1").interactions["user"].iloc[1] == "José"


def test_single_label_class(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", "user,item,rating,timestamp\nu1,i1,2,1\nu2,i2,3,2\n")
    with pytest.raises(DataError, match="one label class") as err:
        load_table_pair(path)
    assert (err.value.file, err.value.field) == (str(path), "rating")


def write_parts(folder: Path, frames: list[pd.DataFrame]) -> Path:
    folder.mkdir()
    for k, frame in enumerate(frames):
        frame.to_parquet(folder / f"part-{k:05d}.parquet")
    return folder


def test_a_folder_of_parquet_parts_is_one_table(tmp_path: Path) -> None:
    rows = pd.DataFrame({"user": ["u1", "u1", "u2", "u2", "u3"], "item": ["a", "b", "a", "c", "b"],
                         "rating": [5.0, 2.0, 4.0, 1.0, 3.0], "timestamp": [1, 2, 3, 4, 5],
                         "wide": ["x" * 100] * 5})  # never read: not a role's column
    whole = tmp_path / "whole.parquet"
    rows.to_parquet(whole)
    parts = write_parts(tmp_path / "events", [rows.iloc[:2], rows.iloc[2:4], rows.iloc[4:]])
    folder = load_table_pair(parts)
    single = load_table_pair(whole)
    assert folder.name == "events"
    pd.testing.assert_frame_equal(folder.interactions, single.interactions)


def test_parquet_parts_name_the_part_and_row_of_a_bad_value(tmp_path: Path) -> None:
    good = pd.DataFrame({"user": ["a", "b"], "item": ["x", "y"], "rating": ["5", "4"],
                         "timestamp": [1, 2]})
    bad = good.assign(rating=["3", "n/a"])
    parts = write_parts(tmp_path / "events", [good, bad])
    with pytest.raises(DataError, match="not a number: 'n/a'") as err:
        load_table_pair(parts)
    assert (err.value.file, err.value.line, err.value.field) == (
        str(parts / "part-00001.parquet"), 2, "rating")


def test_parquet_parts_missing_column_and_empty_folder(tmp_path: Path) -> None:
    parts = write_parts(tmp_path / "events", [pd.DataFrame({"user": ["a"], "item": ["x"],
                                                            "stars": [5.0], "timestamp": [1]})])
    with pytest.raises(DataError, match="no column 'rating' in the Parquet parts .*stars"):
        load_table_pair(parts)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no \*.parquet files"):
        load_table_pair(tmp_path / "empty")
