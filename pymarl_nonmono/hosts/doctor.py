"""``pymarl-nonmono doctor``, the part that is the same for every host: a check's report, the
host checkout and its patches, our plugin's entry point, MongoDB.

Host-specific checks (StarCraft, SMAClite, LBF, ...) live in each adapter's ``doctor`` module,
which puts them together with these. The same checks serve the start-up check of a run,
so a run that cannot start says exactly what ``doctor`` would.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlsplit

from ..patching import PatchError, read_targets, series_state
from ..quiet import quiet
from .install import MANIFEST, STATE_DIR, InstallError, PatchSource, check_checkout, manifest_path, restore_hint, touched_paths
from .spec import DEFAULT_HOST, HOSTS, HostSpec

log = logging.getLogger(__name__)

PLUGIN_NAME = "nonmono"
MONGO_URL_ENV = "PYMARL_NONMONO_MONGO_URL"
MONGO_TIMEOUT_MS = 2000

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


# Checks that decide whether the host runs at all; the others are for optional software.
ESSENTIAL = ("host", "patches", "plugin")


def run_checks(fns: tuple[Callable[[], Check], ...]) -> list[Check]:
    """Each check's result; a check that raises is reported as MISSING, the others still run."""
    checks = []
    for fn in fns:
        try:
            checks.append(fn())
        except Exception as exc:  # a broken optional package must not stop the report
            log.debug("doctor check %s failed", fn.__name__, exc_info=True)
            checks.append(Check(fn.__name__.strip("_").replace("_check", ""), MISSING, f"check failed: {exc}"))
    return checks


def usable(checks: list[Check], essential: tuple[str, ...] = ESSENTIAL) -> bool:
    """True if the host runs: every ``essential`` check (checkout found, patched, plugin registered) OK."""
    by_name = {c.name: c for c in checks}
    return all(name in by_name and by_name[name].status == OK for name in essential)


def _install_command(path: Path, host: HostSpec) -> str:
    flag = "" if host is DEFAULT_HOST else f" --host {host.name}"
    return f"pymarl-nonmono install{flag} {path}"


def host_checks(path: Path, host: HostSpec, patches: PatchSource) -> list[Check]:
    """The checkout of ``host`` at ``path`` and the state of our patches in it (``patches``: the series)."""
    if not path.exists():
        # `install` clones the host into a folder that does not exist yet.
        return [
            Check("host", MISSING, f"{path} does not exist", f"{_install_command(path, host)} (clones {host.title} into it)"),
            Check("patches", MISSING, f"no {host.title} checkout to check", _install_command(path, host)),
        ]
    try:
        root = check_checkout(path, host)
    except InstallError as exc:
        return [
            Check("host", MISSING, str(exc), f"git clone {host.url} and pass its folder (or set PYMARL2_DIR)"),
            Check("patches", MISSING, f"no {host.title} checkout to check", "pymarl-nonmono install <checkout>"),
        ]
    checks = [Check("host", OK, f"{host.title} checkout at {root}")]
    fix = f"pymarl-nonmono install {root}"
    try:
        series = [p for p, _ in patches()]
        state = series_state(series, read_targets(touched_paths(series), root))
    except (PatchError, InstallError) as exc:
        undo = f"pymarl-nonmono uninstall {root}" if manifest_path(root).exists() else restore_hint(root, host)
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


def undetected_checks(path: Path, reason: str) -> list[Check]:
    """``path`` is a folder that is no host's checkout (``reason`` says so, naming every host)."""
    return [
        Check("host", MISSING, reason, f"pass a {' or '.join(h.title for h in HOSTS.values())} checkout, or "
                                       f"{_install_command(path, DEFAULT_HOST)} into an empty folder "
                                       f"(clones {DEFAULT_HOST.title}; --host NAME for another host)"),
        Check("patches", MISSING, "no host checkout to check", "pymarl-nonmono install <checkout>"),
    ]


def plugin_check(host: HostSpec) -> Check:
    eps = [ep for ep in metadata.entry_points(group=host.plugin_group) if ep.name == PLUGIN_NAME]
    fix = f"pip install pymarl-nonmono (or pip install -e <its source>) into the Python that runs {host.title}"
    if not eps:
        return Check("plugin", MISSING, f"no entry point {PLUGIN_NAME!r} in group {host.plugin_group!r} for this Python", fix)
    ep = eps[0]
    module = ep.value.split(":", 1)[0]
    # find_spec locates the module without running it (only its parent packages are imported).
    if importlib.util.find_spec(module) is None:
        return Check("plugin", MISSING, f"entry point {ep.name} = {ep.value} names a missing module", fix)
    return Check("plugin", OK, f"entry point {ep.name} = {ep.value} in group {host.plugin_group}")


def quiet_import(module: str):
    with quiet(f"importing {module}", log):
        return importlib.import_module(module)


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


def gru_kernel_check() -> Check:
    """Whether our fused CPU GRU kernel was built (runs work without it, at GRUCell's speed)."""
    from ..numerics.fused_gru import load_error

    error = load_error()
    if error is None:
        return Check("gru kernel", OK, "fused CPU GRU kernel built (gru_kernel: auto uses it for CPU float32 training)")
    return Check("gru kernel", MISSING, f"{error}; runs use torch's GRUCell (slower on the CPU)",
                 "install a C compiler (e.g. gcc) and the Python headers, then reinstall pymarl-nonmono")


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
