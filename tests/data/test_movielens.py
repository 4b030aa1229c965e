"""MovieLens loaders: contents of ML-100k and ML-1M, every error's location, fetching."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import engine.data.movielens as movielens
from engine.data.movielens import fetch_ml100k, load_ml1m, load_ml100k
from engine.errors import DataError
from tests.synthetic import write_ml100k

SHARED_ML100K = Path(__file__).resolve().parents[3] / "shared" / "data" / "ml-100k"
needs_shared = pytest.mark.skipif(not SHARED_ML100K.is_dir(),
                                  reason=f"no shared ML-100k copy at {SHARED_ML100K}")


def read_rows(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines() if line]


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root with its bytes: an error must leave it exactly so."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def load_error(root: Path) -> DataError:
    before = snapshot(root) if root.is_dir() else None
    with pytest.raises(DataError) as info:
        load_ml100k(root)
    if before is not None:
        assert snapshot(root) == before  # nothing written, renamed or removed
    return info.value


def replace_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text(encoding="latin-1").split("\n")  # not splitlines: 0x85 is text
    lines[number - 1] = text
    path.write_text("\n".join(lines), encoding="latin-1")


# --------------------------------------------------------------------------- ML-100k contents


def test_ml100k_interactions_match_u_data(ml100k_dir: Path) -> None:
    ds = load_ml100k(ml100k_dir)
    rows = read_rows(ml100k_dir / "u.data")
    inter = ds.interactions
    assert len(inter) == len(rows)
    assert list(inter.columns) == ["user", "item", "rating", "timestamp"]
    for col in ("user", "item"):  # object or pandas' str dtype, holding str
        assert pd.api.types.is_string_dtype(inter[col])
        assert inter[col].map(type).eq(str).all()
    assert inter["rating"].dtype == np.float32
    assert inter["timestamp"].dtype == np.int64
    first, last = rows[0], rows[-1]
    assert inter.iloc[0].tolist() == [first[0], first[1], float(first[2]), int(first[3])]
    assert inter.iloc[-1].tolist() == [last[0], last[1], float(last[2]), int(last[3])]
    assert set(inter["user"]) == {r[0] for r in rows}
    assert set(inter["item"]) == {r[1] for r in rows}
    ratings = np.array([float(r[2]) for r in rows])
    assert inter["rating"].to_numpy().tolist() == ratings.tolist()
    assert set(ratings.tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert ds.name == "ml-100k"
    assert ds.source == str(ml100k_dir)


def test_ml100k_summary(ml100k_dir: Path) -> None:
    ds = load_ml100k(ml100k_dir)
    rows = read_rows(ml100k_dir / "u.data")
    ratings = np.array([float(r[2]) for r in rows])
    times = [int(r[3]) for r in rows]
    n_users = len({r[0] for r in rows})
    n_items = len({r[1] for r in rows})
    summary = ds.summary()
    assert summary["dataset"] == "ml-100k"
    assert summary["source"] == str(ml100k_dir)
    assert summary["interactions"] == len(rows)
    assert summary["users"] == n_users == 60  # every synthetic user rates 18-39 items
    assert summary["items"] == n_items
    assert summary["density"] == pytest.approx(len(rows) / (n_users * n_items))
    assert summary["first_time"] == min(times)
    assert summary["last_time"] == max(times)
    assert summary["click_rate"] == pytest.approx(float((ratings >= 4).mean()))
    assert 0.0 < summary["click_rate"] < 1.0
    assert ds.click_threshold == 4.0


def test_ml100k_items(ml100k_dir: Path) -> None:
    ds = load_ml100k(ml100k_dir)
    items = ds.items.set_index("item")
    assert len(items) == 80  # every line of u.item, rated or not
    assert ds.item_attributes == ["decade"]
    # synthetic item i (1-based): year 1970 + (i-1) % 30, genre flags 1 + (i-1) % 18 and
    # 1 + 7(i-1) % 18 of ML100K_GENRES
    assert items.loc["3", "title"] == "Movie 3 (1972)"
    assert items.loc["3", "decade"] == "1970s"
    assert items.loc["3", "tags"] == ["Animation", "Sci-Fi"]
    assert items.loc["3", "text"] == "Movie 3 (1972). Genres: Animation, Sci-Fi."
    assert items.loc["5", "tags"] == ["Comedy", "Horror"]
    assert items.loc["13", "title"] == "Movie 13 (1982)"
    assert items.loc["13", "decade"] == "1980s"
    assert items.loc["13", "tags"] == ["Mystery"]  # both flags land on the same genre
    assert items.loc["25", "decade"] == "1990s"
    assert items.loc["1", "tags"] == ["Action"]
    assert items.loc["10", "tags"] == ["Film-Noir"]  # the hyphenated name survives
    assert items.loc["4", "tags"] == ["Children's"]  # and the apostrophe
    assert items.loc["6", "tags"] == ["Crime", "Western"]
    assert all(isinstance(t, list) and t for t in items["tags"])
    assert items["decade"].map(type).eq(str).all()


def test_ml100k_users(ml100k_dir: Path) -> None:
    ds = load_ml100k(ml100k_dir)
    users = ds.users.set_index("user")
    assert len(users) == 60
    assert ds.user_attributes == ["age", "gender", "occupation", "zip"]
    # synthetic user u (1-based): age 18 + (u-1) % 50, gender "MF"[(u-1) % 2],
    # occupation [student, engineer, artist, other][(u-1) % 4], zip 10000 + u - 1
    assert users.loc["1"].tolist() == ["18-24", "M", "student", "1"]
    assert users.loc["7"].tolist() == ["18-24", "M", "artist", "1"]  # age 24
    assert users.loc["8"].tolist() == ["25-34", "F", "other", "1"]  # age 25
    assert users.loc["18"].tolist() == ["35-44", "F", "engineer", "1"]  # age 35
    assert users.loc["28"].tolist() == ["45-49", "F", "other", "1"]  # age 45
    assert users.loc["33"].tolist() == ["50-55", "M", "student", "1"]  # age 50
    assert users.loc["39"].tolist() == ["56+", "M", "artist", "1"]  # age 56
    assert set(users["age"]) == {"18-24", "25-34", "35-44", "45-49", "50-55", "56+"}
    assert all(users[c].map(type).eq(str).all() for c in users.columns)


def test_ml100k_zip_region_and_under_18(tmp_path: Path) -> None:
    root = write_ml100k(tmp_path / "x")
    replace_line(root / "u.user", 2, "2|12|F|student|K7L3N6")  # Canadian postcode, a child
    users = load_ml100k(root).users.set_index("user")
    assert users.loc["2"].tolist() == ["under 18", "F", "student", "K"]


def test_ml100k_latin1_title_and_nel_byte(tmp_path: Path) -> None:
    """u.item is latin-1; byte 0x85 is a character there (a control character, which the
    text cleaning folds like whitespace), not a line break."""
    root = write_ml100k(tmp_path / "x")
    path = root / "u.item"
    lines = path.read_bytes().split(b"\n")
    lines[0] = lines[0].replace(b"Movie 1 (1970)", b"Caf\xe9 \x85 Society (1970)")
    path.write_bytes(b"\n".join(lines))
    items = load_ml100k(root).items.set_index("item")
    assert items.loc["1", "title"] == "Café Society (1970)"
    assert items.loc["1", "decade"] == "1970s"
    assert items.loc["2", "title"] == "Movie 2 (1971)"
    # and line numbers still count real lines after it
    lines = path.read_bytes().split(b"\n")
    lines[3] = lines[3][:-1] + b"x"  # item 4's Western flag
    path.write_bytes(b"\n".join(lines))
    exc = load_error(root)
    assert exc.file.endswith("u.item")
    assert (exc.line, exc.field) == (4, "Western")


# --------------------------------------------------------------------------- ML-100k errors


def test_missing_u_item(tmp_path: Path) -> None:
    root = write_ml100k(tmp_path / "x")
    (root / "u.item").unlink()
    exc = load_error(root)
    assert exc.file == str(root / "u.item")
    assert exc.line is None
    assert "not found" in str(exc)


def test_path_is_not_a_directory(tmp_path: Path) -> None:
    root = write_ml100k(tmp_path / "x")
    exc = load_error(root / "u.data")
    assert exc.file == str(root / "u.data")
    assert "not a directory" in str(exc)
    exc = load_error(tmp_path / "nowhere")
    assert exc.file == str(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()


def test_wrong_separator(tmp_path: Path) -> None:
    root = write_ml100k(tmp_path / "x")
    path = root / "u.data"
    path.write_text(path.read_text().replace("\t", ","))
    exc = load_error(root)
    assert exc.file.endswith("u.data")
    assert exc.line == 1
    assert "separator" in str(exc)
    assert "found 1" in str(exc)


def test_non_numeric_rating(tmp_path: Path) -> None:
    root = write_ml100k(tmp_path / "x")
    path = root / "u.data"
    replace_line(path, 17, "3\t5\tfour\t881250949")
    exc = load_error(root)
    assert exc.file.endswith("u.data")
    assert (exc.line, exc.field) == (17, "rating")
    assert "'four'" in str(exc)


def test_line_number_counts_blank_lines(tmp_path: Path) -> None:
    root = write_ml100k(tmp_path / "x")
    path = root / "u.data"
    lines = path.read_text().splitlines()
    lines[4] = "3\t5\t4\tyesterday"
    lines[2:2] = ["", ""]  # two blank lines before it: the bad line is now line 7
    path.write_text("\n".join(lines) + "\n")
    exc = load_error(root)
    assert (exc.line, exc.field) == (7, "timestamp")


def test_too_few_fields_in_the_middle(tmp_path: Path) -> None:
    root = write_ml100k(tmp_path / "x")
    path = root / "u.data"
    middle = len(read_rows(path)) // 2
    replace_line(path, middle, "3\t5\t4")
    exc = load_error(root)
    assert exc.file.endswith("u.data")
    assert (exc.line, exc.field) == (middle, "timestamp")
    assert "found 3" in str(exc)


def test_too_few_fields_in_text_columns(tmp_path: Path) -> None:
    """A truncated u.user line must not become a user with empty attributes."""
    root = write_ml100k(tmp_path / "x")
    replace_line(root / "u.user", 30, "30|47|F")
    exc = load_error(root)
    assert exc.file.endswith("u.user")
    assert (exc.line, exc.field) == (30, "occupation")
    assert "expected 5 fields" in str(exc) and "found 3" in str(exc)


def test_too_many_fields_in_the_middle(tmp_path: Path) -> None:
    root = write_ml100k(tmp_path / "x")
    replace_line(root / "u.data", 9, "3\t5\t4\t881250949\textra")
    exc = load_error(root)
    assert exc.file.endswith("u.data")
    assert exc.line == 9
    assert "fields" in str(exc)


def test_empty_field_in_u_item_is_fine(tmp_path: Path) -> None:
    """u.item's video-release field is always empty: an empty field is not a short line."""
    root = write_ml100k(tmp_path / "x")
    replace_line(root / "u.item", 2, "2|Movie 2 (1971)||||" + "|".join(["0"] * 18 + ["1"]))
    items = load_ml100k(root).items.set_index("item")
    assert items.loc["2", "tags"] == ["Western"]


