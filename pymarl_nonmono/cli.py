"""The ``pymarl-nonmono`` console command: install, uninstall and doctor for PyMARL2;
bench, report and export for sweeps of runs.

Reports go to stdout through :func:`_out`; errors are one line on stderr,
``pymarl-nonmono: error: ...``, with exit code 2 and no traceback (``-v`` adds logging).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import time
from typing import Optional, Sequence

from . import __version__
from .hosts.pymarl2.doctor import MONGO_URL_ENV

PROG = "pymarl-nonmono"
ENV_DIR = "PYMARL2_DIR"
EXIT_ERROR = 2

log = logging.getLogger(__name__)


class UsageError(Exception):
    """Bad command line or a failed operation; reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    # argparse would print the usage block and call sys.exit itself; we want one line
    # and a return value from main().
    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message} (see {PROG} --help)")


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def _default_path() -> str:
    return os.environ.get(ENV_DIR) or os.getcwd()


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Install pymarl-nonmono into a PyMARL2 checkout (hijkzzz/pymarl2) or an EPyMARL one "
                    "(uoe-agents/epymarl), undo it, check a setup, run sweeps of PyMARL2 runs and report them.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is done to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    host_path_help = f"PyMARL2 or EPyMARL checkout (default: ${ENV_DIR} if set, else the current folder)"

    p = sub.add_parser("install", help="patch a PyMARL2 or EPyMARL checkout (original files are kept for uninstall); "
                                       "clones the host first when PATH is missing or empty")
    p.add_argument("path", nargs="?", metavar="PATH", help=host_path_help)
    _add_host_argument(p, "; into a missing or empty PATH: the host to clone, default pymarl2")
    p.add_argument("--source", metavar="URL_OR_PATH",
                   help="where to clone the host from when PATH is missing or empty: a URL, a local clone or a git "
                        "bundle (default: $PYMARL_NONMONO_PYMARL2_SOURCE or $PYMARL_NONMONO_EPYMARL_SOURCE, else "
                        "the host's GitHub repository)")
    p = sub.add_parser("uninstall", help="restore the checkout's original files byte for byte")
    p.add_argument("path", nargs="?", metavar="PATH", help=host_path_help)
    _add_host_argument(p, "")
    p.add_argument("--force", action="store_true", help="restore even files edited after install (the edits are lost)")
    p = sub.add_parser("doctor", help="check the checkout, the plugin and optional software (exit 1 if unusable)")
    p.add_argument("path", nargs="?", metavar="PATH", help=host_path_help)
    _add_host_argument(p, "")
    _add_bench_parser(sub, host_path_help)
    _add_report_parser(sub, host_path_help)
    _add_export_parser(sub, host_path_help)
    from .analysis.dynamics_cli import add_arguments as add_dynamics_arguments

    add_dynamics_arguments(sub.add_parser(
        "dynamics", help="gradient-flow analysis of a single-state game: IGM outcomes, zero-loss spectra, plots"))
    return parser


def _add_host_argument(p, more: str) -> None:
    from .hosts.spec import HOSTS

    p.add_argument("--host", choices=tuple(HOSTS), help=f"which host PATH is (default: recognised from its files{more})")


