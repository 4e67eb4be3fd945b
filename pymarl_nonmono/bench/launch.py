"""Everything ``pymarl-nonmono bench`` checks and decides before the first run starts."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..hosts.doctor import OK
from ..hosts.install import InstallError, check_checkout, detect_host
from ..hosts.spec import HostSpec
from ..tracking.urls import MONGO_URL_ENV, MongoTarget, MongoURLError, describe_error, resolve
from .runner import Context, Plan, plan, read_state, write_state
from .spec import RunSpec, Sweep, SweepError, check_against_host

log = logging.getLogger(__name__)

SWEEPS_DIR = Path("results") / "sweeps"


@dataclass
class Prepared:
    sweep: Sweep
    host: Path
    spec: HostSpec                 # which host ``host`` is a checkout of
    ctx: Context
    target: Optional[MongoTarget]
    env_extra: dict
    runs: list[RunSpec]
    plan: Plan


def _observer_entry_point(group: str) -> bool:
    from importlib.metadata import entry_points

    return any(True for _ in entry_points(group=group))


def check_host(path: str | os.PathLike, host: Optional[HostSpec] = None) -> tuple[Path, HostSpec]:
    """The checkout and its host (``host``, else recognised from its files), installed with
    every patch and our plugin visible; else :class:`SweepError`."""
    try:
        spec = host or detect_host(path)
        root = check_checkout(path, spec)
    except InstallError as exc:
        raise SweepError(str(exc)) from None
    doctor = spec.adapter_module("doctor")
    for check in doctor.host_checks(root) + [doctor.plugin_check()]:
        if check.status != OK:
            raise SweepError(f"{check.name}: {check.detail}" + (f"; fix: {check.fix}" if check.fix else ""))
    return root, spec


def mongo_target(sweep: Sweep, url: Optional[str], db: Optional[str], off: bool,
                 environ=None) -> Optional[MongoTarget]:
    """``--mongo-url``, else the sweep file's ``mongo_url``, else ``$PYMARL_NONMONO_MONGO_URL``.

    ``--mongo-url`` may carry credentials: it reaches the runs through their environment
    and is stored nowhere. The file's may not: files get copied and shared.
    """
    if off:
        return None
    if url:
        config_url, key, source = url, "--mongo-url", "--mongo-url"
    else:
        config_url, key, source = sweep.mongo_url, "mongo_url", f"sweep file {sweep.source}, mongo_url"
    try:
        return resolve(config_url, db or sweep.mongo_db, environ, url_key=key, url_source=source,
                       allow_secrets=bool(url))
    except MongoURLError as exc:
        raise SweepError(str(exc)) from None


def ping_target(target: MongoTarget, timeout_ms: int = 3000) -> None:
    try:
        import pymongo
    except ImportError:
        raise SweepError(f"MongoDB is configured ({target.source}) but pymongo is not installed: pip install pymongo") from None
    client = pymongo.MongoClient(target.url, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms)
    try:
        client.admin.command("ping")
    except Exception as exc:
        raise SweepError(f"cannot reach MongoDB at {target.shown} ({target.source}) within {timeout_ms / 1000:g} s: "
                         f"{describe_error(exc, target.url)}; start it, fix the URL, "
                         f"or pass --no-mongo") from None
    finally:
        client.close()


def prepare(sweep: Sweep, host_path: str | os.PathLike, *, host_spec: Optional[HostSpec] = None,
            out_dir: Optional[str] = None,
            mongo_url: Optional[str] = None, mongo_db: Optional[str] = None, no_mongo: bool = False,
            workers: int = 1, timeout_s: Optional[float] = None, python: Optional[str] = None,
            restart_stale: bool = False, ping: bool = True) -> Prepared:
    host, spec = check_host(host_path, host_spec)
    check_against_host(sweep, host, spec)
    target = mongo_target(sweep, mongo_url, mongo_db, no_mongo)
    if target is not None:
        if not _observer_entry_point(spec.observer_group):
            raise SweepError(f"no entry point in group {spec.observer_group!r}: this pymarl-nonmono installation cannot "
                             f"record to MongoDB; reinstall it (pip install -e <source> or pip install pymarl-nonmono)")
        if ping:
            ping_target(target)
    sweep_dir = Path(out_dir) if out_dir else host / SWEEPS_DIR / sweep.name
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    ctx = Context(host=str(host), sweep_dir=str(sweep_dir.resolve()), python=python or sys.executable,
                  mongo_db=target.db if target else None, mongo_off=target is None, timeout_s=timeout_s,
                  threads=threads)
    check_binding(sweep, sweep_dir / "sweep.json")
    runs = sweep.runs()
    env_extra = {MONGO_URL_ENV: target.url} if target else {}
    return Prepared(sweep, host, spec, ctx, target, env_extra, runs, plan(runs, ctx, restart_stale))


# What decides the method's behaviour in a run: a change to these mid-sweep changes later runs.
CODE_PATHS = ("pymarl_nonmono", "config")
#: What setup.py writes into a package built from our git tree (:func:`code_state`).
SOURCE_RECORD = "_source.json"


def _git(tree: Path, *args: str) -> Optional[str]:
    try:
        done = subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def code_state(package_dir: Optional[Path] = None) -> dict:
    """Which pymarl-nonmono code the runs will import: its version, and when it is imported
    from a git working tree (an editable install), the tree, its commit and its uncommitted
    changes under :data:`CODE_PATHS`; when it is an installed copy built from our git tree,
    ``built_from``: that tree's commit and its uncommitted code then (setup.py records them).

    Each run imports the package when it starts, so with an editable install an edit made
    while a sweep runs silently changes the runs that start after it.
    """
    from importlib.metadata import PackageNotFoundError, version

    import pymarl_nonmono

    package_dir = Path(package_dir or Path(pymarl_nonmono.__file__).parent).resolve()
    try:
        state = {"version": version("pymarl-nonmono")}
    except PackageNotFoundError:
        state = {"version": None}
    top = _git(package_dir, "rev-parse", "--show-toplevel")
    tree = Path(top.strip()).resolve() if top is not None else None
    # Only our own source tree counts: an installed copy can sit in someone else's git
    # tree (a venv inside a project), whose commit says nothing about our code.
    if tree is None or tree / "pymarl_nonmono" != package_dir:
        built = _built_from(package_dir)
        return dict(state, working_tree=None, **({"built_from": built} if built else {}))
    changes = _git(tree, "status", "--porcelain", "--", *CODE_PATHS)
    return dict(state, working_tree=str(tree), commit=(_git(tree, "rev-parse", "HEAD") or "").strip() or None,
                uncommitted=None if changes is None else [line[3:] for line in changes.splitlines() if line.strip()])


def _built_from(package_dir: Path) -> Optional[dict]:
    try:
        record = json.loads((package_dir / SOURCE_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def warn_if_mutable(state: dict) -> Optional[str]:
    """A warning when the runs import code from a working tree with uncommitted changes."""
    if not state.get("working_tree") or not state.get("uncommitted"):
        return None
    shown = ", ".join(state["uncommitted"][:5]) + (" ..." if len(state["uncommitted"]) > 5 else "")
    return (f"pymarl-nonmono is imported from the working tree {state['working_tree']} with uncommitted changes "
            f"({shown}): each run reads the code when it starts, so these changes, and any edit made while the "
            f"sweep runs, go into its runs. For a study, commit and install a snapshot (pip install <source>, "
            f"without -e) or do not edit the tree until the sweep ends.")


def check_binding(sweep: Sweep, record: Path) -> None:
    """A sweep name stays bound to its settings: an entry (by label) or the sweep-wide ``set``
    may not change from what ``record`` (an earlier call's sweep.json) says, or its runs could
    no longer be told apart from the earlier ones (the report refuses to pool them). Seeds and
    entries may be added, and a call may run some of the entries (``--only``)."""
    old = read_state(record)
    if not old:
        return
    new = sweep.to_dict()
    conflicts = []
    if dict(old.get("set") or {}) != new["set"]:
        conflicts.append(f"set: {_changed_keys(old.get('set') or {}, new['set'])}")
    for kind in ("algs", "envs"):
        before = {e["label"]: e for e in old.get(kind) or []}
        for entry in new[kind]:
            was = before.get(entry["label"])
            if was is None:
                continue
            changes = [f"--config {was['config']} -> {entry['config']}"] if was["config"] != entry["config"] else []
            if dict(was["set"]) != entry["set"]:
                changes.append(_changed_keys(was["set"], entry["set"]))
            if changes:
                conflicts.append(f"{entry['label']}: {', '.join(changes)}")
    if conflicts:
        raise SweepError(f"sweep {sweep.name!r} was run with other settings ({record}): {'; '.join(conflicts)}. "
                         f"Give these settings a sweep name of their own (--name), or remove {record.parent} to "
                         f"start the sweep over")


def _changed_keys(before, after) -> str:
    """``key: old -> new`` for each key whose value differs (``<unset>`` where one side has none)."""
    before, after = dict(before), dict(after)
    return ", ".join(f"{key}: {before.get(key, '<unset>')!r} -> {after.get(key, '<unset>')!r}"
                     for key in sorted(set(before) | set(after)) if before.get(key, "<unset>") != after.get(key, "<unset>"))


def _union(old: list, new: list) -> list:
    labels = {e["label"] for e in old}
    return list(old) + [e for e in new if e["label"] not in labels]


def record_sweep(prepared: Prepared, code: Optional[dict] = None) -> Path:
    """Write ``sweep.json`` (the resolved sweep, the URL masked, the code the runs import:
    ``code``, else :func:`code_state`) into the sweep folder. Entries and seeds of earlier calls
    stay (:func:`check_binding` made sure they agree); each call's code is kept under ``calls``."""
    path = Path(prepared.ctx.sweep_dir) / "sweep.json"
    old = read_state(path) or {}
    data = prepared.sweep.to_dict()
    if old:
        data["algs"], data["envs"] = _union(old.get("algs") or [], data["algs"]), _union(old.get("envs") or [], data["envs"])
        data["seeds"] = sorted(set(old.get("seeds") or []) | set(data["seeds"]))
    code = code if code is not None else code_state()
    written = _dt.datetime.now().isoformat(timespec="seconds")
    this_call = {"written": written, "code": code, "seeds": list(prepared.sweep.seeds),
                 "labels": [e.label for e in prepared.sweep.algs + prepared.sweep.envs]}
    data.update(code=code, host=str(prepared.host), host_name=prepared.spec.name, runs=len(prepared.runs),
                written=written, calls=list(old.get("calls") or []) + [this_call],
                mongo=(f"{prepared.target.shown} database {prepared.target.db}" if prepared.target else None))
    write_state(path, data)
    return path
