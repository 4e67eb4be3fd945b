"""A sweep: algorithm configs x environment configs x seeds, each one run of the host
(PyMARL2 or EPyMARL: the same ``src/main.py --config= --env-config= with ...`` command).

A sweep comes from a small YAML file, command-line arguments, or both (a list given on
the command line replaces the file's; ``--set`` adds to the file's ``set``). Everything
is checked before any run starts: unknown config names, empty lists, keys no config has,
malformed MongoDB settings. Errors are :class:`SweepError`, one line naming the culprit.

File format (docs/benchmarking.md)::

    name: matrix-smoke               # the sweep's id; default: derived from the content
    algs:                            # --config names (PyMARL2's src/config/algs or ours)
      - nonmono_qmix
      - config: qmix                 # the long form: a label and overrides of its own
        label: qmix_episode
        set: {runner: episode, batch_size_run: 1}
    envs:                            # --env-config names
      - one_step_matrix_game
      - config: sc2
        set: {env_args.map_name: 3s5z_vs_3s6z}    # label defaults to the map name
      - config: gymma                # EPyMARL: label defaults to the key without "lbforaging:"
        set: {env_args.key: "lbforaging:Foraging-8x8-2p-3f-v3"}
    seeds: [1, 2, 3]                 # or "1-3"
    set: {t_max: 300, use_cuda: false}            # Sacred `with` overrides for every run
    mongo_db: pymarl                 # optional; the URL: --mongo-url or $PYMARL_NONMONO_MONGO_URL
    workers: 2                       # optional; --workers wins
    host: epymarl                    # optional: the only host the sweep may run on (pymarl2 | epymarl)
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import json
import re
import shlex
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import yaml

from ..hosts.spec import HOSTS, HostSpec

__all__ = ["Entry", "RunSpec", "Sweep", "SweepError", "config_folders", "env_label", "format_value", "parse_entry",
           "parse_seeds", "load_sweep_file", "build_sweep", "shipped_sweeps", "resolve_sweep_path"]

# Keys the sweep sets itself on every run; an override of them would break finding runs again.
TAG_KEYS = ("seed", "sweep_id", "sweep_alg", "sweep_env", "sweep_resume_step", "mongo_url", "mongo_db")
# The host's keys bench sets on a run it resumes from a checkpoint (bench/runner.py).
RESUME_KEYS = ("checkpoint_path", "load_step")
FILE_KEYS = ("name", "algs", "envs", "seeds", "set", "mongo_db", "mongo_url", "workers", "host")
_LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+=-]*")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
# What names an environment's task when no label is given, first found wins: the map or
# preset (PyMARL2, and EPyMARL's sc2/smaclite/our envs), else the Gymnasium id of EPyMARL's gymma.
ENV_LABEL_KEYS = ("env_args.map_name", "env_args.key")


class SweepError(ValueError):
    """The sweep is unusable; the message names what and where."""


def format_value(value: Any) -> str:
    """A YAML value as Sacred's command line reads it back (``with key=<this>``)."""
    if isinstance(value, str):
        try:
            ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
        return repr(value)  # "1e3", "True", "[1]" must stay strings
    return repr(value)


def _flatten(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(value, Mapping) and value:
        for key, sub in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), sub, out)
    else:
        out.append((prefix, format_value(value)))


def overrides_from_mapping(mapping: Any, where: str) -> tuple[tuple[str, str], ...]:
    if mapping is None:
        return ()
    if not isinstance(mapping, Mapping):
        raise SweepError(f"{where}: 'set' must be a mapping of config keys to values, got {mapping!r}")
    out: list[tuple[str, str]] = []
    _flatten("", dict(mapping), out)
    return tuple(out)


def overrides_from_strings(items: Iterable[str], where: str) -> tuple[tuple[str, str], ...]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SweepError(f"{where}: {item!r} is not KEY=VALUE")
        out.append((key.strip(), value.strip()))
    return tuple(out)


