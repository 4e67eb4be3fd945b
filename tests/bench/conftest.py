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


FAKE_MAIN = r'''
"""Stands in for PyMARL2's src/main.py: prints what the bench parses, sleeps, may fail."""
import json, os, sys, time

args = sys.argv[1:]
updates = dict(a.split("=", 1) for a in args[args.index("with") + 1:])
probe = os.environ["FAKE_PROBE_DIR"]
seed, alg = updates["seed"], updates["sweep_alg"]
start = time.time()
print("[INFO] root Saving to FileStorageObserver in /fake/results/sacred/%s/%s." % (updates["sweep_env"], alg))
print('[INFO] pymarl Started run with ID "%s"' % seed, flush=True)
time.sleep(float(updates.get("sleep", "0.3")))
with open(os.path.join(probe, "%s-%s.json" % (alg, seed)), "w") as f:
    json.dump({"start": start, "end": time.time(), "argv": args,
               "mongo": os.environ.get("PYMARL_NONMONO_MONGO_URL"), "omp": os.environ.get("OMP_NUM_THREADS")}, f)
if updates.get("fail_seed") == seed:
    print("Traceback (most recent call last):")
    print('  File "src/main.py", line 1, in <module>')
    print("RuntimeError: boom on seed %s" % seed)
    sys.exit(1)
'''


@pytest.fixture
def fake_host(tmp_path, monkeypatch):
    """A folder shaped like a PyMARL2 checkout whose main.py only pretends to train."""
    root = tmp_path / "fakehost"
    (root / "src" / "config" / "algs").mkdir(parents=True)
    (root / "src" / "config" / "envs").mkdir(parents=True)
    (root / "src" / "main.py").write_text(FAKE_MAIN)
    (root / "src" / "config" / "default.yaml").write_text("t_max: 100\nsleep: 0.3\nfail_seed: ''\nrunner: episode\n")
    (root / "src" / "config" / "algs" / "qmix.yaml").write_text("name: qmix\n")
    (root / "src" / "config" / "algs" / "vdn.yaml").write_text("name: vdn\n")
    (root / "src" / "config" / "envs" / "one_step_matrix_game.yaml").write_text("env_args: {map_name: m}\n")
    (root / "src" / "config" / "envs" / "sc2.yaml").write_text("env_args: {map_name: 3m}\n")
    probe = tmp_path / "probe"
    probe.mkdir()
    monkeypatch.setenv("FAKE_PROBE_DIR", str(probe))
    return root
