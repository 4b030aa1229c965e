"""load_amazon: JSON and Python-literal lines, gzip, metadata, and every error's location."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from engine.data.amazon import load_amazon
from engine.errors import ConfigError, DataError

REVIEWS = [
    {"reviewerID": "U1", "asin": "B001", "overall": 5.0, "unixReviewTime": 1300000000,
     "reviewText": "great"},
    {"reviewerID": "U1", "asin": "B002", "overall": 3.0, "unixReviewTime": 1300000100},
    {"reviewerID": "U2", "asin": "B001", "overall": 4.0, "unixReviewTime": 1300000200},
    {"reviewerID": "U2", "asin": "B003", "overall": 5.0, "unixReviewTime": 1300000300},
    {"reviewerID": "U3", "asin": "B002", "overall": 1.0, "unixReviewTime": 1300000400},
]
META_2014 = [
    {"asin": "B001", "title": "Dune", "description": "A desert planet epic.",
     "categories": [["Books", "Literature & Fiction", "Science Fiction"], ["Books", "Classics"]],
     "brand": "Ace"},
    {"asin": "B002", "title": "Emma", "description": "A matchmaking comedy.",
     "categories": [["Books", "Romance"]], "price": 9.99},
    {"asin": "B999", "title": "Never reviewed", "categories": [["Books"]]},
]
META_2018 = [
    {"asin": "B001", "title": "Dune", "description": ["Spice.", "Sandworms."],
     "category": ["Books", "Science Fiction & Fantasy", "Science Fiction"], "brand": "Ace"},
    {"asin": "B003", "title": "Odyssey", "description": [], "category": ["Books", "Classics"]},
]


def write_lines(path: Path, lines: list[str]) -> Path:
    """Write text lines, gzipped when the name ends in .gz."""
    data = ("\n".join(lines) + "\n").encode("utf-8")
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def json_lines(path: Path, records: list[dict[str, Any]]) -> Path:
    return write_lines(path, [json.dumps(r) for r in records])


def literal_lines(path: Path, records: list[dict[str, Any]]) -> Path:
    """The 2014 dumps' style: Python repr, single quotes."""
    return write_lines(path, [repr(r) for r in records])


def test_gzipped_json_reviews_and_metadata(tmp_path: Path) -> None:
    reviews = json_lines(tmp_path / "reviews_Books.json.gz", REVIEWS)
    meta = json_lines(tmp_path / "meta_Books.json.gz", META_2014)

    ds = load_amazon(reviews, meta, category="Books")

    assert ds.name == "amazon-Books"
    assert ds.source == str(reviews)
    inter = ds.interactions
    assert len(inter) == 5
    assert inter["user"].tolist() == ["U1", "U1", "U2", "U2", "U3"]
    assert inter["item"].tolist() == ["B001", "B002", "B001", "B003", "B002"]
    assert inter["rating"].tolist() == [5.0, 3.0, 4.0, 5.0, 1.0]
    assert inter["timestamp"].tolist() == [1300000000 + 100 * i for i in range(5)]
    assert str(inter["rating"].dtype) == "float32"
    assert str(inter["timestamp"].dtype) == "int64"
    assert ds.click_threshold == 5.0
    assert ds.summary()["click_rate"] == pytest.approx(2 / 5)
    assert sorted(ds.users["user"]) == ["U1", "U2", "U3"]
    assert ds.user_attributes == []

    items = ds.items.set_index("item")
    assert sorted(items.index) == ["B001", "B002", "B003"]  # B999 has no reviews: dropped
    assert items.loc["B001", "title"] == "Dune"
    assert "A desert planet epic." in items.loc["B001", "text"]
    assert "Books > Literature & Fiction > Science Fiction" in items.loc["B001", "text"]
    assert items.loc["B001", "tags"] == ["Science Fiction", "Classics"]
    assert items.loc["B002", "tags"] == ["Romance"]
    assert ds.item_attributes == ["brand"]
    assert items.loc["B001", "brand"] == "Ace"
    assert items.loc["B002", "brand"] == ""
    # reviewed but missing from the metadata: an id-only row
    assert items.loc["B003", "title"] == "B003"
    assert items.loc["B003", "tags"] == []


def test_plain_python_literal_metadata_2018_layout(tmp_path: Path) -> None:
    reviews = json_lines(tmp_path / "reviews.json", REVIEWS)
    meta = literal_lines(tmp_path / "meta.json", META_2018)
    assert "'asin'" in meta.read_text()  # really not JSON

    ds = load_amazon(reviews, meta)

    assert ds.name == "amazon"
    items = ds.items.set_index("item")
    assert items.loc["B001", "text"] == (
        "Dune. Spice. Sandworms. Books > Science Fiction & Fantasy > Science Fiction"
    )
    assert items.loc["B001", "tags"] == ["Science Fiction"]  # leaf of the one path
    assert items.loc["B003", "tags"] == ["Classics"]
    assert items.loc["B003", "text"] == "Odyssey. Books > Classics"
    assert items.loc["B002", "title"] == "B002"  # not in this metadata


def test_python_literal_reviews_gzipped_with_blank_lines(tmp_path: Path) -> None:
    lines = [repr(r) for r in REVIEWS]
    lines.insert(2, "")
    reviews = write_lines(tmp_path / "reviews.json.gz", lines)

    ds = load_amazon(reviews)

    assert len(ds.interactions) == 5
    assert ds.interactions["rating"].tolist() == [5.0, 3.0, 4.0, 5.0, 1.0]
    assert sorted(ds.items["item"]) == ["B001", "B002", "B003"]
    assert ds.item_attributes == []


