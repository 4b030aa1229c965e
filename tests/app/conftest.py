import sys

import pytest
import streamlit as st


@pytest.fixture(autouse=True)
def fresh_streamlit_caches():
    """Each page test starts with no cached readers, and leaves none open behind it."""
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture(autouse=True)
def keep_main_module():
    """AppTest runs a page as sys.modules['__main__'] and leaves it there: a later test that
    spawns processes (tests/test_distributed.py) would then re-run that page in each child
    (multiprocessing's spawn imports the parent's __main__) and the child dies before its
    work. Put the real __main__ back after every page test."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main
