"""The version of miniq (pyproject.toml and debian/changelog say the same: tests/test_docs.py)."""

__version__ = "0.3.0"
