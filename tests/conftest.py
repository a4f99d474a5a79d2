"""Shared pytest fixtures. Keep this file minimal: other test files rely on it too."""

import keras
import pytest


@pytest.fixture
def clean_keras():
    """Fresh Keras global state around a test: float32 policy, new session (layer names).

    Not autouse; a test file opts in with
    ``pytestmark = pytest.mark.usefixtures("clean_keras")``.
    """
    keras.config.set_dtype_policy("float32")
    # free_memory=False skips gc.collect(), which costs ~0.15 s per test.
    keras.utils.clear_session(free_memory=False)
    yield
    keras.config.set_dtype_policy("float32")
