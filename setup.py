# Metadata lives in pyproject.toml; this file lets `python setup.py ...` and old tooling work too.
from setuptools import setup

setup()
