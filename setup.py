"""Distribution ``pymarl-nonmono``: non-monotonic QMIX (arXiv 2511.09792) for PyMARL2."""

import json
import subprocess
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent
#: Written into the built package: the commit it was built from (read by ``bench``'s code state).
SOURCE_RECORD = "_source.json"


def _git(*args):
    try:
        done = subprocess.run(["git", "-C", str(HERE), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


class BuildWithSource(build_py):
    """Copies the package and, when it is built from our own git tree, records that tree's commit
    and its uncommitted code: an installed snapshot can then say which code a study ran."""

    def run(self):
        super().run()
        top = _git("rev-parse", "--show-toplevel")
        if self.dry_run or top is None or Path(top.strip()).resolve() != HERE.resolve():
            return
        changes = _git("status", "--porcelain", "--", "pymarl_nonmono", "config", "setup.py") or ""
        record = {"commit": (_git("rev-parse", "HEAD") or "").strip() or None,
                  "uncommitted": [line[3:] for line in changes.splitlines() if line.strip()]}
        (Path(self.build_lib) / "pymarl_nonmono" / SOURCE_RECORD).write_text(json.dumps(record) + "\n")

setup(
    name="pymarl-nonmono",
    version="0.1.0",
    description=(
        "Non-monotonic value factorisation (AAAI-2026, arXiv 2511.09792) "
        "as a plugin pack for PyMARL2"
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # The YAML configs live in the top-level ``config/`` folder (the layout users see)
    # and are installed as the data package ``pymarl_nonmono.config``.
    packages=[
        "pymarl_nonmono",
        "pymarl_nonmono.numerics",
        "pymarl_nonmono.envs",
        "pymarl_nonmono.tracking",
        "pymarl_nonmono.bench",
        "pymarl_nonmono.analysis",
        "pymarl_nonmono.hosts",
        "pymarl_nonmono.hosts.pymarl_family",
        "pymarl_nonmono.hosts.pymarl2",
        "pymarl_nonmono.hosts.epymarl",
        "pymarl_nonmono.config",
        "pymarl_nonmono.patches",
    ],
    package_dir={
        "pymarl_nonmono.config": "config",
        "pymarl_nonmono.patches": "patches",
    },
    package_data={
        "pymarl_nonmono.config": ["*.yaml", "algs/*.yaml", "envs/*.yaml", "studies/*.yaml",
                                  "hosts/epymarl/*.yaml", "hosts/epymarl/algs/*.yaml", "hosts/epymarl/envs/*.yaml"],
        "pymarl_nonmono.patches": ["pymarl2/*.patch", "epymarl/*.patch"],
    },
    include_package_data=False,
    cmdclass={"build_py": BuildWithSource},
    # The fused GRU step kernels (pymarl_nonmono/numerics/fused_gru.py). Plain C against Python's
    # headers, no torch headers, so building needs no torch. Optional: without a C compiler the
    # install still succeeds and the agents fall back to torch's GRUCell (gru_kernel: auto).
    # -fno-trapping-math lets the compiler vectorise the gates' selects (the loops have no traps
    # to preserve); it does not change results.
    ext_modules=[
        Extension(
            "pymarl_nonmono.numerics._fused_gru",
            ["pymarl_nonmono/numerics/fused_gru.c"],
            extra_compile_args=["-O3", "-fno-trapping-math"],
            optional=True,
        )
    ],
    install_requires=[
        # torch is deliberately a range: install the CPU or CUDA build you want first.
        "torch>=2.0",
        "numpy>=1.24",
        "PyYAML>=6",
        "sacred>=0.8.4",
        # sacred 0.8 imports pkg_resources, removed from setuptools 81.
        "setuptools<81",
    ],
    extras_require={
        # nx-27017 is a MongoDB wire-protocol server the tracking tests start on loopback; pygame and
        # matplotlib are imported by PyMARL2 itself, which the integration tests run.
        # rliable (report statistics) pins arch<8, and arch 7 fails to import on pandas 3.
        # gymnasium: EPyMARL imports it on every run (its envs package loads gymma), and the
        # EPyMARL integration tests run a real EPyMARL.
        "test": ["pytest>=7", "nx-27017", "submitit", "tqdm", "matplotlib", "pygame", "rliable>=1.2", "pandas<3",
                 "gymnasium"],
        "bench": ["pymongo", "submitit", "tqdm", "matplotlib", "rliable>=1.2", "pandas<3"],
        # What PyMARL2 itself imports on every run (stag_hunt needs pygame, the action
        # selectors matplotlib); StarCraft's smac and gfootball are installed separately.
        "pymarl2": ["pygame", "matplotlib"],
    },
    entry_points={
        "console_scripts": ["pymarl-nonmono = pymarl_nonmono.cli:main"],
        # Read by the plugin hook that ``pymarl-nonmono install`` adds to PyMARL2's main.py.
        "pymarl2.plugins": ["nonmono = pymarl_nonmono.hosts.pymarl2.plugin:activate"],
        # Read by the observer hook of patch 0005: MongoDB when configured.
        "pymarl2.observers": ["nonmono = pymarl_nonmono.tracking.observers:observers"],
        # Read by the plugin hook of EPyMARL's patch 0003.
        "epymarl.plugins": ["nonmono = pymarl_nonmono.hosts.epymarl.plugin:activate"],
        # Read by the observer hook of EPyMARL's patch 0003: MongoDB when configured.
        "epymarl.observers": ["nonmono = pymarl_nonmono.tracking.observers:observers"],
    },
    classifiers=[
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
