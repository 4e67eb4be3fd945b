import os
import shutil
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


# -- shared fixtures: a MongoDB-protocol test server and an installed copy of PyMARL2 --
from pymarl_nonmono.tracking.testserver import ServerUnavailable, find_executable, mongo_test_server  # noqa: E402

HOST_SKIP = "set PYMARL2_DIR to a clean hijkzzz/pymarl2 checkout (commit 8ccac7c) to run"
SERVER_SKIP = "nx-27017 is not installed (pip install nx-27017, or pip install -e '.[test]')"


@pytest.fixture(scope="module")
def mongo_url(tmp_path_factory):
    if find_executable() is None:
        pytest.skip(SERVER_SKIP)
    try:
        with mongo_test_server(tmp_path_factory.mktemp("mongo")) as url:
            yield url
    except ServerUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def pymarl2_host(tmp_path_factory):
    """An installed copy of $PYMARL2_DIR (with results/ of its own)."""
    src = os.environ.get("PYMARL2_DIR")
    if not src or not (Path(src) / "src" / "main.py").is_file():
        pytest.skip(HOST_SKIP)
    from pymarl_nonmono.hosts.pymarl2.install import install

    root = tmp_path_factory.mktemp("host") / "pymarl2"
    shutil.copytree(src, root, symlinks=True, ignore=shutil.ignore_patterns(".git", "__pycache__", "results"))
    install(root)
    return root
