"""Shared set-up of every test: a known random state, whatever ran before and in whichever order."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

TEST_SEED = 0


@pytest.fixture(autouse=True)
def seeded():
    """Python, NumPy and torch (CPU and every CUDA device) start each test from TEST_SEED.

    torch otherwise seeds its default generator at random in every process, so a test that builds
    a model or draws without a seed of its own passes or fails by chance. Tests that need another
    seed still set it themselves.
    """
    random.seed(TEST_SEED)
    np.random.seed(TEST_SEED)
    torch.manual_seed(TEST_SEED)
    yield