def test_missing_numeric_value(tmp_path: Path) -> None:
    root = write_ml100k(tmp_path / "x")
    replace_line(root / "u.data", 11, "3\t5\t\t881250949")
    exc = load_error(root)
    assert (exc.line, exc.field) == (11, "rating")
    assert "missing value" in str(exc)


def test_invalid_utf8_byte(tmp_path: Path) -> None:
    root = write_ml100k(tmp_path / "x")
    path = root / "u.data"
    lines = path.read_bytes().split(b"\n")
    lines[12] = lines[12].replace(b"\t", b"\xff\t", 1)  # line 13
    path.write_bytes(b"\n".join(lines))
    exc = load_error(root)
    assert exc.file.endswith("u.data")
    assert exc.line == 13
    assert "0xff" in str(exc)


def test_empty_u_data(tmp_path: Path) -> None:
    root = write_ml100k(tmp_path / "x")
    (root / "u.data").write_text("")
    exc = load_error(root)
    assert exc.file.endswith("u.data")
    assert "empty" in str(exc)
    (root / "u.data").write_text("\n\n  \n")
    exc = load_error(root)
    assert exc.file.endswith("u.data")
    assert "empty" in str(exc)


def test_single_label_class(tmp_path: Path) -> None:
    root = write_ml100k(tmp_path / "x")
    path = root / "u.data"
    rows = read_rows(path)
    path.write_text("".join(f"{u}\t{i}\t5\t{t}\n" for u, i, _, t in rows))
    exc = load_error(root)
    assert exc.field == "rating"
    assert exc.file == str(root)
    assert f"every one of the {len(rows)} interactions" in str(exc)
    assert "clicks" in str(exc)


