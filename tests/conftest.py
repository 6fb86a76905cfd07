"""Shared test fixtures."""

import os

import pytest
import torch


def pytest_configure(config):
    """Under ``pytest -n 2`` (``make test``) each worker gets one intra-op thread: the 2 cores are shared by
    2 processes, and more threads per process only contend (small tensors gain nothing from them)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny tensors and shrunken networks: more threads gain nothing
    there and only contend with the other test processes (``make test`` runs two)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
