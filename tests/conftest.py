import sys
from pathlib import Path

# Test helpers (fake host objects) live next to the tests that use them.
sys.path.insert(0, str(Path(__file__).parent / "hosts"))

import pytest
import torch

# One intra-op thread: the tests use tiny tensors, and on a 2-core machine with another
# busy process torch's thread pool spins instead of working (seen: 100x slower).
torch.set_num_threads(1)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running; run with --runslow")
    config.addinivalue_line("markers", "integration: needs PYMARL2_DIR (a PyMARL2 checkout)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow test: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
