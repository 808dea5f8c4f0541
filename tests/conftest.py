"""Shared fixtures. Domain fixture plugins live in tests/fixtures/ and are listed here."""
from __future__ import annotations

import os

import numpy as np
import pytest

# Keep every library offline and out of the user's home.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

pytest_plugins = ["tests.fixtures.core", "tests.fixtures.labelstudio", "tests.fixtures.curation", "tests.fixtures.serving", "tests.fixtures.regions", "tests.fixtures.sfreward_data", "tests.fixtures.postgres"]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
