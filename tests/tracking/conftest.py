"""Fixtures: a MongoDB-protocol test server (nx-27017) and an installed copy of PyMARL2."""

import os
import shutil
from pathlib import Path

import pytest

from pymarl_nonmono.tracking.testserver import ServerUnavailable, find_executable, mongo_test_server

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
