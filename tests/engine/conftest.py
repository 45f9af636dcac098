"""Fixtures for engine tests: the digits teacher and data files, shared across the session."""

from __future__ import annotations

import pytest
import torch

from tests.support import digits
from worker.engine import DatasetSpec


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    # Tiny models on a shared 2-core machine: extra threads only add contention.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def teacher_path():
    return str(digits.train_digits_teacher())


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("digits-data")
    x_train, y_train, x_test, y_test = digits.digits_arrays()
    digits.write_npz(directory / "train.npz", x_train, y_train)
    digits.write_npz(directory / "train_unlabeled.npz", x_train)
    digits.write_npz(directory / "test.npz", x_test, y_test)
    return directory


@pytest.fixture(scope="session")
def train_spec(data_dir):
    return DatasetSpec(str(data_dir / "train.npz"), "npz")


@pytest.fixture(scope="session")
def test_spec(data_dir):
    return DatasetSpec(str(data_dir / "test.npz"), "npz")
