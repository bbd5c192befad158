"""Test double of ilastik's headless entry point (``python -m ilastik``), for ``rbfs ilastik`` tests."""

__double__ = True