def _merge(*parts: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    merged: dict[str, str] = {}
    for part in parts:
        for key, value in part:
            merged.pop(key, None)  # a later setting wins and moves last
            merged[key] = value
    return tuple(merged.items())


@dataclass(frozen=True)
class Entry:
    """One algorithm or environment of the sweep: a config name, its label and overrides."""

    config: str
    label: str
    overrides: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict:
        return {"config": self.config, "label": self.label, "set": dict(self.overrides)}


def env_label(value: Any) -> str:
    """A map name or Gymnasium id as a label: ``lbforaging:Foraging-8x8-2p-3f-v3`` ->
    ``Foraging-8x8-2p-3f-v3`` (the ``module:`` prefix only says what to import, and labels have no ':')."""
    return str(value).strip("'\"").rpartition(":")[2]


def _default_label(config: str, overrides: Sequence[tuple[str, str]], kind: str) -> str:
    if kind == "env":
        given = dict(overrides)
        for key in ENV_LABEL_KEYS:
            if given.get(key) not in (None, "", "None", "null", "~"):  # Sacred's and YAML's ways to say None
                return env_label(given[key])
    return config


def _entry(config: Any, label: Any, overrides: tuple[tuple[str, str], ...], kind: str, where: str) -> Entry:
    if not isinstance(config, str) or not _NAME_RE.fullmatch(config):
        raise SweepError(f"{where}: {config!r} is not a config name")
    label = _default_label(config, overrides, kind) if label in (None, "") else str(label)
    if not _LABEL_RE.fullmatch(label):
        raise SweepError(f"{where}: label {label!r} may only use letters, digits and _ . + = -")
    return Entry(config, label, overrides)


def parse_entry(text: str, kind: str, where: str) -> list[Entry]:
    """A command-line entry: ``NAME[,NAME...]`` or ``NAME[:LABEL] KEY=VALUE ...``."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise SweepError(f"{where}: cannot read {text!r} ({exc})") from None
    if not words:
        raise SweepError(f"{where}: empty value")
    head, rest = words[0], words[1:]
    if not rest and "," in head:
        return [e for name in head.split(",") if name for e in parse_entry(name, kind, where)]
    config, _, label = head.partition(":")
    return [_entry(config, label, overrides_from_strings(rest, f"{where} {head}"), kind, where)]


def _file_entry(item: Any, kind: str, where: str) -> Entry:
    if isinstance(item, str):
        return _entry(item, None, (), kind, where)
    if isinstance(item, Mapping):
        unknown = sorted(set(item) - {"config", "label", "set"})
        if unknown:
            raise SweepError(f"{where}: unknown key(s) {unknown}; an entry has config, label and set")
        if "config" not in item:
            raise SweepError(f"{where}: entry {dict(item)!r} has no 'config'")
        return _entry(item["config"], item.get("label"), overrides_from_mapping(item.get("set"), where), kind, where)
    raise SweepError(f"{where}: {item!r} is neither a config name nor a mapping with 'config'")


def parse_seeds(value: Any, where: str) -> tuple[int, ...]:
    """``[1, 2]``, ``"1,2,5"``, ``"1-3"`` or ``3`` (the single seed 3) as a tuple of seeds."""
    items: list[Any]
    if isinstance(value, bool):
        raise SweepError(f"{where}: seeds {value!r} are not integers")
    if isinstance(value, int):
        items = [value]
    elif isinstance(value, str):
        items = [p.strip() for p in value.split(",") if p.strip()]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise SweepError(f"{where}: seeds {value!r} must be a list of integers or a text like '1-3'")
    seeds: list[int] = []
    for item in items:
        if isinstance(item, bool):
            raise SweepError(f"{where}: seed {item!r} is not an integer")
        if isinstance(item, int):
            chunk = [item]
        else:
            match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", str(item))
            if not match:
                raise SweepError(f"{where}: seed {item!r} is not an integer or a range like 1-3")
            low, high = int(match.group(1)), int(match.group(2) or match.group(1))
            if high < low:
                raise SweepError(f"{where}: seed range {item!r} is empty")
            chunk = list(range(low, high + 1))
        for seed in chunk:
            if seed < 0 or seed >= 2 ** 31:
                raise SweepError(f"{where}: seed {seed} is outside 0..2**31-1")
            if seed not in seeds:
                seeds.append(seed)
    return tuple(seeds)


@dataclass(frozen=True)
class RunSpec:
    """One host run of a sweep."""

    sweep_id: str
    alg: Entry
    env: Entry
    seed: int
    common: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        """Names the run in the sweep folder and in messages; stable across bench calls."""
        return f"{self.alg.label}__{self.env.label}__seed{self.seed}"

    def with_args(self, mongo_db: Optional[str], mongo_off: bool) -> list[str]:
        # Later assignments win in Sacred: sweep-wide, then the env's, then the algorithm's.
        pairs = _merge(self.common, self.env.overrides, self.alg.overrides)
        args = [f"{k}={v}" for k, v in pairs]
        args += [f"seed={self.seed}", f"sweep_id={self.sweep_id}", f"sweep_alg={self.alg.label}",
                 f"sweep_env={self.env.label}"]
        if mongo_off:
            args.append("mongo_url=off")
        elif mongo_db:
            args.append(f"mongo_db={mongo_db}")
        return args

    def folder_args(self) -> list[str]:
        """``name=<label>`` for an algorithm entry labelled apart from its config (a variant with
        options), so that its runs get a results folder of their own (``results/sacred/<map>/<name>``)
        instead of sharing the config's; nothing when the entry sets ``name`` itself. Not part of
        what makes a run the same run (:func:`.runner.identity`)."""
        pairs = dict(_merge(self.common, self.env.overrides, self.alg.overrides))
        return [f"name={self.alg.label}"] if self.alg.label != self.alg.config and "name" not in pairs else []

    def command(self, mongo_db: Optional[str] = None, mongo_off: bool = False) -> list[str]:
        """Arguments after ``python``, run from the checkout's root."""
        return ["src/main.py", f"--config={self.alg.config}", f"--env-config={self.env.config}", "with",
                *self.with_args(mongo_db, mongo_off)]


@dataclass
class Sweep:
    name: str
    algs: list[Entry]
    envs: list[Entry]
    seeds: tuple[int, ...]
    common: tuple[tuple[str, str], ...] = ()
    mongo_url: Optional[str] = None   # from the file: never with credentials
    mongo_db: Optional[str] = None
    workers: Optional[int] = None
    named: bool = False               # the name was given, not derived
    source: Optional[str] = None      # the file it came from
    host: Optional[str] = None        # the host its configs are written for; None: any

    def runs(self) -> list[RunSpec]:
        # Seed-major order: the first results to arrive cover every algorithm and env.
        return [RunSpec(self.name, alg, env, seed, self.common)
                for seed in self.seeds for env in self.envs for alg in self.algs]

    def to_dict(self) -> dict:
        return {
            "name": self.name, "algs": [a.to_dict() for a in self.algs], "envs": [e.to_dict() for e in self.envs],
            "seeds": list(self.seeds), "set": dict(self.common), "mongo_db": self.mongo_db,
        }


def derived_name(algs: Sequence[Entry], envs: Sequence[Entry], seeds: Sequence[int],
                 common: Sequence[tuple[str, str]]) -> str:
    payload = json.dumps([[a.to_dict() for a in algs], [e.to_dict() for e in envs], list(seeds), list(common)],
                         sort_keys=True)
    return "sweep-" + hashlib.sha256(payload.encode()).hexdigest()[:8]


def _our_configs() -> Path:
    return Path(str(resources.files("pymarl_nonmono.config")))


def shipped_sweeps() -> dict[str, Path]:
    """Sweep files that come with the package (``config/studies/*.yaml``), by name."""
    folder = _our_configs() / "studies"
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))} if folder.is_dir() else {}


