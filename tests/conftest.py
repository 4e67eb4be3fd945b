import os
import shutil
import sys
import tempfile
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
    config.addinivalue_line("markers", "integration: needs a PyMARL2 checkout (the pymarl2_pristine fixture)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow test: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_sessionstart(session):
    """The tests import the package from this folder; its configs and compiled kernel are there
    only through an editable install (README, "Run the tests"). Without it, say so once instead
    of failing a hundred tests on `No module named 'pymarl_nonmono.config'`."""
    import importlib.util

    import pymarl_nonmono

    here = Path(__file__).resolve().parents[1]
    if Path(pymarl_nonmono.__file__).resolve().parent == here / "pymarl_nonmono" and \
            importlib.util.find_spec("pymarl_nonmono.config") is None:
        pytest.exit("the tests run against an editable install of this folder: pip install -e '.[test]' "
                    "(a plain `pip install .` puts the configs and the compiled kernel in site-packages, "
                    "while Python imports the package from here)", returncode=4)


# -- shared fixtures: a MongoDB-protocol test server and an installed copy of PyMARL2 --
from pymarl_nonmono.hosts import checkout  # noqa: E402
from pymarl_nonmono.hosts.pymarl2 import fetch  # noqa: E402
from pymarl_nonmono.tracking.testserver import ServerUnavailable, find_executable, mongo_test_server  # noqa: E402

SERVER_SKIP = "nx-27017 is not installed (pip install nx-27017, or pip install -e '.[test]')"

# Where the host tests get PyMARL2, first that works wins: $PYMARL2_DIR (as it is, or a copy
# uninstalled if ours is installed there), a clone from $PYMARL_NONMONO_PYMARL2_SOURCE, our
# cache (filled from the bundle next to the project, which developer machines and CI have,
# else from GitHub). Only when none of them is at hand do the host tests skip.
PROJECT = Path(__file__).resolve().parents[1]
SHARED_BUNDLE = PROJECT / ".." / "shared" / "hosts" / f"pymarl2-{fetch.PYMARL2_COMMIT[:7]}.bundle"
GITHUB_PROBE_S = 20  # a network that drops packets must not hold the suite for minutes
GIT_TIMEOUT_S = 300
HOST_SKIP = (f"set PYMARL2_DIR to a clean hijkzzz/pymarl2 checkout (commit {fetch.PYMARL2_COMMIT[:7]}), or "
             f"{fetch.SOURCE_ENV} to a URL, clone or git bundle of it, to run")


def pymarl2_cache() -> Path:
    """The suite's own PyMARL2 between runs: a clean clone at the pinned commit, never modified."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pymarl-nonmono" / f"pymarl2-{fetch.PYMARL2_COMMIT[:7]}"


def _fill_cache(cache: Path, source: str) -> None:
    """Clone beside the cache, then rename: another pytest filling it at the same time, or an
    interrupted clone, never leaves a half checkout where the next run would take it."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{cache.name}.", dir=cache.parent))
    try:
        fetch.clone_pymarl2(staging / "pymarl2", source, timeout=GIT_TIMEOUT_S)
        try:
            os.rename(staging / "pymarl2", cache)
        except OSError:
            if not cache.is_dir():  # else another process won the race with the same commit
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def find_pymarl2(tmp_dir: Path) -> Path:
    """A pristine PyMARL2 checkout for the host tests, or pytest.skip saying how to get one.

    Callers must not modify it (copy it first): it may be the user's $PYMARL2_DIR or our cache."""
    from pymarl_nonmono.hosts.pymarl2.install import MANIFEST, STATE_DIR, InstallError, uninstall

    given = os.environ.get("PYMARL2_DIR")
    if given:
        root = Path(given).expanduser()
        if not (root / "src" / "main.py").is_file():
            pytest.fail(f"PYMARL2_DIR={given} is not a PyMARL2 checkout (no src/main.py); unset it or fix it")
        if not (root / STATE_DIR / MANIFEST).is_file():
            return root
        # The README's quick start installs into $PYMARL2_DIR; the tests need the checkout as
        # it was, which uninstall gives back byte for byte (on a copy: the user's stays installed).
        copy = tmp_dir / "pymarl2"
        shutil.copytree(root, copy, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "results"))
        try:
            uninstall(copy)
        except InstallError as exc:
            pytest.fail(f"PYMARL2_DIR={given} has pymarl-nonmono installed and cannot be restored on a copy: {exc}")
        return copy
    source = os.environ.get(fetch.SOURCE_ENV)
    if source:
        try:
            return fetch.clone_pymarl2(tmp_dir / "pymarl2", source, timeout=GIT_TIMEOUT_S).root
        except InstallError as exc:
            pytest.fail(f"{fetch.SOURCE_ENV}={source}: {exc.__cause__ or exc}")
    tried = []
    cache = pymarl2_cache()
    try:
        if cache.is_dir():
            if checkout.is_pristine(cache, fetch.PYMARL2_COMMIT, timeout=GIT_TIMEOUT_S):
                return cache
            # Ours alone, and it must stay clean: something changed it, start again.
            shutil.rmtree(cache)
        for candidate in (SHARED_BUNDLE.resolve(), fetch.PYMARL2_URL):
            if isinstance(candidate, Path) and not candidate.is_file():
                tried.append(f"no bundle at {candidate}")
                continue
            if candidate == fetch.PYMARL2_URL and (unreachable := checkout.probe(candidate, timeout=GITHUB_PROBE_S)):
                tried.append(unreachable)
                continue
            try:
                _fill_cache(cache, str(candidate))
                return cache
            except InstallError as exc:  # its cause is the plain reason, without the CLI's hint
                tried.append(str(exc.__cause__ or exc))
    except (checkout.CheckoutError, OSError) as exc:  # e.g. no git, or a read-only home
        tried.append(str(exc))
    pytest.skip(f"no PyMARL2 at hand ({'; '.join(tried)}): {HOST_SKIP}")