# --------------------------------------------------------------------------------- ML-1M

RATINGS_1M = [
    "1::1::5::978300760",
    "1::2::3::978302109",
    "2::1::4::978301968",
    "2::3::2::978300275",
    "3::2::1::978824291",
]
MOVIES_1M = [
    "1::Toy Story (1995)::Animation|Children's|Comedy",
    "2::Café Society (1995)::Drama",
    "3::Jumanji (1995)::Adventure|Children's|Fantasy",
    "4::Heat (1995)::Action|Crime|Thriller",
]
USERS_1M = [  # users 4 and 5 have no ratings (a ratings.dat covering some users)
    "1::F::1::10::48067",
    "2::M::56::16::70072",
    "3::M::25::15::55117",
    "4::F::45::7::02460",
    "5::M::35::20::55455",
]
EXTRA_1M = [
    "1::Toy Story::1995::G::22 Nov 1995::Animation, Adventure, Comedy::John Lasseter::"
    "Joss Whedon::Tom Hanks, Tim Allen::A cowboy doll feels threatened by a space ranger."
    "::http://example.org/1.jpg",
    "2::Café Society::1995::R::01 Jan 1997::Drama::Raymond De Felitta::Raymond De Felitta::"
    "Frank Whaley, Stellan Skarsgård::A scandal in the café society of 1950s New York."
    "::http://example.org/2.jpg",
]


