"""``pymarl-nonmono doctor``: what this set-up can run, each missing piece with its fix.

The same checks serve the start-up check of a run (:mod:`.preflight`), so a run that
cannot start says exactly what ``doctor`` would.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import re
from importlib import metadata
from pathlib import Path

from ...quiet import quiet
from .. import doctor as _host_doctor
from ..doctor import (  # noqa: F401  (part of this module's API)
    ESSENTIAL,
    MISSING,
    MONGO_TIMEOUT_MS,
    MONGO_URL_ENV,
    OK,
    PLUGIN_NAME,
    SKIP,
    Check,
    _ping_mongo,
    _secrets,
    mask_url,
    gru_kernel_check,
    mongo_check,
    usable,
)
from ..doctor import quiet_import as _quiet_import
from ..spec import PYMARL2
from .install import HOST_COMMIT, shipped_patches  # noqa: F401  (part of this module's API)

log = logging.getLogger(__name__)

PLUGIN_GROUP = PYMARL2.plugin_group
# What "usable" means, for the summary line of `pymarl-nonmono doctor`.
USABLE_MEANS = "matrix game: host, patches, plugin"

SMAC_FIX = "pip install git+https://github.com/oxwhirl/smac.git"
SC2_FIX = (
    "download the StarCraft II Linux package from Blizzard's s2client-proto page "
    "(https://github.com/Blizzard/s2client-proto#downloads), unzip it to ~/StarCraftII or set SC2PATH "
    "to it, and copy SMAC's maps (SMAC_Maps, from github.com/oxwhirl/smac) into its Maps folder"
)


def doctor(path: str | os.PathLike) -> list[Check]:
    return host_checks(Path(path).expanduser()) + software_checks()


def software_checks() -> list[Check]:
    """Everything but the checkout: our plugin and GRU kernel, StarCraft, SMAClite, gfootball, MongoDB."""
    return _host_doctor.run_checks((plugin_check, gru_kernel_check, smac_check, sc2_check, smaclite_check,
                                    gfootball_check, mongo_check))


def host_checks(path: Path) -> list[Check]:
    # shipped_patches is looked up when called, so a test can swap in a synthetic series.
    return _host_doctor.host_checks(path, PYMARL2, lambda: shipped_patches())


def plugin_check() -> Check:
    return _host_doctor.plugin_check(PYMARL2)


def smac_check() -> Check:
    spec = importlib.util.find_spec("smac")
    if spec is None:
        return Check("smac", MISSING, "StarCraft's SMAC is not installed (needed for env=sc2 only)", SMAC_FIX)
    where = spec.origin or (list(spec.submodule_search_locations or []) or ["?"])[0]
    try:
        env = _quiet_import("smac.env")
    except Exception as exc:
        return Check("smac", MISSING,
                     f"'smac' at {where} is not StarCraft's SMAC (PyPI's smac is SMAC3, a different project): "
                     f"import smac.env failed ({type(exc).__name__}: {exc})", SMAC_FIX)
    if not hasattr(env, "StarCraft2Env"):
        return Check("smac", MISSING, f"'smac' at {where} has no smac.env.StarCraft2Env (is it PyPI's SMAC3?)", SMAC_FIX)
    return Check("smac", OK, f"StarCraft's SMAC at {where}")


def sc2_root() -> Path:
    """Where StarCraft II is looked for: $SC2PATH, else ~/StarCraftII (SMAC's default)."""
    return Path(os.path.expanduser(os.environ.get("SC2PATH") or "~/StarCraftII"))


def sc2_check() -> Check:
    raw = os.environ.get("SC2PATH")
    root = sc2_root()
    source = f"SC2PATH={raw}" if raw else "SC2PATH unset, default ~/StarCraftII"
    versions = root / "Versions"
    bases = sorted(p.name for p in versions.iterdir() if p.is_dir() and p.name.startswith("Base")) if versions.is_dir() else []
    if not bases:
        return Check("sc2", MISSING, f"no StarCraft II game at {root} (no Versions/Base* folder; {source})", SC2_FIX)
    return Check("sc2", OK, f"StarCraft II at {root} ({', '.join(bases)})")


def smaclite_check() -> Check:
    from ...envs import smaclite  # our env's own requirements

    with quiet("importing smaclite", log):
        problems = smaclite.smaclite_problems()
    if problems:
        # Each problem ends with its fix (envs/smaclite.py's INSTALL_HINT).
        return Check("smaclite", MISSING, "; ".join(problems) + " (needed for env=smaclite only)")
    return Check("smaclite", OK, f"SMAClite importable: env=smaclite runs SMAC's maps {', '.join(smaclite.SMAC_EPISODE_LIMITS)} "
                 "without StarCraft II")


def gfootball_check() -> Check:
    from ...envs.football import football_problems  # our env's own requirements

    with quiet("importing gfootball", log):
        problems = football_problems()
    if problems:
        # Each problem already ends with its fix (envs/football.py's INSTALL_HINT, the one
        # place that says how to install gfootball), so there is no second one here.
        return Check("gfootball", MISSING, "; ".join(problems))
    try:
        gym_version = metadata.version("gym")
    except metadata.PackageNotFoundError:
        gym_version = None
    # Our env (env=grf) does not need gym; PyMARL2's own env=gfootball needs gym 0.25.
    numbers = [int(n) for n in re.findall(r"\d+", gym_version or "")[:2]]
    if gym_version is None or numbers >= [0, 26]:
        return Check("gfootball", OK, f"gfootball importable (env=grf); PyMARL2's env=gfootball needs gym 0.25, "
                     f"found {gym_version or 'none'}: pip install gym==0.25.2")
    return Check("gfootball", OK, f"gfootball importable, gym {gym_version}")
