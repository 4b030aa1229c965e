"""Duet engine: data -> task -> models -> methods -> run store. Never imports Streamlit."""

__version__ = "0.2.0"