def write_ml1m(root: Path, extra_encoding: str | None = "utf-8") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, lines in (("ratings.dat", RATINGS_1M), ("movies.dat", MOVIES_1M),
                        ("users.dat", USERS_1M)):
        (root / name).write_text("\n".join(lines) + "\n", encoding="latin-1")
    if extra_encoding:
        (root / "movies_extrainfos.dat").write_bytes(
            "\r\n".join(EXTRA_1M).encode(extra_encoding) + b"\r\n")
    return root


def test_ml1m_contents(tmp_path: Path) -> None:
    root = write_ml1m(tmp_path / "ml-1m")
    ds = load_ml1m(root)
    assert ds.name == "ml-1m"
    inter = ds.interactions
    assert len(inter) == 5
    assert inter.iloc[1].tolist() == ["1", "2", 3.0, 978302109]
    assert inter["rating"].dtype == np.float32 and inter["timestamp"].dtype == np.int64
    items = ds.items.set_index("item")
    assert len(items) == 4  # Heat is unrated but listed
    assert items.loc["2", "title"] == "Café Society (1995)"
    assert items.loc["1", "tags"] == ["Animation", "Children's", "Comedy"]
    assert items.loc["2", "tags"] == ["Drama"]
    assert items.loc["3", "decade"] == "1990s"
    users = ds.users.set_index("user")
    assert len(users) == 5  # users.dat lists more users than rated
    assert users.loc["1"].tolist() == ["F", "under 18", "10", "4"]
    assert users.loc["2", "age"] == "56+"
    assert users.loc["3", "age"] == "25-34"
    assert users.loc["4"].tolist() == ["F", "45-49", "7", "0"]
    assert users.loc["5", "age"] == "35-44"
    summary = ds.summary()
    assert (summary["interactions"], summary["users"], summary["items"]) == (5, 3, 3)
    assert summary["click_rate"] == pytest.approx(2 / 5)
    assert (summary["first_time"], summary["last_time"]) == (978300275, 978824291)


