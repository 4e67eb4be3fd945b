"""``pymarl-nonmono doctor`` for EPyMARL: the checkout, our patches and plugin, and what its envs need."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ...envs.smaclite import INSTALL_HINT as SMACLITE_INSTALL_HINT
from .. import doctor as _host_doctor
from ..doctor import ESSENTIAL, MISSING, OK, Check, gru_kernel_check, mongo_check
from ..spec import EPYMARL
from .install import shipped_patches

# Every EPyMARL env goes through envs/__init__.py, which imports gymnasium (envs/gymma.py).
ESSENTIAL_HERE = ESSENTIAL + ("gymnasium",)
# What "usable" means, for the summary line of `pymarl-nonmono doctor`.
USABLE_MEANS = "host, patches, plugin, gymnasium"


def doctor(path: str | os.PathLike) -> list[Check]:
    return host_checks(Path(path).expanduser()) + software_checks()


def usable(checks: list[Check]) -> bool:
    """True if EPyMARL runs: checkout found, patched, plugin registered, gymnasium importable."""
    return _host_doctor.usable(checks, ESSENTIAL_HERE)


def software_checks() -> list[Check]:
    return _host_doctor.run_checks((plugin_check, gru_kernel_check, gymnasium_check, lbforaging_check, smaclite_check,
                                    mongo_check))


def host_checks(path: Path) -> list[Check]:
    return _host_doctor.host_checks(path, EPYMARL, shipped_patches)


def plugin_check() -> Check:
    return _host_doctor.plugin_check(EPYMARL)


def _module_check(name: str, module: str, needed_for: str, fix: str) -> Check:
    # find_spec only locates the package: importing it here would pay its start-up cost.
    spec = importlib.util.find_spec(module)
    if spec is None:
        return Check(name, MISSING, f"{module} is not installed ({needed_for})", fix)
    return Check(name, OK, f"{module} at {spec.origin or list(spec.submodule_search_locations or ['?'])[0]}")


def gymnasium_check() -> Check:
    return _module_check("gymnasium", "gymnasium", "every EPyMARL env needs it", "pip install gymnasium")


def lbforaging_check() -> Check:
    return _module_check("lbforaging", "lbforaging", "needed for env-config=gymma with lbforaging:* keys only",
                         "pip install lbforaging")


def smaclite_check() -> Check:
    return _module_check("smaclite", "smaclite", "needed for EPyMARL's env-config=smaclite only",
                         SMACLITE_INSTALL_HINT)
