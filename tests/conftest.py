"""Shared test setup: the backend comes from KERAS_BACKEND, set before Python starts."""

from __future__ import annotations

import keras
import pytest


def pytest_report_header(config) -> str:
    return f"keras {keras.__version__}, backend {keras.backend.backend()}"


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Each test starts from the same seed and an empty Keras name scope."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    yield