def test_ml1m_extra_info_text(tmp_path: Path) -> None:
    root = write_ml1m(tmp_path / "ml-1m")
    items = load_ml1m(root, extra_info=True).items.set_index("item")
    assert items.loc["1", "text"] == (
        "Toy Story (1995). Genres: Animation, Children's, Comedy. Directed by John Lasseter. "
        "Starring Tom Hanks, Tim Allen. A cowboy doll feels threatened by a space ranger.")
    text2 = items.loc["2", "text"]
    assert "Directed by Raymond De Felitta." in text2
    assert "Stellan Skarsgård" in text2  # the extra file is UTF-8, unlike the .dat files
    assert text2.endswith("A scandal in the café society of 1950s New York.")
    assert "\r" not in text2
    # no extra line for Jumanji: title and genres only
    assert items.loc["3", "text"] == "Jumanji (1995). Genres: Adventure, Children's, Fantasy."
    plain = load_ml1m(root, extra_info=False).items.set_index("item")
    assert plain.loc["1", "text"] == "Toy Story (1995). Genres: Animation, Children's, Comedy."
    assert "Lasseter" not in " ".join(plain["text"])
    assert "cowboy" not in " ".join(plain["text"])


def test_ml1m_extra_info_latin1_and_absent(tmp_path: Path) -> None:
    items = load_ml1m(write_ml1m(tmp_path / "a", "latin-1")).items.set_index("item")
    assert "Stellan Skarsgård" in items.loc["2", "text"]
    items = load_ml1m(write_ml1m(tmp_path / "b", None)).items.set_index("item")
    assert items.loc["2", "text"] == "Café Society (1995). Genres: Drama."


def ml1m_error(root: Path, **kwargs: bool) -> DataError:
    before = snapshot(root)
    with pytest.raises(DataError) as info:
        load_ml1m(root, **kwargs)
    assert snapshot(root) == before
    return info.value


def test_ml1m_malformed_line(tmp_path: Path) -> None:
    root = write_ml1m(tmp_path / "ml-1m")
    (root / "ratings.dat").write_text("\n".join(
        RATINGS_1M[:3] + ["2::3::2:978300275"] + RATINGS_1M[4:]) + "\n")
    exc = ml1m_error(root)
    assert exc.file.endswith("ratings.dat")
    assert (exc.line, exc.field) == (4, "timestamp")
    (root / "ratings.dat").write_text("\n".join(
        RATINGS_1M[:2] + ["2::1::4::978301968::9"] + RATINGS_1M[3:]) + "\n")
    exc = ml1m_error(root)
    assert exc.file.endswith("ratings.dat")
    assert exc.line == 3


def test_ml1m_non_numeric_timestamp(tmp_path: Path) -> None:
    root = write_ml1m(tmp_path / "ml-1m")
    (root / "ratings.dat").write_text("\n".join(
        RATINGS_1M[:4] + ["3::2::1::soon"]) + "\n")
    exc = ml1m_error(root)
    assert exc.file.endswith("ratings.dat")
    assert (exc.line, exc.field) == (5, "timestamp")
    assert "'soon'" in str(exc)


