"""Shared test helpers (importable as `helpers.x`: tests/conftest.py puts tests/ on sys.path)."""
