"""Helpers shared by the Streamlit pages: run selection, cached readers. No model code."""