def test_ml1m_wrong_separator_and_missing_file(tmp_path: Path) -> None:
    root = write_ml1m(tmp_path / "ml-1m")
    (root / "users.dat").write_text("\n".join(u.replace("::", "|") for u in USERS_1M))
    exc = ml1m_error(root)
    assert exc.file.endswith("users.dat")
    assert exc.line == 1 and "separator" in str(exc)
    (root / "movies.dat").unlink()
    exc = ml1m_error(root)
    assert exc.file.endswith("movies.dat") and "not found" in str(exc)
    with pytest.raises(DataError) as info:
        load_ml1m(root / "ratings.dat")
    assert "not a directory" in str(info.value)


def test_ml1m_bad_extra_info_line(tmp_path: Path) -> None:
    root = write_ml1m(tmp_path / "ml-1m")
    extra = root / "movies_extrainfos.dat"
    extra.write_text(EXTRA_1M[0] + "\n2::Café Society::1995::R\n", encoding="utf-8")
    exc = ml1m_error(root)
    assert exc.file.endswith("movies_extrainfos.dat")
    assert (exc.line, exc.field) == (2, "released")
    assert load_ml1m(root, extra_info=False).items["text"].str.contains("Lasseter").sum() == 0


# ------------------------------------------------------------------ fetching (offline parts)


def fake_recbole_wheel(dest: Path) -> Path:
    """A zip laid out like recbole's wheel, with its typed-header atomic files."""
    wheel = dest / "recbole-1.2.1-py3-none-any.whl"
    prefix = movielens.RECBOLE_ML100K
    inter = ("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
             "1\t10\t5\t881250949\n2\t10\t2\t881250950\n2\t11\t4\t881250951\n")
    item = ("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
            "10\tToy Story\t1995\tAnimation Children's Comedy\n"
            "11\tMaltese Falcon, The\t1941\tFilm-Noir Mystery\n"
            "12\tunknown\t\tunknown\n")
    user = ("user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
            "1\t24\tM\ttechnician\t85711\n2\t53\tF\tother\t94043\n")
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(prefix + "ml-100k.inter", inter)
        zf.writestr(prefix + "ml-100k.item", item)
        zf.writestr(prefix + "ml-100k.user", user)
    return wheel


def test_fetch_converts_recbole_layout(tmp_path: Path, monkeypatch) -> None:
    calls = []

    def download(dest: Path) -> Path:
        calls.append(dest)
        return fake_recbole_wheel(dest)

    monkeypatch.setattr(movielens, "_download_wheel", download)
    cache = tmp_path / "cache"
    target = fetch_ml100k(cache)
    assert target == cache / "ml-100k"
    assert sorted(p.name for p in cache.iterdir()) == ["ml-100k"]  # no temp dir left
    assert sorted(p.name for p in target.iterdir()) == ["u.data", "u.item", "u.user"]
    assert (target / "u.data").read_text().splitlines()[0] == "1\t10\t5\t881250949"
    ds = load_ml100k(None, cache_dir=cache)
    assert len(calls) == 1
    assert len(ds.interactions) == 3
    items = ds.items.set_index("item")
    assert items.loc["10", "title"] == "Toy Story (1995)"
    assert items.loc["10", "tags"] == ["Animation", "Children's", "Comedy"]
    assert items.loc["11", "tags"] == ["Film-Noir", "Mystery"]
    assert items.loc["11", "decade"] == "1940s"
    assert items.loc["12", "title"] == "unknown"
    assert items.loc["12", "tags"] == ["unknown"]
    users = ds.users.set_index("user")
    assert users.loc["2"].tolist() == ["50-55", "F", "other", "9"]