def _add_bench_parser(sub, path_help: str) -> None:
    p = sub.add_parser(
        "bench", help="run a sweep: algorithm configs x env configs x seeds, one PyMARL2/EPyMARL run each (resumable; exit 1 if a run failed)",
        description="Run every combination as its own PyMARL2 or EPyMARL run, tagged sweep_id/sweep_alg/sweep_env in its Sacred "
                    "config. Finished runs of the same sweep are skipped; failed ones are listed with their error. "
                    "The sweep comes from --sweep FILE and/or the options below (a list given here replaces the "
                    "file's; --set adds to it). See docs/benchmarking.md.")
    p.add_argument("path", nargs="?", metavar="PATH", help=path_help)
    _add_host_argument(p, "")
    p.add_argument("--sweep", metavar="FILE", help="sweep file (YAML: name, algs, envs, seeds, set, mongo_db, workers), or the name of a "
                        "shipped study (config/studies: e.g. matrix_qtran)")
    p.add_argument("--alg", action="append", default=[], metavar="SPEC",
                   help="algorithm config(s): NAME[,NAME...] or 'NAME[:LABEL] KEY=VALUE ...' (repeatable)")
    p.add_argument("--env", action="append", default=[], metavar="SPEC",
                   help="env config(s), same form; e.g. 'sc2 env_args.map_name=3m' (label: the map name) or, on "
                        "EPyMARL, 'gymma env_args.key=lbforaging:Foraging-8x8-2p-3f-v3' (label: the id after ':')")
    p.add_argument("--seeds", metavar="LIST", help="seeds: 1,2,3 or 1-5")
    p.add_argument("--only", action="append", default=[], metavar="LABELS",
                   help="run only the algorithm and/or environment entries with these labels (comma-separated, "
                        "repeatable): a piece of a long sweep, under the sweep's own name")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Sacred override for every run (repeatable)")
    p.add_argument("--name", metavar="ID", help="sweep id (default: the file's name, else derived from the sweep's content)")
    p.add_argument("--workers", type=int, metavar="N", help="runs at a time (default: the file's, else 1)")
    p.add_argument("--executor", choices=("local", "slurm", "submitit-local"), default="local",
                   help="local worker processes (default); SLURM through submitit; or submitit's local executor "
                        "(the SLURM code path on this machine)")
    p.add_argument("--out", metavar="DIR", help="sweep folder for run states and logs (default: PATH/results/sweeps/ID)")
    p.add_argument("--mongo-url", metavar="URL", help=f"record every run to this MongoDB too (default: ${MONGO_URL_ENV})")
    p.add_argument("--mongo-db", metavar="DB", help="MongoDB database (default: the file's, $PYMARL_NONMONO_MONGO_DB, else sacred)")
    p.add_argument("--no-mongo", action="store_true", help="FileStorage only, even if a MongoDB is configured")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="stop a run that takes longer than this")
    p.add_argument("--restart-stale", action="store_true",
                   help="run again runs that an earlier bench left RUNNING/SUBMITTED (e.g. a cancelled SLURM job)")
    p.add_argument("--dry-run", action="store_true", help="check the sweep and show what would run, run nothing")
    p.add_argument("--no-progress", action="store_true", help="one line per finished run instead of a progress bar")
    g = p.add_argument_group("SLURM (with --executor slurm; submitit's AutoExecutor parameters)")
    g.add_argument("--timeout-min", type=int, default=24 * 60, metavar="M", help="job time limit in minutes (default: 1440)")
    g.add_argument("--partition", metavar="NAME", help="SLURM partition")
    g.add_argument("--cpus-per-task", type=int, metavar="N", help="CPUs per job")
    g.add_argument("--mem-gb", type=float, metavar="G", help="memory per job")
    g.add_argument("--gpus-per-node", type=int, metavar="N", help="GPUs per job")


def _add_source_arguments(p, path_help: str) -> None:
    p.add_argument("path", nargs="?", metavar="PATH", help=path_help + "; used to find results/sacred")
    p.add_argument("--sweep", metavar="ID", help="only the runs of this sweep (config sweep_id)")
    p.add_argument("--results", action="append", default=[], metavar="DIR",
                   help="FileStorage folder(s) to read (repeatable; default: PATH/results/sacred)")
    p.add_argument("--mongo", action="store_true", help=f"read from MongoDB (URL: --mongo-url, else ${MONGO_URL_ENV})")
    p.add_argument("--mongo-url", metavar="URL", help="read from this MongoDB (implies --mongo)")
    p.add_argument("--mongo-db", metavar="DB", help="MongoDB database (default: $PYMARL_NONMONO_MONGO_DB, else sacred)")