@pytest.fixture(scope="session")
def pymarl2_pristine(tmp_path_factory):
    """The PyMARL2 checkout every host test starts from (see find_pymarl2); read it, never write it."""
    return find_pymarl2(tmp_path_factory.mktemp("pymarl2-source"))


@pytest.fixture(scope="session")
def epymarl_pristine(tmp_path_factory):
    """A clean EPyMARL clone at the pinned commit, from $PYMARL_NONMONO_EPYMARL_SOURCE or the
    bundle next to the project (GitHub is not tried: the tests must not wait on a network).
    Read it, never write it: copy it first."""
    from pymarl_nonmono.hosts.fetch import clone_host
    from pymarl_nonmono.hosts.install import InstallError
    from pymarl_nonmono.hosts.spec import EPYMARL

    bundle = (PROJECT / ".." / "shared" / "hosts" / f"epymarl-{EPYMARL.commit[:7]}.bundle").resolve()
    source = os.environ.get(EPYMARL.source_env) or (str(bundle) if bundle.is_file() else None)
    if source is None:
        pytest.skip(f"no EPyMARL at hand (no bundle at {bundle}): set {EPYMARL.source_env} to a URL, clone or git "
                    f"bundle of {EPYMARL.url} (commit {EPYMARL.commit[:7]}) to run")
    try:
        return clone_host(EPYMARL, tmp_path_factory.mktemp("epymarl-source") / "epymarl", source,
                          timeout=GIT_TIMEOUT_S).root
    except InstallError as exc:
        pytest.fail(f"cannot clone EPyMARL from {source}: {exc.__cause__ or exc}")


@pytest.fixture(scope="module")
def mongo_url(tmp_path_factory):
    if find_executable() is None:
        pytest.skip(SERVER_SKIP)
    try:
        with mongo_test_server(tmp_path_factory.mktemp("mongo")) as url:
            yield url
    except ServerUnavailable as exc:
        pytest.skip(str(exc))


def _installed_copy(pristine: Path, tmp_path_factory, spec) -> Path:
    """A copy of a pristine host checkout with our patches installed (and results/ of its own)."""
    from pymarl_nonmono.hosts.install import install

    root = tmp_path_factory.mktemp("host") / spec.name
    shutil.copytree(pristine, root, symlinks=True, ignore=shutil.ignore_patterns(".git", "__pycache__", "results"))
    install(root, spec)
    return root


@pytest.fixture(scope="module")
def pymarl2_host(pymarl2_pristine, tmp_path_factory):
    """An installed copy of the pristine PyMARL2 (with results/ of its own)."""
    from pymarl_nonmono.hosts.spec import PYMARL2

    return _installed_copy(pymarl2_pristine, tmp_path_factory, PYMARL2)


@pytest.fixture(scope="module")
def epymarl_host(epymarl_pristine, tmp_path_factory):
    """An installed copy of the pristine EPyMARL (with results/ of its own)."""
    from pymarl_nonmono.hosts.spec import EPYMARL

    return _installed_copy(epymarl_pristine, tmp_path_factory, EPYMARL)