def test_click_threshold_and_numeric_strings(tmp_path: Path) -> None:
    records = [dict(r) for r in REVIEWS]
    records[1]["overall"] = "3.0"  # some dumps quote numbers
    records[1]["unixReviewTime"] = "1300000100"
    reviews = json_lines(tmp_path / "r.json", records)

    ds = load_amazon(reviews, click_threshold=4.0)

    assert ds.interactions["rating"].tolist() == [5.0, 3.0, 4.0, 5.0, 1.0]
    assert ds.interactions["timestamp"].iloc[1] == 1300000100
    assert ds.summary()["click_rate"] == pytest.approx(3 / 5)


# --- errors: each names the file, the line and the field -------------------------------


def test_missing_reviews_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found") as err:
        load_amazon(tmp_path / "nope.json.gz")
    assert err.value.file == str(tmp_path / "nope.json.gz")


def test_missing_meta_file(tmp_path: Path) -> None:
    reviews = json_lines(tmp_path / "r.json", REVIEWS)
    with pytest.raises(DataError, match="metadata file not found") as err:
        load_amazon(reviews, tmp_path / "meta.json")
    assert err.value.file == str(tmp_path / "meta.json")


def test_line_that_is_neither_json_nor_literal(tmp_path: Path) -> None:
    lines = [json.dumps(r) for r in REVIEWS]
    lines.insert(1, "")  # blank lines still count
    lines[3] = '{"reviewerID": "U2", "asin": oops}'
    path = write_lines(tmp_path / "r.json.gz", lines)
    with pytest.raises(DataError, match="neither JSON nor a Python literal") as err:
        load_amazon(path)
    assert (err.value.file, err.value.line) == (str(path), 4)


def test_bad_metadata_line(tmp_path: Path) -> None:
    reviews = json_lines(tmp_path / "r.json", REVIEWS)
    meta = write_lines(tmp_path / "m.json", [repr(META_2014[0]), "not a record at all"])
    with pytest.raises(DataError, match="neither JSON") as err:
        load_amazon(reviews, meta)
    assert (err.value.file, err.value.line) == (str(meta), 2)


def test_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "r.json", [json.dumps(REVIEWS[0]), "[1, 2, 3]"])
    with pytest.raises(DataError, match="expected an object") as err:
        load_amazon(path)
    assert err.value.line == 2


@pytest.mark.parametrize("field", ["reviewerID", "asin", "overall", "unixReviewTime"])
def test_missing_review_field(tmp_path: Path, field: str) -> None:
    records = [dict(r) for r in REVIEWS]
    del records[2][field]
    path = json_lines(tmp_path / "r.json", records)
    with pytest.raises(DataError, match="missing required field") as err:
        load_amazon(path)
    assert (err.value.file, err.value.line, err.value.field) == (str(path), 3, field)


def test_missing_asin_in_metadata(tmp_path: Path) -> None:
    reviews = json_lines(tmp_path / "r.json", REVIEWS)
    meta = json_lines(tmp_path / "m.json", [META_2014[0], {"title": "no id"}])
    with pytest.raises(DataError, match="missing required field") as err:
        load_amazon(reviews, meta)
    assert (err.value.file, err.value.line, err.value.field) == (str(meta), 2, "asin")


@pytest.mark.parametrize(
    ("field", "value"),
    [("overall", "five"), ("overall", None), ("overall", True), ("overall", float("nan")),
     ("unixReviewTime", "yesterday"), ("unixReviewTime", [1])],
)
def test_non_numeric_rating_or_time(tmp_path: Path, field: str, value: Any) -> None:
    records = [dict(r) for r in REVIEWS]
    records[3][field] = value
    path = json_lines(tmp_path / "r.json", records)
    with pytest.raises(DataError) as err:
        load_amazon(path)
    assert (err.value.file, err.value.line, err.value.field) == (str(path), 4, field)
    if value is not None:
        assert "not a number" in str(err.value)


@pytest.mark.parametrize("name", ["r.json", "r.json.gz"])
def test_empty_reviews_file(tmp_path: Path, name: str) -> None:
    path = write_lines(tmp_path / name, ["", "  "])
    with pytest.raises(DataError, match="empty") as err:
        load_amazon(path)
    assert err.value.file == str(path)


def test_empty_metadata_file(tmp_path: Path) -> None:
    reviews = json_lines(tmp_path / "r.json", REVIEWS)
    meta = tmp_path / "m.json"
    meta.write_text("")
    with pytest.raises(DataError, match="empty") as err:
        load_amazon(reviews, meta)
    assert err.value.file == str(meta)


def test_unknown_encoding(tmp_path: Path) -> None:
    path = json_lines(tmp_path / "r.json", REVIEWS)
    with pytest.raises(ConfigError, match="--option encoding: unknown encoding 'klingon'"):
        load_amazon(path, encoding="klingon")  # checked before the file is read


def test_undecodable_line(tmp_path: Path) -> None:
    path = json_lines(tmp_path / "r.json", REVIEWS)
    path.write_bytes(path.read_bytes() + b'{"reviewerID": "\xff"}\n')
    with pytest.raises(DataError, match="cannot decode") as err:
        load_amazon(path)
    assert err.value.line == 6


def test_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "r.json.gz"
    path.write_bytes(b"this is not gzip data")
    with pytest.raises(DataError, match="cannot read") as err:
        load_amazon(path)
    assert err.value.file == str(path)


def test_single_label_class(tmp_path: Path) -> None:
    records = [dict(r, overall=5.0) for r in REVIEWS]
    path = json_lines(tmp_path / "r.json", records)
    with pytest.raises(DataError, match="one label class") as err:
        load_amazon(path)
    assert (err.value.file, err.value.field) == (str(path), "rating")