def _add_report_parser(sub, path_help: str) -> None:
    p = sub.add_parser(
        "report", help="learning curves, IQM/median/mean with bootstrap CIs, probability of improvement and "
                       "performance profiles (Markdown, CSV, PNG)",
        description="Read Sacred runs from FileStorage folders (default: PATH/results/sacred) or MongoDB and write, "
                    "per environment, the IQM curve of the metric across seeds with a band (--band), the final value "
                    "and area under the curve as IQM, median and mean with 95% stratified-bootstrap CIs, the "
                    "probability of improvement of every pair of algorithms and performance profiles (rliable; pooled "
                    "over environments too when there are several): report.md, CSV tables, PNG figures. Failed and "
                    "unfinished runs are listed, never counted (unfinished ones do with --include-unfinished). Needs rliable: pip install rliable 'pandas<3'.")
    _add_source_arguments(p, path_help)
    p.add_argument("--metric", metavar="NAME",
                   help="statistic to plot (default: test_battle_won_mean where recorded, else test_return_mean)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: ./report-ID, ID the sweep or 'all')")
    p.add_argument("--points", type=int, default=100, metavar="N", help="points of the common step grid (default: 100)")
    p.add_argument("--band", choices=("iqr", "ci"), default="iqr",
                   help="band around each IQM curve: the 25-75%% interquartile range across seeds (iqr, default) or "
                        "the 95%% bootstrap CI of the IQM (ci)")
    p.add_argument("--reps", type=int, default=2000, metavar="N", help="bootstrap resamples (default: 2000)")
    p.add_argument("--pdf", action="store_true", help="also write every figure as PDF")
    p.add_argument("--include-unfinished", action="store_true",
                   help="a progress report of a sweep still under way: a seed without a finished run counts by its "
                        "latest unfinished attempt (stopped, running or silent; never a failed one), marked as such in "
                        "every table and figure caption; the common horizon is then the shortest of all these runs")
    p.add_argument("--at", metavar="STEPS",
                   help="also a table per environment in report.md: each run's value first logged at or after each "
                        "of these steps, and its last (comma-separated, k/M suffixes: e.g. 100k,200k,400k)")
    p.add_argument("--label", action="append", default=[], metavar="NAME=TEXT",
                   help="show algorithm, environment or metric NAME as TEXT in the figures (repeatable), "
                        "e.g. --label nonmono_qmix_rnd='Non-monotonic QMIX'")
    titles = p.add_mutually_exclusive_group()
    titles.add_argument("--title", metavar="TEXT", help="title of every figure (default: environment and metric)")
    titles.add_argument("--no-title", action="store_true",
                        help="figures without titles (each figure's caption is in a .txt beside it either way)")
    p.add_argument("--dpi", type=int, default=150, metavar="N", help="resolution of the PNG figures (default: 150)")
    direction = p.add_mutually_exclusive_group()
    direction.add_argument("--lower-is-better", dest="lower", action="store_const", const=True, default=None,
                           help="lower values of the metric are better (default: known for our statistics, e.g. "
                                "worst_greedy_action_rate; otherwise higher is better)")
    direction.add_argument("--higher-is-better", dest="lower", action="store_const", const=False)
    p.add_argument("--recovery", action="store_true",
                   help="matrix games: also a table of optimum recovered k/N, episodes to recover, IGM consistency "
                        "and payoff error per algorithm (recovery.md; metric default: test_optimal_mean)")
    p.add_argument("--table1", action="store_true",
                   help="two-agent matrix games: the paper's Table 1 layout (table1.md): the payoff, and per algorithm "
                        "the Q_tot of its median run (median final payoff_max_abs_error) with each agent's utilities "
                        "on the margins, the paper's values beside ours (paper_a, paper_b), and how many seeds "
                        "matched the paper's outcome")
    p.add_argument("--table1-tolerance", type=float, default=0.5, metavar="X",
                   help="--table1: a run matches the paper's exact recovery when its greedy joint action is optimal "
                        "and max |Q_tot - payoff| <= X (default: 0.5)")


def _add_export_parser(sub, path_help: str) -> None:
    p = sub.add_parser(
        "export", help="a sweep's runs as a file for other evaluation tools (--format marl-eval)",
        description="Write the finished runs of a sweep in marl-eval's JSON layout (environment -> task -> algorithm "
                    "-> seed_S -> step_K -> metric lists, plus absolute_metrics), aligned on a common step grid; "
                    "only seeds every algorithm finished on every task are written (marl-eval needs equal arrays). "
                    "See docs/benchmarking.md.")
    _add_source_arguments(p, path_help)
    p.add_argument("--format", required=True, choices=("marl-eval",), help="output layout")
    p.add_argument("--metric", action="append", default=[], metavar="NAME",
                   help="statistic(s) to export (repeatable; default: as report)")
    p.add_argument("--points", type=int, default=20, metavar="N", help="evaluation steps per run (default: 20)")
    p.add_argument("--out", metavar="FILE", help="output file (default: ./marl-eval-ID.json, ID the sweep or 'all')")


