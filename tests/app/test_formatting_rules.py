"""Every table on every page of a smoke run keeps the formatting rules (no "None", no raw
floats with more than 4 decimals), also with a user's case open."""

from __future__ import annotations

import pytest

from tests.app.format_rules import table_problems
from tests.app.pages import PAGES, open_page


@pytest.mark.parametrize("page", PAGES)
def test_every_table_reads_well(monkeypatch, smoke_store, page):
    at = open_page(monkeypatch, smoke_store, page)
    assert table_problems(at) == []
    if page.endswith("Case_browser.py"):
        at.text_input(key="cases_query").input("1").run()
        assert not at.exception and table_problems(at) == []


def test_the_rules_catch_what_users_saw():
    """The checker itself: a NaN without placeholder and a long float string are caught."""
    import pandas as pd

    class Element:
        def __init__(self, frame, placeholder=""):
            self.value = frame
            self.key = "t"
            self.proto = type("P", (), {"columns": "{}", "placeholder": placeholder})()

    class At:
        dataframe = [Element(pd.DataFrame({"ms": [1110674.7597, float("nan")]})),
                     Element(pd.DataFrame({"AUC": ["0.735", "0.73741234", "None"]}))]

    problems = table_problems(At())
    assert any("shows as 'None'" in p for p in problems)
    assert any("without a <=4-decimal format" in p for p in problems)
    assert any("more than 4 decimals" in p for p in problems)
    assert any("shows 'None'" in p for p in problems)
