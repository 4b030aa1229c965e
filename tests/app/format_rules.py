"""The formatting rules every rendered table keeps: no "None"/"nan" text (Streamlit draws a
missing number as "None" unless the table sets a placeholder), no raw floats with more than 4
decimals (a float column needs a number format of at most 4 decimals unless it holds whole
numbers only)."""

from __future__ import annotations

import json
import re

import pandas as pd

MISSING_TEXT = {"None", "nan", "NaN", "<NA>", "NaT", "null"}
LONG_FLOAT = re.compile(r"^-?\d+\.\d{5,}$")
FORMAT_DECIMALS = re.compile(r"%[^a-z]*\.(\d+)f")


def table_problems(at) -> list[str]:
    """Every rule a rendered st.dataframe of the AppTest `at` breaks, as readable lines."""
    problems = []
    for index, element in enumerate(at.dataframe):
        config = json.loads(element.proto.columns or "{}")
        frame = element.value
        for column in frame.columns:
            where = f"table {index} ({element.key or 'no key'}) column {column!r}"
            values = frame[column]
            if pd.api.types.is_float_dtype(values):
                if values.isna().any() and not element.proto.placeholder:
                    problems.append(f"{where}: a missing value shows as 'None' (no placeholder)")
                finite = values.dropna()
                if finite.empty or (finite == finite.round()).all():
                    continue
                fmt = config.get(str(column), {}).get("type_config", {}).get("format", "")
                match = FORMAT_DECIMALS.search(fmt or "")
                if not match or int(match.group(1)) > 4:
                    problems.append(f"{where}: floats shown without a <=4-decimal format")
            elif pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values):
                texts = values.dropna().astype(str)
                if texts.isin(MISSING_TEXT).any():
                    problems.append(f"{where}: shows {texts[texts.isin(MISSING_TEXT)].iloc[0]!r}")
                if texts.str.match(LONG_FLOAT).any():
                    problems.append(f"{where}: a number with more than 4 decimals as text")
    return problems