def _chosen_host(path: str, name: Optional[str]):
    """--host NAME, else the host whose checkout PATH is; a PATH that is no folder gets the
    default host, whose own checks then say what is missing."""
    from pathlib import Path

    from .hosts.install import detect_host
    from .hosts.spec import DEFAULT_HOST, host_named

    if name:
        return host_named(name)
    if not Path(path).expanduser().is_dir():
        return DEFAULT_HOST
    return detect_host(path)


def _adapter(host, module: str):
    """The host adapter's ``install`` or ``doctor`` module (HostSpec.adapter names the package)."""
    import importlib

    return importlib.import_module(f"{host.adapter}.{module}")


def _install(path: str, source: Optional[str], host_name: Optional[str]) -> int:
    from .hosts import fetch
    from .hosts.checkout import is_vacant
    from .hosts.install import STATE_DIR, InstallError
    from .hosts.spec import DEFAULT_HOST, host_named

    if is_vacant(path):
        host = host_named(host_name) if host_name else DEFAULT_HOST
        _out(f"cloning {host.title} ({host.commit[:7]}) from {fetch.describe_source(host, source)} into {path} ...")
        clone = fetch.clone_host(host, path, source)
        _out(f"cloned into {clone.root}: HEAD detached at {clone.commit[:7]}")
    else:
        if source:
            _out(f"{path} is not empty: installing into it as it is (--source is only used to clone into a new folder)")
        try:
            host = _chosen_host(path, host_name)
        except InstallError as exc:
            raise InstallError(f"{exc}; `pymarl-nonmono install` clones {DEFAULT_HOST.title} only into a new or empty "
                               f"folder (another host with --host)") from exc
    result = _adapter(host, "install").install(path)
    if result.already_installed:
        _out(f"already installed in {result.root}: {', '.join(result.already)} applied; nothing changed")
        return 0
    if result.already:
        _out(f"already applied: {', '.join(result.already)}")
    for name in result.applied:
        _out(f"applied {name}")
    for rel in result.changed:
        _out(f"  {'created' if rel in result.created else 'changed'} {rel}")
    _out(f"installed into {result.root}; originals kept in {result.root / STATE_DIR} (undo: {PROG} uninstall {result.root})")
    _out(f"check the setup with: {PROG} doctor {result.root}")
    return 0


def _uninstall(path: str, force: bool, host_name: Optional[str]) -> int:
    result = _adapter(_chosen_host(path, host_name), "install").uninstall(path, force=force)
    for rel in result.forced:
        _out(f"  discarded edits to {rel} (--force)")
    for rel in result.restored:
        _out(f"  restored {rel}")
    for rel in result.removed:
        _out(f"  removed {rel}")
    _out(f"uninstalled from {result.root}: original files restored")
    return 0


def _doctor(path: str, host_name: Optional[str]) -> int:
    from pathlib import Path

    from .hosts.doctor import undetected_checks
    from .hosts.install import InstallError
    from .hosts.spec import DEFAULT_HOST

    try:
        host = _chosen_host(path, host_name)
    except InstallError as exc:  # a folder that is no host's checkout: report it, and the rest as usual
        doctor = _adapter(DEFAULT_HOST, "doctor")
        checks = undetected_checks(Path(path).expanduser(), str(exc)) + doctor.software_checks()
        for check in checks:
            _out(check.line())
        _out("no host checkout: pymarl-nonmono is NOT usable here")
        return 1
    doctor = _adapter(host, "doctor")
    checks = doctor.doctor(path)
    for check in checks:
        _out(check.line())
    ok = doctor.usable(checks)
    _out(f"{host.title} with pymarl-nonmono is {'usable' if ok else 'NOT usable'} ({doctor.USABLE_MEANS})")
    return 0 if ok else 1


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def sweep_from_args(args):
    """The sweep a parsed `bench` command line describes (its file and/or --alg/--env/... options)."""
    from .bench.spec import build_sweep

    return build_sweep(args.sweep, algs=args.alg, envs=args.env, seeds=args.seeds, sets=args.set, name=args.name,
                       only=args.only, workers=args.workers)


