"""Test double of ilastik: only its headless entry point (``python -m ilastik``), for ``rbfs ilastik``."""

__double__ = True
