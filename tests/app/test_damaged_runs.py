"""Every page on a runs folder holding a run file renamed on disk and damaged files (issue 10):
no traceback anywhere; a damaged run says so; the renamed run opens under its file name. And
data text (titles, item text, user attributes) shows as plain text, never as a link or HTML."""

from __future__ import annotations

import os
import re
import shutil

import duckdb
import pytest

from engine.store import RunReader, list_runs
from tests.app.pages import PAGES, open_page
from ui.common import plain


def overwrite_middle(path):
    """Overwrite 8 KiB in a data block: the file opens and passes the cheap check, but a
    full read finds the bad checksum. Tries a few offsets until one does exactly that."""
    original = path.read_bytes()
    for fraction in (0.5, 0.45, 0.55, 0.4, 0.6, 0.35, 0.65, 0.3, 0.7):
        at = int(len(original) * fraction)
        path.write_bytes(original[:at] + os.urandom(8192) + original[at + 8192:])
        try:
            RunReader(path).close()
        except Exception:
            continue
        if list_runs(path.parent, sweep=False).set_index("run_id").at[path.stem, "error"] == "":
            return
    pytest.fail("no offset damages only the data")


@pytest.fixture(scope="module")
def damaged_store(smoke_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("damaged")
    source = smoke_store / "smoke-run.duckdb"
    shutil.copy(source, out / "renamed.duckdb")  # as a user renames it: the weights stay
    shutil.copytree(smoke_store / "smoke-run", out / "smoke-run")
    shutil.copy(source, out / "dropped.duckdb")
    with duckdb.connect(str(out / "dropped.duckdb")) as con:
        con.execute("DROP TABLE users")
    shutil.copy(source, out / "corrupt.duckdb")
    overwrite_middle(out / "corrupt.duckdb")
    return out


def damaged_warnings(at) -> list[str]:
    return [w.value for w in at.sidebar.warning if "damaged" in w.value]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_flags_damaged_runs_and_opens_a_renamed_one(monkeypatch, damaged_store,
                                                                page):
    at = open_page(monkeypatch, damaged_store, page)
    assert damaged_warnings(at) == [plain("this run is damaged: dropped.duckdb: table users "
                                          "is missing")]
    runs = at.selectbox(key="sidebar_run")
    assert sorted(runs.options) == ["corrupt", "renamed"]

    runs.set_value("renamed").run()
    assert not at.exception, at.exception
    assert not at.error
    assert plain("renamed on disk; written as run smoke-run") in [
        c.value for c in at.sidebar.caption]
    if page == "app.py":
        assert at.subheader[0].value == "Run renamed"
        assert len(at.dataframe) >= 3
    elif "Router" in page:
        assert at.metric and at.get("plotly_chart")
    elif "Case" in page:
        at.text_input(key="cases_query").input("1").run()
        assert not at.exception, at.exception
        assert at.subheader[0].value == "User 1"
    else:
        assert len(at.get("plotly_chart")) >= 2

    at.selectbox(key="sidebar_run").set_value("corrupt").run()
    assert not at.exception, at.exception
    assert len(at.error) == 1
    message = at.error[0].value
    assert message.startswith(plain("this run is damaged: corrupt.duckdb: table "))
    assert "Corrupt database file" in message


def test_a_folder_of_damaged_runs_only(monkeypatch, tmp_path):
    (tmp_path / "junk.duckdb").write_bytes(b"not a database at all")
    for page in PAGES:
        at = open_page(monkeypatch, tmp_path, page)
        assert damaged_warnings(at)[0].startswith(plain("this run is damaged: junk.duckdb: "
                                                        "not a readable run store"))
        if page == "app.py":
            assert "every run here is damaged" in at.info[0].value


HOSTILE_TITLE = "[click me](javascript:alert(1)) <script>alert(2)</script>"
HOSTILE_TEXT = "**loud** ![img](javascript:alert(3)) <img src=x onerror=alert(4)> $x^2$"


@pytest.fixture(scope="module")
def hostile_store(smoke_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile")
    shutil.copy(smoke_store / "smoke-run.duckdb", out / "smoke-run.duckdb")
    shutil.copytree(smoke_store / "smoke-run", out / "smoke-run")
    with duckdb.connect(str(out / "smoke-run.duckdb")) as con:
        con.execute("UPDATE items SET title = ?, text = ? WHERE CAST(item AS VARCHAR) = '1'",
                    [HOSTILE_TITLE, HOSTILE_TEXT])
        con.execute("UPDATE users SET occupation = ? WHERE CAST(\"user\" AS VARCHAR) = '1'",
                    ["<b>[x](javascript:alert(5))</b>"])
    return out


def test_data_text_is_plain_text(monkeypatch, hostile_store):
    at = open_page(monkeypatch, hostile_store, "pages/3_Case_browser.py")
    at.text_input(key="cases_query").input("1").run()
    at.selectbox(key="cases_match").set_value("item:1").run()
    assert not at.exception, at.exception
    title = at.subheader[0].value
    assert title == "Item 1 · " + plain(HOSTILE_TITLE)
    assert r"\[click me\](javascript\:alert(1)) \<script\>" in title
    bodies = [m.value for m in at.markdown]
    assert plain(HOSTILE_TEXT) in bodies
    active = re.compile(r"(?<!\\)(\]\(javascript|<script|<img)")  # unescaped: live markup
    assert not [b for b in bodies + [title] if active.search(b)]
    at.selectbox(key="cases_match").set_value("user:1").run()
    assert not at.exception, at.exception
    attributes = [m.value for m in at.markdown if "occupation" in m.value][0]
    assert r"**\<b\>\[x\](javascript\:alert(5))\</b\>**" in attributes


def test_plain_escapes_what_markdown_would_act_on():
    assert plain("[a](javascript:x)") == r"\[a\](javascript\:x)"
    assert plain("<script>&amp; *b* _c_ `d` # e | f ~g~ $h$ :red[i]") == (
        r"\<script\>\&amp; \*b\* \_c\_ \`d\` \# e \| f \~g\~ \$h\$ \:red\[i\]")
    assert plain("Movie 3 (1972), 4.5 stars") == "Movie 3 (1972), 4.5 stars"
    assert plain(r"a\b") == r"a\\b"