def _bench(args, path: str) -> int:
    from .bench.launch import code_state, prepare, record_sweep, warn_if_mutable
    from .bench.runner import COMPLETED, import_submitit, run_local, run_submitit, stop_on_signals
    from .hosts.spec import host_named

    if not (args.sweep or args.alg or args.env):
        raise UsageError(f"bench needs a sweep: --sweep FILE and/or --alg/--env/--seeds (see {PROG} bench --help)")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    sweep = sweep_from_args(args)
    workers = sweep.workers or 1
    prepared = prepare(sweep, path, host_spec=host_named(args.host) if args.host else None, out_dir=args.out,
                       mongo_url=args.mongo_url, mongo_db=args.mongo_db, no_mongo=args.no_mongo, workers=workers, timeout_s=args.timeout,
                       restart_stale=args.restart_stale)
    plan, ctx = prepared.plan, prepared.ctx
    if args.executor != "local" and not args.dry_run:
        import_submitit()
    make_bar = None if args.no_progress or args.dry_run or not plan.todo else _progress_bar_factory()

    _out(f"sweep {sweep.name}: {_plural(len(sweep.algs), 'algorithm')} x {_plural(len(sweep.envs), 'environment')} x "
         f"{_plural(len(sweep.seeds), 'seed')} = {_plural(len(prepared.runs), 'run')}; {len(plan.done)} finished, "
         f"{len(plan.todo)} to run ({_plural(workers, 'worker')}, {args.executor})")
    target = prepared.target
    _out(f"MongoDB: {target.shown}, database {target.db} ({target.source})" if target else
         "MongoDB: none (FileStorage only)")
    _out(f"FileStorage: {prepared.host / 'results' / 'sacred'}; run states and logs: {ctx.sweep_dir}")
    for run, state in plan.retry:
        why = state.get("error") or "left by an earlier bench or job that ended without recording the run's end"
        _out(f"  again: {run.key} ({state.get('status')}: {why})")
    for run, state in plan.elsewhere:
        where = f"job {state['job_id']}" if state.get("job_id") else f"pid {state.get('pid')} on {state.get('hostname')}"
        _out(f"  skipped, in progress elsewhere ({where}, since {state.get('started') or state.get('submitted')}): "
             f"{run.key}; pass --restart-stale if it is dead")
    code = ctx.code = code_state()
    mutable = warn_if_mutable(code)
    if mutable:
        log.warning("%s", mutable)
    if args.dry_run:
        for run in plan.todo:
            _out(f"  would run: (cd {prepared.host} && {ctx.python} {' '.join(ctx.command(run))})")
        return 0
    record_sweep(prepared, code)
    bar = make_bar(total=len(plan.todo), desc=sweep.name, unit="run", file=sys.stderr, dynamic_ncols=True) if make_bar else None

    failed_now = []

    def on_done(run, state):
        ok = state.get("status") == COMPLETED
        if not ok:
            failed_now.append((run, state))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(failed=len(failed_now))
        else:
            _out(f"  {state.get('status')}: {run.key}" + ("" if ok else f" -- {state.get('error', '')}"))

    started = time.monotonic()
    last_line = [started]

    def on_tick(running):
        # A hung run must not look like a slow one: the env steps of each running run, from its log.
        shown = [_run_progress_text(run, ctx) for run in running]
        if bar is not None:
            bar.set_postfix_str(f"failed={len(failed_now)}; " + ", ".join(shown) if shown else f"failed={len(failed_now)}")
        elif time.monotonic() - last_line[0] >= PROGRESS_LINE_SECONDS and shown:
            last_line[0] = time.monotonic()
            _out(f"  running ({_elapsed(time.monotonic() - started)} elapsed): " + ", ".join(shown))

    try:
        # SIGTERM/SIGHUP stop the runs and mark them INTERRUPTED, as Ctrl-C does.
        with stop_on_signals():
            if args.executor == "local":
                run_local(plan.todo, ctx, workers, prepared.env_extra, on_done, on_tick)
            else:
                parameters = {"timeout_min": args.timeout_min, "name": f"pymarl-{sweep.name}",
                              "slurm_partition": args.partition, "cpus_per_task": args.cpus_per_task,
                              "mem_gb": args.mem_gb, "gpus_per_node": args.gpus_per_node}
                cluster = "slurm" if args.executor == "slurm" else "local"
                run_submitit(plan.todo, ctx, cluster, workers, parameters, prepared.env_extra, on_done)
    finally:
        if bar is not None:
            bar.close()
    completed = len(plan.todo) - len(failed_now)
    _out(f"done: {completed} completed, {len(failed_now)} failed now; {len(plan.done) + completed} of "
         f"{len(prepared.runs)} runs of sweep {sweep.name} finished")
    refused = [(r, s) for r, s in failed_now if str(s.get("error", "")).startswith(REFUSED_PREFIX)]
    others = [(r, s) for r, s in failed_now if (r, s) not in refused]
    if others:
        _out("failed runs (run bench again to retry them):")
        for run, state in others:
            _out(f"  {run.key}: {state.get('error', '?')} (log: {state.get('log', '?')})")
    if refused:
        # Our start-up check stopped them: a setting or missing software, which a retry cannot change.
        _out("runs stopped at start-up by our checks (fix what the message names, then run bench again):")
        for run, state in refused:
            _out(f"  {run.key}: {state.get('error', '?')}")
    _out(f"report: {PROG} report {prepared.host} --sweep {sweep.name}" + (" --mongo" if target else ""))
    return 1 if failed_now else 0


