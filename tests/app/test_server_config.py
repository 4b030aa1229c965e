"""The app's server settings (.streamlit/config.toml), read as Streamlit reads them."""

from __future__ import annotations

import tomllib
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[2] / ".streamlit" / "config.toml"


def test_the_server_is_local_and_skips_the_forced_collection_after_each_run():
    config = tomllib.loads(CONFIG.read_text())
    assert config["server"]["address"] == "127.0.0.1"
    assert config["server"]["enableXsrfProtection"] is True
    # a full gc.collect(2) after every script or fragment run held the GIL for ~190 ms in
    # this process: over half of a slider step (bench/interaction_latency.py)
    assert config["runner"]["postScriptGC"] is False


def test_streamlit_knows_every_option_set_there():
    from streamlit import config as st_config

    options = st_config.get_config_options()
    config = tomllib.loads(CONFIG.read_text())
    for section, values in config.items():
        for name in values:
            assert f"{section}.{name}" in options, f"{section}.{name} is not a Streamlit option"
