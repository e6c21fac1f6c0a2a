"""Shared set-up of every test: a known random state, whatever ran before and in whichever order."""

from __future__ import annotations

import atexit
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

# pytest puts tests/ on sys.path (no __init__.py there), so the helper modules import directly.
from analysis_store import write_lr_sweep, write_store  # isort: skip
from cifar_fixture import write_fake_cifar10  # isort: skip

TEST_SEED = 0

# Hypothesis keeps caches and an example database in .hypothesis/ of the working directory; the
# suite writes nothing into the repository, so they go to a folder of this process that ends with
# it. The damage fuzzers draw derandomized (the same examples every run), so nothing is replayed.
_HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="drsom-hypothesis-")
atexit.register(shutil.rmtree, _HYPOTHESIS_HOME, ignore_errors=True)
set_hypothesis_home_dir(_HYPOTHESIS_HOME)
settings.register_profile("drsom", database=None)
settings.load_profile("drsom")

JOB_ID_VARIABLES = (
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_JOB_ID",
    "SUBMITIT_LOCAL_JOB_ID",
)


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


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of seconds-long runs (a module opts in with usefixtures).

    Tiny models gain nothing from a second thread, and on a shared 2-core machine two OpenMP
    threads can wait on each other for ~10x longer than the work takes; the subprocess tests
    give their jobs OMP_NUM_THREADS=1, so this keeps the in-process arithmetic the same.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory) -> Path:
    """A fake CIFAR-10 (250 train, 50 test images) in the genuine format; tests only read it."""
    return write_fake_cifar10(tmp_path_factory.mktemp("cifar"), n_train=250, n_test=50)


@pytest.fixture
def no_scheduler_job(monkeypatch):
    """No SLURM/submitit job id in the environment: a test run inside a job is not one launch."""
    for name in JOB_ID_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """The synthetic results store of analysis_store.py: 4 optimizers x 3 seeds, known metrics."""
    return write_store(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def lr_sweep(tmp_path_factory) -> Path:
    """Ad-hoc runs of analysis_store.py: two Adam learning rates and one SGD run (3 variants)."""
    return write_lr_sweep(tmp_path_factory.mktemp("adhoc"))