#: How our start-up checks end a run's output (main.py exits with it): a setting or missing software.
REFUSED_PREFIX = "pymarl-nonmono: "
PROGRESS_LINE_SECONDS = 60  # --no-progress: a line with the running runs' progress this often


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _run_progress_text(run, ctx) -> str:
    from .bench.runner import run_progress

    progress = run_progress(ctx.log_path(run))
    if progress is None:
        return f"{run.key} starting"
    t_env, t_max = progress
    return f"{run.key} {t_env:,}/{t_max:,} steps ({100 * t_env / max(t_max, 1):.0f}%)"


def _progress_bar_factory():
    try:
        from tqdm import tqdm
    except ImportError:
        raise UsageError("the progress bar needs tqdm: pip install tqdm (or pass --no-progress)") from None
    return tqdm


def _unknown_sweep(sweep: str, known, where: str) -> None:
    """No run of ``sweep``: say which sweeps there are, with a did-you-mean."""
    import difflib

    from .bench.report import ReportError

    known = sorted(k for k in known if k)
    hint = difflib.get_close_matches(sweep, known, 1)
    raise ReportError(f"no runs of sweep {sweep!r} in {where}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                      + (f"; sweeps there: {', '.join(known)}" if known else "; no sweep has runs there"))


def _load_records(args, path: str, wanted: Sequence[str], extra: Sequence[str] = ()):
    """(records, metrics, where): the runs of --sweep with the metrics ``wanted`` (default: as
    choose_metric picks) and ``extra`` loaded, from FileStorage or MongoDB."""
    from pathlib import Path

    from .bench.report import MongoSource, ReportError, choose_metric, load_file_storage
    from .tracking.urls import MongoURLError, describe_error, resolve

    use_mongo = args.mongo or bool(args.mongo_url)
    if use_mongo and args.results:
        raise UsageError("give either --results (FileStorage) or --mongo/--mongo-url, not both")
    if use_mongo:
        try:
            target = resolve(args.mongo_url, args.mongo_db, url_key="--mongo-url", url_source="--mongo-url",
                             allow_secrets=True)
        except MongoURLError as exc:
            raise UsageError(str(exc)) from None
        if target is None:
            raise UsageError(f"--mongo needs a URL: --mongo-url URL or ${MONGO_URL_ENV}")
        source = MongoSource(target)
        try:
            try:
                records = source.runs(args.sweep)
                if args.sweep and not records:
                    _unknown_sweep(args.sweep, source.db.runs.distinct("config.sweep_id"),
                                   f"MongoDB {target.shown}, database {target.db}")
            except ReportError:
                raise
            except Exception as exc:
                raise UsageError(f"cannot read MongoDB at {target.shown}: {describe_error(exc, target.url)}") from None
            metrics = [choose_metric(records, m) for m in (wanted or [None])]
            for name in {*metrics, *extra}:
                source.load_metric(name)
        finally:
            source.close()
        return records, metrics, f"MongoDB {target.shown}, database {target.db}"
    roots = args.results or [str(Path(path) / "results" / "sacred")]
    records = load_file_storage(roots, args.sweep)
    if args.sweep and not records:
        sweeps_dir = Path(path) / "results" / "sweeps"
        known = {r.sweep_id for r in load_file_storage(roots)}
        known |= {p.name for p in sweeps_dir.iterdir() if p.is_dir()} if sweeps_dir.is_dir() else set()
        _unknown_sweep(args.sweep, known, "FileStorage " + ", ".join(roots))
    metrics = ([choose_metric(records, m) for m in (wanted or [None])] if records else
               list(wanted) or ["test_return_mean"])
    return records, metrics, "FileStorage " + ", ".join(roots)


def _figure_style(args):
    from .bench.report import FigureStyle

    labels = {}
    for item in args.label:
        name, sep, text = item.partition("=")
        if not sep or not name or not text:
            raise UsageError(f"--label takes NAME=TEXT, got {item!r}")
        labels[name] = text
    if args.dpi < 50 or args.dpi > 1200:
        raise UsageError(f"--dpi must be between 50 and 1200, got {args.dpi}")
    return FigureStyle(labels=labels, title="" if args.no_title else args.title, dpi=args.dpi)


def _report(args, path: str) -> int:
    from pathlib import Path

    from .bench import recovery, stats, table1
    from .bench.report import FALLBACK_METRIC, ReportError, build_report, fallback_metric, parse_steps, plot

    try:
        at = parse_steps(args.at) if args.at else ()
    except ReportError as exc:
        raise UsageError(str(exc)) from None
    if args.points < 2:
        raise UsageError(f"--points must be at least 2, got {args.points}")
    if args.reps < 100:
        raise UsageError(f"--reps must be at least 100 for a 95% interval, got {args.reps}")
    if args.recovery and not args.metric:
        args.metric = recovery.OPTIMAL
    if not args.table1_tolerance >= 0:
        raise UsageError(f"--table1-tolerance must be >= 0, got {args.table1_tolerance}")
    stats.rliable()  # a missing optional dependency stops before any run is read
    try:
        records, (metric,), where = _load_records(args, path, [args.metric] if args.metric else [],
                                                  (*(recovery.METRICS if args.recovery else ()),
                                                   *(table1.metric_names() if args.table1 else ()),
                                                   *(() if args.metric else (FALLBACK_METRIC,))))
    except ReportError as exc:
        if args.recovery and args.metric == recovery.OPTIMAL and recovery.OPTIMAL in str(exc):
            raise ReportError(f"{exc}. --recovery reads {recovery.OPTIMAL}, which our matrix_game env logs "
                              f"(--env-config=matrix_game, any preset or payoff); PyMARL2's own one_step_matrix_game "
                              f"and other envs have no known optimum to recover") from None
        raise
    metric, note = (metric, "") if args.metric else fallback_metric(records, metric)
    if note:
        _out(note)
    style = _figure_style(args)
    report = build_report(records, metric, where, args.sweep, args.points, band=args.band, reps=args.reps,
                          lower=args.lower, note=note, include_unfinished=args.include_unfinished, at=at)
    out_dir = Path(args.out or f"report-{args.sweep or 'all'}")
    figures = plot(report, out_dir, pdf=args.pdf, style=style)
    tables = report.write_csv(out_dir)
    md = out_dir / "report.md"
    md.write_text(report.markdown(), encoding="utf-8")
    for env in report.envs:
        _out(f"## {env.env}  ({metric}; final at step {env.horizon[1]:,.0f})" if env.curves else f"## {env.env}  ({metric})")
        _out(report.table(env))
        if env.comparison is not None and len(env.comparison.scores) > 1:
            _out(report.improvement_table(env.comparison))
        for line in env.unfinished:
            _out(f"  not finished, included: {line}")
        for r in env.excluded:
            _out(f"  not included: {r.label()}: {r.note}")
    if report.overall is not None:
        _out("## all environments (final values pooled)")
        _out(report.aggregate_table(report.overall))
    for path_ in [*figures, *tables]:
        _out(f"wrote {path_}")
    _out(f"wrote {md}")
    if args.recovery:
        rec_tables = recovery.recovery_rows(records)
        rec_md = out_dir / "recovery.md"
        rec_md.write_text(recovery.markdown(rec_tables, where, args.sweep), encoding="utf-8")
        for env, rows in rec_tables.items():
            _out(f"## {env}  (optimum recovery)")
            _out(recovery.markdown_table(rows))
        _out(f"wrote {rec_md}")
    if args.table1:
        games = table1.build_table1(records, *table1.describe_runs(records), tolerance=args.table1_tolerance)
        t1_md = out_dir / "table1.md"
        t1_md.write_text(table1.markdown(games, where, args.sweep, args.table1_tolerance), encoding="utf-8")
        for game in games:
            _out(f"## {game.env}  (the paper's Table 1 layout: median runs)")
            _out(table1.summary_markdown(game))
        _out(f"wrote {t1_md}")
    return 0


def _export(args, path: str) -> int:
    import json
    from pathlib import Path

    from .bench.export import marl_eval_layout
    from .bench.report import ReportError

    if args.points < 2:
        raise UsageError(f"--points must be at least 2, got {args.points}")
    records, metrics, where = _load_records(args, path, args.metric)
    if not records:
        raise ReportError(f"no runs{' of sweep ' + repr(args.sweep) if args.sweep else ''} in {where}")
    export = marl_eval_layout(records, metrics, args.points)
    out = Path(args.out or f"marl-eval-{args.sweep or 'all'}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(export.data, indent=1), encoding="utf-8")
    for note in export.dropped:
        _out(f"  not exported: {note}")
    _out(f"wrote {out}: {export.runs} runs of {', '.join(metrics)} from {where} in marl-eval's layout "
         f"({', '.join(f'{env}: {len(tasks)} task(s)' for env, tasks in export.data.items())})")
    return 0


def _dynamics(args) -> int:
    from .analysis.dynamics_cli import run

    return run(args)  # works on a game, not on a checkout: no PATH


def _path(args) -> str:
    return args.path or _default_path()


# Subcommand name -> handler of the parsed arguments; the parser defines the same names.
COMMANDS = {
    "install": lambda args: _install(_path(args), args.source, args.host),
    "uninstall": lambda args: _uninstall(_path(args), args.force, args.host),
    "doctor": lambda args: _doctor(_path(args), args.host),
    "bench": lambda args: _bench(args, _path(args)),
    "report": lambda args: _report(args, _path(args)),
    "export": lambda args: _export(args, _path(args)),
    "dynamics": _dynamics,
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .bench import MissingDependency
    from .bench.report import ReportError
    from .bench.runner import Stopped
    from .bench.spec import SweepError
    from .hosts.pymarl2.install import InstallError

    parser = _build_parser()
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help and --version end here
            return int(exc.code or 0)
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                            format=f"{PROG}: %(levelname)s: %(message)s")
        if args.command is None:
            raise UsageError(f"a command is required: {', '.join(COMMANDS)} (see {PROG} --help)")
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # a reader that went away shows here, not at interpreter exit
        return code
    except KeyboardInterrupt as exc:
        # Ctrl-C, or SIGTERM/SIGHUP during bench (Stopped): exit as the signal would have.
        stopped = isinstance(exc, Stopped)
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
            sys.stderr.write(f"{PROG}: interrupted{f' by {exc}' if stopped else ''}\n")
        return 128 + (exc.signum if stopped else signal.SIGINT)
    except BrokenPipeError:
        # Whoever read our output stopped (`doctor | head -3`): that is no error of ours.
        # Python would still try to flush stdout at exit and complain; point it at devnull.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except (UsageError, InstallError, SweepError, ReportError, MissingDependency, OSError) as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