def test_fetch_failure_leaves_nothing_behind(tmp_path: Path, monkeypatch) -> None:
    def half_convert(wheel: Path, out: Path) -> None:
        (out / "u.data").write_text("1\t1\t5\t1\n")
        raise DataError("converter crashed")

    monkeypatch.setattr(movielens, "_download_wheel", fake_recbole_wheel)
    monkeypatch.setattr(movielens, "_convert_recbole", half_convert)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="converter crashed"):
        fetch_ml100k(cache)
    assert list(cache.iterdir()) == []

    def no_network(dest: Path) -> Path:
        raise DataError("could not fetch ML-100k")

    monkeypatch.setattr(movielens, "_download_wheel", no_network)
    with pytest.raises(DataError, match="could not fetch"):
        load_ml100k(None, cache_dir=cache)
    assert list(cache.iterdir()) == []


def test_fetch_replaces_a_partial_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(movielens, "_download_wheel", fake_recbole_wheel)
    target = tmp_path / "ml-100k"
    target.mkdir()
    (target / "u.data").write_text("stale\n")  # u.item and u.user missing: not a cache
    assert fetch_ml100k(tmp_path) == target
    assert sorted(p.name for p in target.iterdir()) == ["u.data", "u.item", "u.user"]
    assert (target / "u.data").read_text().startswith("1\t10\t5\t")


# ------------------------------------------------------------------ the real data, when here


def pairs(ds) -> set[tuple]:
    return set(ds.interactions.itertuples(index=False, name=None))


@needs_shared
def test_shared_ml100k() -> None:
    ds = load_ml100k(SHARED_ML100K)
    summary = ds.summary()
    assert summary["interactions"] == 100_000
    assert summary["users"] == 943
    assert summary["items"] == 1_682
    assert summary["click_rate"] == 0.55375
    assert len(ds.users) == 943 and len(ds.items) == 1_682
    items = ds.items.set_index("item")
    assert items.loc["1", "title"] == "Toy Story (1995)"
    assert items.loc["1", "tags"] == ["Animation", "Children's", "Comedy"]
    assert items.loc["1", "decade"] == "1990s"
    assert ds.users.set_index("user").loc["1"].tolist() == ["18-24", "M", "technician", "8"]


@pytest.mark.network
def test_fetch_ml100k_from_pypi(tmp_path: Path, monkeypatch) -> None:
    start = time.perf_counter()
    target = fetch_ml100k(tmp_path)
    fetch_s = time.perf_counter() - start
    print(f"fetch_ml100k: {fetch_s:.2f} s")
    ds = load_ml100k(target)
    summary = ds.summary()
    assert (summary["interactions"], summary["users"], summary["items"]) == (100_000, 943, 1_682)
    assert summary["click_rate"] == 0.55375

    def no_download(dest: Path) -> Path:
        raise AssertionError("fetched again although the cache is complete")

    monkeypatch.setattr(movielens, "_download_wheel", no_download)
    start = time.perf_counter()
    assert fetch_ml100k(tmp_path) == target
    assert time.perf_counter() - start < 0.5
    assert len(load_ml100k(None, cache_dir=tmp_path).interactions) == 100_000

    if not SHARED_ML100K.is_dir():
        return
    shared = load_ml100k(SHARED_ML100K)
    assert pairs(ds) == pairs(shared)
    fetched_tags = dict(zip(ds.items["item"], ds.items["tags"], strict=True))
    shared_tags = dict(zip(shared.items["item"], shared.items["tags"], strict=True))
    assert fetched_tags.keys() == shared_tags.keys()
    agree = sum(fetched_tags[i] == shared_tags[i] for i in shared_tags) / len(shared_tags)
    print(f"genre agreement with the shared copy: {agree:.4%}")
    assert agree == 1.0  # measured: 1,682 of 1,682
    fetched_users = ds.users.set_index("user").sort_index()
    assert fetched_users.equals(shared.users.set_index("user").sort_index())
