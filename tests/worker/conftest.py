"""Shared fixtures of the worker tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread_throughout(one_torch_thread):
    """Every worker test runs the tiny models on one torch thread (`one_torch_thread`, tests/conftest.py)."""
    yield