def resolve_sweep_path(path: str | Path) -> Path:
    """A sweep file's path; a bare name that is no file names a shipped study."""
    path = Path(path)
    if path.exists() or len(path.parts) != 1 or path.suffix:
        return path
    shipped = shipped_sweeps()
    if path.name in shipped:
        return shipped[path.name]
    raise SweepError(f"no sweep file {str(path)!r} and no shipped study of that name; shipped studies: "
                     f"{', '.join(shipped) or 'none'}")


def load_sweep_file(path: str | Path) -> dict:
    path = resolve_sweep_path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SweepError(f"cannot read sweep file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise SweepError(f"sweep file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise SweepError(f"sweep file {path}: expected a mapping with {', '.join(FILE_KEYS)}")
    unknown = sorted(set(map(str, data)) - set(FILE_KEYS))
    if unknown:
        hints = [f"{k!r}" + (f" (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, FILE_KEYS, 1)) else "")
                 for k in unknown]
        raise SweepError(f"sweep file {path}: unknown key(s) {', '.join(hints)}; allowed: {', '.join(FILE_KEYS)}")
    return dict(data)


def build_sweep(file: Optional[str | Path] = None, *, algs: Sequence[str] = (), envs: Sequence[str] = (),
                seeds: Optional[str] = None, sets: Sequence[str] = (), name: Optional[str] = None,
                workers: Optional[int] = None, only: Sequence[str] = ()) -> Sweep:
    """The sweep from a file and/or command-line values (see the module docstring).

    ``only``: labels of algorithm or environment entries to keep (a piece of a long sweep:
    the sweep keeps its name, so its runs are found and reported together)."""
    data = load_sweep_file(file) if file else {}
    where = f"sweep file {file}" if file else "command line"

    def listed(key: str) -> list:
        value = data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise SweepError(f"{where}: '{key}' must be a list")
        return value

    alg_entries = ([e for text in algs for e in parse_entry(text, "alg", "--alg")] if algs else
                   [_file_entry(item, "alg", f"{where}, algs") for item in listed("algs")])
    env_entries = ([e for text in envs for e in parse_entry(text, "env", "--env")] if envs else
                   [_file_entry(item, "env", f"{where}, envs") for item in listed("envs")])
    seed_list = parse_seeds(seeds, "--seeds") if seeds is not None else (
        parse_seeds(data["seeds"], f"{where}, seeds") if data.get("seeds") is not None else ())
    common = _merge(overrides_from_mapping(data.get("set"), f"{where}, set"), overrides_from_strings(sets, "--set"))

    empty = [what for what, items in (("algorithms (--alg or 'algs:')", alg_entries),
                                      ("environments (--env or 'envs:')", env_entries),
                                      ("seeds (--seeds or 'seeds:')", seed_list)) if not items]
    if empty:
        raise SweepError(f"empty sweep: no {', no '.join(empty)}")
    for kind, entries in (("algorithm", alg_entries), ("environment", env_entries)):
        labels = [e.label for e in entries]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise SweepError(f"{kind} label(s) {dupes} appear twice; give each entry its own label "
                             f"(NAME:LABEL on the command line, 'label:' in the file)")
    if only:
        alg_entries, env_entries = _only(only, alg_entries, env_entries)
    for where_, pairs in [("set", common)] + [(f"{e.label}'s set", e.overrides) for e in alg_entries + env_entries]:
        taken = sorted({k for k, _ in pairs if k.split(".")[0] in TAG_KEYS + RESUME_KEYS})
        if taken:
            raise SweepError(f"{where_}: {taken} are set by the sweep itself (use --seeds, --name, --mongo-url, --mongo-db)")

    file_workers = data.get("workers")
    if file_workers is not None and (isinstance(file_workers, bool) or not isinstance(file_workers, int) or file_workers < 1):
        raise SweepError(f"{where}: workers must be a positive integer, got {file_workers!r}")
    sweep_name = name or data.get("name")
    named = bool(sweep_name)
    if sweep_name is not None and not (isinstance(sweep_name, str) and _NAME_RE.fullmatch(sweep_name)):
        raise SweepError(f"sweep name {sweep_name!r} may only use letters, digits and _ . + -")
    if not sweep_name:
        sweep_name = derived_name(alg_entries, env_entries, seed_list, common)
    for key in ("mongo_url", "mongo_db"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise SweepError(f"{where}: {key} must be a string")
    host = data.get("host")
    if host is not None and host not in HOSTS:
        raise SweepError(f"{where}: host must be one of {', '.join(HOSTS)}, got {host!r}")
    return Sweep(sweep_name, alg_entries, env_entries, seed_list, common, data.get("mongo_url"), data.get("mongo_db"),
                 workers or file_workers, named, str(file) if file else None, host)


def _only(labels: Sequence[str], algs: list, envs: list) -> tuple[list, list]:
    """Keep the entries named in ``labels``; a kind none of them names is kept whole."""
    wanted = [label for text in labels for label in str(text).split(",") if label]
    known = [e.label for e in algs + envs]
    for label in wanted:
        if label not in known:
            hint = difflib.get_close_matches(label, known, 1)
            raise SweepError(f"--only {label!r} is not a label of this sweep" + (f" (did you mean {hint[0]!r}?)" if hint
                             else "") + f"; its labels: {', '.join(known)}")
    picked = []
    for entries in (algs, envs):
        chosen = [e for e in entries if e.label in wanted]
        picked.append(chosen or entries)
    return picked[0], picked[1]


# --------------------------------------------------------------------------- host checks


def config_folders(host_root: Path, host: HostSpec) -> dict[str, list[Path]]:
    """Where ``--config`` / ``--env-config`` names are looked up: the host's, then ours for it."""
    ours = host.our_configs()
    return {kind: [host_root / "src" / "config" / kind, ours / kind] for kind in ("algs", "envs")}


def check_against_host(sweep: Sweep, host_root: Path, host: HostSpec) -> None:
    """The sweep is for this host (its ``host:``, if any), config names exist, and every
    overridden key is one some config of the host or ours has."""
    if sweep.host is not None and sweep.host != host.name:
        raise SweepError(f"sweep {sweep.name!r} is written for {HOSTS[sweep.host].title} (its 'host: {sweep.host}'), "
                         f"but {host_root} is {host.title}: run it in {HOSTS[sweep.host].title} checkout")
    folders = config_folders(host_root, host)
    problems = []
    for kind, what, entries in (("algs", "algorithm", sweep.algs), ("envs", "environment", sweep.envs)):
        known = sorted({p.stem for folder in folders[kind] if folder.is_dir() for p in folder.glob("*.yaml")})
        unknown = [e.config for e in entries if e.config not in known]
        if unknown:
            hints = [f"{u!r}" + (f" (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(u, known, 1)) else "")
                     for u in unknown]
            looked = " and ".join(str(f) for f in folders[kind])
            problems.append(f"unknown {what} config(s) {', '.join(hints)}: no such YAML in {looked}")
    if problems:
        raise SweepError("; ".join(problems))
    keys = {"seed"} | set(TAG_KEYS)
    roots = [host_root / "src" / "config", host.our_configs()]
    for root in roots:
        for path in root.rglob("*.yaml"):
            keys |= _yaml_keys(path)
    used = [(k, where) for where, pairs in [("--set/set", sweep.common)] +
            [(e.label, e.overrides) for e in sweep.algs + sweep.envs] for k, _ in pairs]
    unknown = sorted({(k, w) for k, w in used if k.split(".")[0] not in keys})
    if unknown:
        parts = []
        for key, where in unknown:
            top = key.split(".")[0]
            hint = difflib.get_close_matches(top, sorted(keys), 1)
            parts.append(f"{key!r} ({where})" + (f", did you mean {hint[0]!r}?" if hint else ""))
        raise SweepError(f"no config has the key(s) {'; '.join(parts)}")
    # Sacred accepts only keys of the merged config of each run (defaults, env YAML, alg YAML):
    # a key only some other algorithm has (temperature_anneal_time on qmix) fails that run.
    defaults = {"seed"} | set(TAG_KEYS) | _yaml_keys(roots[0] / "default.yaml") | _yaml_keys(roots[1] / "default.yaml")
    own = {kind: {e.config: _yaml_keys(_find(folders[kind], e.config)) for e in entries}
           for kind, entries in (("algs", sweep.algs), ("envs", sweep.envs))}
    refused = []
    for alg in sweep.algs:
        for env in sweep.envs:
            accepted = defaults | own["algs"][alg.config] | own["envs"][env.config]
            bad = sorted({k for k, _ in (*sweep.common, *alg.overrides, *env.overrides) if k.split(".")[0] not in accepted})
            if bad:
                refused.append(f"{', '.join(map(repr, bad))} for {alg.label} on {env.label}")
    if refused:
        raise SweepError(f"Sacred would refuse key(s) that no config of the run (its algorithm's and environment's YAML, "
                         f"default.yaml) has: {'; '.join(refused)}; set such keys on the algorithms that have them")
    _check_values(sweep, host_root, host, folders)


def _merged(base: dict, update: Mapping) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = _merged(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
    return out


def run_config(run: RunSpec, host_root: Path, host: HostSpec) -> dict:
    """The config ``run`` gets, merged as the host's patched main.py merges it: default.yaml,
    the env's YAML, the algorithm's YAML, our default.yaml's keys it lacks, then the ``with`` words."""
    from ..hosts.pymarl_family.preflight import with_updates

    folders = config_folders(host_root, host)
    config: dict = {}
    for path in (host_root / "src" / "config" / "default.yaml", _find(folders["envs"], run.env.config),
                 _find(folders["algs"], run.alg.config)):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) if path is not None else None
        config = _merged(config, data if isinstance(data, Mapping) else {})
    ours = yaml.safe_load((host.our_configs() / "default.yaml").read_text(encoding="utf-8")) or {}
    config = {**ours, **config}
    return with_updates(config, run.with_args(None, mongo_off=True))


def _check_values(sweep: Sweep, host_root: Path, host: HostSpec, folders) -> None:
    """The checks each run repeats before Sacred starts it (values of our keys, env_args),
    once per algorithm and environment, so a bad value stops the sweep, not each run."""
    from ..errors import ConfigError

    check_values = host.adapter_module("preflight").check_values
    refused = []
    for alg in sweep.algs:
        for env in sweep.envs:
            run = RunSpec(sweep.name, alg, env, sweep.seeds[0], sweep.common)
            try:
                check_values(run_config(run, host_root, host), host_root / "src" / "config")
            except ConfigError as exc:
                refused.append(f"{alg.label} on {env.label}: {exc}")
    if refused:
        raise SweepError("bad value(s): " + "; ".join(refused))


def _yaml_keys(path: Optional[Path]) -> set[str]:
    if path is None:
        return set()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return set()
    return set(map(str, data)) if isinstance(data, Mapping) else set()


def _find(folders: Sequence[Path], name: str) -> Optional[Path]:
    return next((f / f"{name}.yaml" for f in folders if (f / f"{name}.yaml").is_file()), None)
