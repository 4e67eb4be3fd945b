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
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlsplit

from ...patching import PatchError, read_targets, series_state
from ...quiet import quiet
from .install import (
    HOST_COMMIT,
    MANIFEST,
    STATE_DIR,
    InstallError,
    check_checkout,
    manifest_path,
    restore_hint,
    shipped_patches,
    touched_paths,
)

log = logging.getLogger(__name__)

PLUGIN_GROUP = "pymarl2.plugins"
PLUGIN_NAME = "nonmono"
MONGO_URL_ENV = "PYMARL_NONMONO_MONGO_URL"
MONGO_TIMEOUT_MS = 2000

SMAC_FIX = "pip install git+https://github.com/oxwhirl/smac.git"
SC2_FIX = (
    "download the StarCraft II Linux package from Blizzard's s2client-proto page "
    "(https://github.com/Blizzard/s2client-proto#downloads), unzip it to ~/StarCraftII or set SC2PATH "
    "to it, and copy SMAC's maps (SMAC_Maps, from github.com/oxwhirl/smac) into its Maps folder"
)


OK, MISSING, SKIP = "OK", "MISSING", "SKIP"


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:<8} {self.name}: {self.detail}"
        return f"{text} -- fix: {self.fix}" if self.fix else text


# Checks that decide whether the matrix game runs; the others are for sc2, GRF and MongoDB.
ESSENTIAL = ("host", "patches", "plugin")


def doctor(path: str | os.PathLike) -> list[Check]:
    checks = host_checks(Path(path).expanduser())
    for fn in (plugin_check, smac_check, sc2_check, smaclite_check, gfootball_check, mongo_check):
        try:
            checks.append(fn())
        except Exception as exc:  # a broken optional package must not stop the report
            log.debug("doctor check %s failed", fn.__name__, exc_info=True)
            checks.append(Check(fn.__name__.strip("_").replace("_check", ""), MISSING, f"check failed: {exc}"))
    return checks


def usable(checks: list[Check]) -> bool:
    """True if the host runs the matrix game: checkout found, patched, plugin registered."""
    by_name = {c.name: c for c in checks}
    return all(name in by_name and by_name[name].status == OK for name in ESSENTIAL)


def host_checks(path: Path) -> list[Check]:
    if not path.exists():
        # `install` clones PyMARL2 into a folder that does not exist yet.
        return [
            Check("host", MISSING, f"{path} does not exist", f"pymarl-nonmono install {path} (clones PyMARL2 into it)"),
            Check("patches", MISSING, "no PyMARL2 checkout to check", f"pymarl-nonmono install {path}"),
        ]
    try:
        root = check_checkout(path)
    except InstallError as exc:
        return [
            Check("host", MISSING, str(exc), "git clone https://github.com/hijkzzz/pymarl2 and pass its folder (or set PYMARL2_DIR)"),
            Check("patches", MISSING, "no PyMARL2 checkout to check", "pymarl-nonmono install <checkout>"),
        ]
    checks = [Check("host", OK, f"PyMARL2 checkout at {root}")]
    fix = f"pymarl-nonmono install {root}"
    try:
        series = [p for p, _ in shipped_patches()]
        state = series_state(series, read_targets(touched_paths(series), root))
    except (PatchError, InstallError) as exc:
        undo = f"pymarl-nonmono uninstall {root}" if manifest_path(root).exists() else restore_hint(root)
        checks.append(Check("patches", MISSING, f"the checkout differs from what the patches expect ({exc})", f"{undo}, then {fix}"))
        return checks
    names = [p.name.removesuffix(".patch") for p in series]
    done, todo = names[: state.applied], names[state.applied:]
    if not todo:
        note = "" if manifest_path(root).exists() else f" (no {STATE_DIR}/{MANIFEST}: not installed by pymarl-nonmono, uninstall unavailable)"
        checks.append(Check("patches", OK, f"applied {', '.join(done)}{note}"))
    else:
        have = f"applied {', '.join(done)}; " if done else ""
        checks.append(Check("patches", MISSING, f"{have}not applied {', '.join(todo)}", fix))
    return checks


def plugin_check() -> Check:
    eps = [ep for ep in metadata.entry_points(group=PLUGIN_GROUP) if ep.name == PLUGIN_NAME]
    fix = "pip install pymarl-nonmono (or pip install -e <its source>) into the Python that runs PyMARL2"
    if not eps:
        return Check("plugin", MISSING, f"no entry point {PLUGIN_NAME!r} in group {PLUGIN_GROUP!r} for this Python", fix)
    ep = eps[0]
    module = ep.value.split(":", 1)[0]
    # find_spec locates the module without running it (only its parent packages are imported).
    if importlib.util.find_spec(module) is None:
        return Check("plugin", MISSING, f"entry point {ep.name} = {ep.value} names a missing module", fix)
    return Check("plugin", OK, f"entry point {ep.name} = {ep.value} in group {PLUGIN_GROUP}")


def _quiet_import(module: str):
    with quiet(f"importing {module}", log):
        return importlib.import_module(module)


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


def mask_url(url: str) -> str:
    """The URL with user, password and query (which may carry secrets) replaced by ***."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
    except ValueError:
        return "***"
    if not parts.scheme or not netloc:
        return "***" if "@" in url or "?" in url else url
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    text = f"{parts.scheme}://{netloc}{parts.path}"
    return text + ("?***" if parts.query else "")


def _secrets(url: str) -> list[str]:
    """Pieces of ``url`` that must never appear in output (for scrubbing error messages)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    out = [parts.query] if parts.query else []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        out.extend([userinfo, *userinfo.split(":", 1)])
    return sorted((s for s in out if s), key=len, reverse=True)


def mongo_check(connect: Optional[Callable[[str], None]] = None) -> Check:
    url = os.environ.get(MONGO_URL_ENV, "").strip()
    if not url:
        return Check("mongodb", SKIP, f"not configured (set {MONGO_URL_ENV} to log runs to MongoDB)")
    shown = mask_url(url)
    if connect is None:
        try:
            import pymongo  # noqa: F401  (only to learn whether it is there)
        except ImportError:
            return Check("mongodb", MISSING, f"{MONGO_URL_ENV}={shown} is set but pymongo is not installed", "pip install pymongo")
        connect = _ping_mongo
    try:
        connect(url)
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        for secret in _secrets(url):
            message = message.replace(secret, "***")
        return Check("mongodb", MISSING, f"cannot reach {shown} within {MONGO_TIMEOUT_MS / 1000:g} s ({message[:300]})",
                     f"start MongoDB or correct {MONGO_URL_ENV}")
    return Check("mongodb", OK, f"reachable at {shown}")


def _ping_mongo(url: str) -> None:
    import pymongo

    client = pymongo.MongoClient(url, serverSelectionTimeoutMS=MONGO_TIMEOUT_MS, connectTimeoutMS=MONGO_TIMEOUT_MS)
    try:
        client.admin.command("ping")
    finally:
        client.close()
