"""Running a sweep's host runs (PyMARL2 or EPyMARL): one subprocess each, locally or as submitit jobs.

Each run's state lives in ``<sweep dir>/runs/<key>.json`` and its output in
``<sweep dir>/logs/<key>.log``; :func:`run_one` writes both, wherever it executes (a local
worker thread or a SLURM job on a shared file system). A later ``bench`` call reads them
to skip finished runs and to list failed ones with their error.

The MongoDB URL is handed to the runs through the environment variable only: it is never
part of a command line, a state file or a pickled submitit job.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional, Sequence

from . import MissingDependency
from .spec import RunSpec

log = logging.getLogger(__name__)

RUNNING, SUBMITTED, COMPLETED, FAILED, INTERRUPTED = "RUNNING", "SUBMITTED", "COMPLETED", "FAILED", "INTERRUPTED"
#: What an earlier attempt's record says when it was still RUNNING or SUBMITTED as a new attempt
#: began: the bench or job that ran it is gone, and nobody recorded its end.
LOST = "LOST"
STOP_GRACE_S = 10


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class Context:
    """What every run of a sweep shares; picklable, and holds no secret."""

    host: str                      # the host checkout (PyMARL2 or EPyMARL)
    sweep_dir: str
    python: str = sys.executable
    mongo_db: Optional[str] = None
    mongo_off: bool = False
    timeout_s: Optional[float] = None
    threads: Optional[int] = None  # OMP/MKL threads per run, unless the user set them
    code: Optional[dict] = None  # the pymarl-nonmono code the runs import (launch.code_state), kept in each run's state

    def state_path(self, run: RunSpec) -> Path:
        return Path(self.sweep_dir) / "runs" / f"{run.key}.json"

    def log_path(self, run: RunSpec) -> Path:
        return Path(self.sweep_dir) / "logs" / f"{run.key}.log"

    def command(self, run: RunSpec) -> list[str]:
        return run.command(self.mongo_db, self.mongo_off) + run.folder_args()


def write_state(path: Path, state: Mapping) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(dict(state), f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def read_state(path: Path) -> Optional[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --------------------------------------------------------------------------- plan


def identity(run: RunSpec) -> list[str]:
    """What makes a run the same run: its command without where it reports to, overrides sorted.

    A finished run counts whatever it recorded to; the order of overrides does not matter
    (each key appears once on the command line).
    """
    command = run.command()
    cut = command.index("with") + 1
    return command[:cut] + sorted(command[cut:])


@dataclass
class Plan:
    todo: list[RunSpec] = field(default_factory=list)
    done: list[tuple[RunSpec, dict]] = field(default_factory=list)
    elsewhere: list[tuple[RunSpec, dict]] = field(default_factory=list)  # running in another bench/job
    retry: list[tuple[RunSpec, dict]] = field(default_factory=list)      # failed, interrupted or left RUNNING before


def _alive_here(state: Mapping) -> bool:
    if state.get("hostname") != socket.gethostname() or not state.get("pid"):
        return False
    try:
        os.kill(int(state["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def plan(runs: Sequence[RunSpec], ctx: Context, restart_stale: bool = False) -> Plan:
    """Sort the sweep's runs into finished, in progress elsewhere, and to run."""
    out = Plan()
    for run in runs:
        state = read_state(ctx.state_path(run))
        status = (state or {}).get("status")
        if state and status == COMPLETED and state.get("identity") == identity(run):
            out.done.append((run, state))
        elif state and status in (RUNNING, SUBMITTED) and not restart_stale and (
                state.get("job_id") or _alive_here(state)):
            out.elsewhere.append((run, state))
        else:
            # A RUNNING/SUBMITTED state here was left by a bench or job that is gone
            # (or --restart-stale): that run is also run again, and the user is told.
            if state and status in (FAILED, INTERRUPTED, RUNNING, SUBMITTED):
                out.retry.append((run, state))
            out.todo.append(run)
    return out


# --------------------------------------------------------------------------- one run


_STARTED_RE = re.compile(r'Started run with ID "([^"]+)"')
_FILES_RE = re.compile(r"Saving to FileStorageObserver in (.+?)\.?\s*$", re.M)
_ERROR_RE = re.compile(r"^(pymarl-nonmono: |main\.py: error: |[A-Za-z_.]*(Error|Exception|Interrupt)\b)")


def error_line(text: str) -> str:
    """The line of a failed run's output that says why: the last error-like line, else the last line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for line in reversed(lines):
        if _ERROR_RE.match(line):
            return line[:500]
    return lines[-1][:500] if lines else "no output"


def _tail(path: Path, limit: int = 200_000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _head(path: Path, limit: int = 50_000) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""


def _run_env(ctx: Context, extra: Optional[Mapping[str, str]]) -> dict:
    env = dict(os.environ)
    if ctx.threads:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(name, str(ctx.threads))
    env.update(extra or {})
    env.setdefault("PYTHONUNBUFFERED", "1")
    # PyMARL2 imports pygame (its stag_hunt env) on every run, which prints a banner.
    env.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    return env


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP reached the bench; handled like Ctrl-C (:func:`stop_on_signals`)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def stop_on_signals(signals: Sequence[int] = STOP_SIGNALS) -> Iterator[None]:
    """Within the block, ``signals`` raise :class:`Stopped` in the main thread.

    By default they would end the bench at once: its runs (own sessions, so the signal
    does not reach them) train on as orphans and their states stay RUNNING. As an
    exception, the executors stop the runs and mark them INTERRUPTED as on Ctrl-C.
    """
    raised: list[int] = []

    def handler(signum, frame):
        if raised:  # already stopping: let the clean-up finish
            return
        raised.append(signum)
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def interrupted_error(exc: BaseException) -> str:
    """The error recorded for runs stopped because the bench was: Ctrl-C or a signal."""
    return f"bench interrupted by {exc}" if isinstance(exc, Stopped) else "bench interrupted"


class _Processes:
    """Running subprocesses of this bench, so that Ctrl-C (or SIGTERM/SIGHUP) can stop them all."""

    def __init__(self):
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen] = set()
        self.stopping = False
        self.reason = "bench interrupted"

    def add(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.add(proc)

    def discard(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.discard(proc)

    def stop_all(self, reason: str = "bench interrupted") -> None:
        self.reason = reason
        self.stopping = True
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)


def share_niceness(pid: int, proc_root: Path = Path("/proc")) -> None:
    """Give run ``pid``'s scheduling group bench's own niceness.

    A run starts in a session of its own (so that stopping it stops its env workers). On Linux
    with autogroups, a session is a scheduling group of its own, and the nice value the run
    inherited only ranks it within that group: ``nice pymarl-nonmono bench`` would leave its runs
    competing at full weight with every other session. Without autogroups (other kernels, other
    systems) the inherited nice value applies and there is nothing to do."""
    niceness = os.nice(0)
    if niceness <= 0:
        return
    with contextlib.suppress(OSError):
        (proc_root / str(pid) / "autogroup").write_text(str(niceness))


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    # The run's own process group: PyMARL2's parallel runner has child processes.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


# --------------------------------------------------------------------------- resuming

#: Statuses of an attempt that ended without finishing, through no fault of its own: continued
#: from its last checkpoint when there is one. A FAILED attempt starts over (its checkpoints
#: may hold what made it fail).
RESUMABLE = (INTERRUPTED, RUNNING, SUBMITTED)
#: The host's run.py, when it saves a checkpoint (save_model=True), relative to the checkout.
_SAVING_RE = re.compile(r"Saving models to (\S+)\s*$", re.M)


@dataclass(frozen=True)
class Checkpoint:
    folder: Path  # the run's models folder (``checkpoint_path``): one sub-folder per saved step
    step: int     # the newest step whose save is complete (``load_step``)


def _complete(step_dir: Path, like: Path) -> bool:
    """A save is complete when it holds every file the run's first save holds (a stop during a
    stock learner's save can leave a folder part-written; ours are written all or nothing)."""
    try:
        names = {p.name for p in step_dir.iterdir() if not p.name.startswith(".")}
        first = {p.name for p in like.iterdir() if not p.name.startswith(".")}
    except OSError:
        return False
    return bool(first) and first <= names


def last_checkpoint(log_text: str, host: Path) -> Optional[Checkpoint]:
    """The newest complete checkpoint an attempt announced in its output, if any is left on disk."""
    found = _SAVING_RE.findall(log_text)
    if not found:
        return None
    folder = Path(found[-1].strip())
    folder = (folder if folder.is_absolute() else Path(host) / folder).parent
    try:
        steps = sorted((int(p.name), p) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())
    except OSError:
        return None
    if not steps:
        return None
    for step, path in reversed(steps):
        if _complete(path, steps[0][1]):
            return Checkpoint(folder, step)
    return None


def resume_point(previous: Optional[Mapping], log_path: Path, host: Path) -> Optional[Checkpoint]:
    """Where a new attempt of a run continues: the last complete checkpoint of the previous
    attempt, when that attempt was interrupted or left running by a bench or job that is gone."""
    if not previous or previous.get("status") not in RESUMABLE:
        return None
    return last_checkpoint(_tail(log_path, limit=10_000_000), host)


def resume_arguments(point: Checkpoint) -> list[str]:
    """``with`` arguments that make the host's run.py load ``point`` and continue from its step;
    ``sweep_resume_step`` tells ``report`` to join the attempts into one curve."""
    return [f"checkpoint_path={point.folder}", f"load_step={point.step}", f"sweep_resume_step={point.step}"]


def _keep_previous_log(log_path: Path, attempt: int) -> Optional[str]:
    if not log_path.exists():
        return None
    kept = log_path.with_name(f"{log_path.stem}.attempt{attempt}{log_path.suffix}")
    os.replace(log_path, kept)
    return str(kept)


def _attempt_record(state: Mapping) -> dict:
    keys = ("started", "ended", "status", "error", "sacred_id", "results_dir", "resumed_from", "log", "seconds", "code")
    record = {k: state[k] for k in keys if k in state}
    if record.get("status") in (RUNNING, SUBMITTED):
        record["status"] = LOST
    return record


def run_one(run: RunSpec, ctx: Context, env_extra: Optional[Mapping[str, str]] = None,
            processes: Optional[_Processes] = None, job_id: Optional[str] = None) -> dict:
    """Run one host run to its end; write and return its state.

    An earlier attempt that was interrupted (or left running by a bench or job that is gone) and
    saved checkpoints is continued from its newest complete one (:func:`resume_point`); its log is
    kept beside the new one as ``<key>.attemptN.log`` and its record under ``attempts``."""
    state_path, log_path = ctx.state_path(run), ctx.log_path(run)
    command = ctx.command(run)
    previous = read_state(state_path)
    attempts = list((previous or {}).get("attempts", []))
    point = resume_point(previous, log_path, Path(ctx.host))
    if previous and previous.get("status") != COMPLETED:
        kept = _keep_previous_log(log_path, len(attempts) + 1)
        attempts.append({**_attempt_record(previous), **({"log": kept} if kept else {})})
    if point is not None:
        command = command + resume_arguments(point)
    state = {
        "key": run.key, "sweep_id": run.sweep_id, "alg": run.alg.label, "env": run.env.label, "seed": run.seed,
        "command": command, "identity": identity(run), "status": RUNNING, "started": _now(), "hostname": socket.gethostname(),
        "pid": os.getpid(), "log": str(log_path),
    }
    if ctx.code is not None:
        state["code"] = ctx.code
    if attempts:
        state["attempts"] = attempts
    if point is not None:
        state["resumed_from"] = {"checkpoint": str(point.folder), "step": point.step}
    if job_id:
        state["job_id"] = job_id
    write_state(state_path, state)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    begin = time.monotonic()
    returncode: Optional[int] = None
    timed_out = False
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([ctx.python, *command], cwd=ctx.host, env=_run_env(ctx, env_extra),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        share_niceness(proc.pid)
        if processes is not None:
            processes.add(proc)
        try:
            returncode = proc.wait(timeout=ctx.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _signal_group(proc, signal.SIGTERM)
            try:
                returncode = proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                returncode = proc.wait()
        except BaseException:
            _signal_group(proc, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(STOP_GRACE_S)
            _signal_group(proc, signal.SIGKILL)
            state.update(status=INTERRUPTED, ended=_now(), error="bench interrupted")
            write_state(state_path, state)
            raise
        finally:
            if processes is not None:
                processes.discard(proc)
    head = _head(log_path)
    state["seconds"] = round(time.monotonic() - begin, 1)
    state["returncode"] = returncode
    state["ended"] = _now()
    if (m := _STARTED_RE.search(head)):
        state["sacred_id"] = m.group(1)
        if (f := _FILES_RE.search(head)):
            state["results_dir"] = str(Path(f.group(1).strip()) / m.group(1))
    if processes is not None and processes.stopping:
        state.update(status=INTERRUPTED, error=processes.reason)
    elif timed_out:
        state.update(status=FAILED, error=f"timed out after {ctx.timeout_s:g} s")
    elif returncode == 0:
        state["status"] = COMPLETED
    elif returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        state.update(status=FAILED, error=f"ended by {name}; last output: {error_line(_tail(log_path))}")
    else:
        state.update(status=FAILED, error=error_line(_tail(log_path)))
    write_state(state_path, state)
    return state


def submitted_job(run: RunSpec, ctx: Context) -> dict:
    """A submitit job's body (runs on the cluster node; picklable by reference)."""
    job_id = None
    with contextlib.suppress(Exception):
        import submitit

        job_id = str(submitit.JobEnvironment().job_id)
    return run_one(run, ctx, job_id=job_id)


# --------------------------------------------------------------------------- executors


OnEvent = Callable[[RunSpec, dict], None]


_T_ENV_RE = re.compile(r"t_env: (\d+) / (\d+)")


def run_progress(log_path: Path) -> Optional[tuple[int, int]]:
    """``(t_env, t_max)`` of the last progress line the host's run.py wrote to a run's log."""
    found = _T_ENV_RE.findall(_tail(Path(log_path), limit=20_000))
    return (int(found[-1][0]), int(found[-1][1])) if found else None


OnTick = Callable[[Sequence[RunSpec]], None]
TICK_SECONDS = 2.0


def run_local(runs: Sequence[RunSpec], ctx: Context, workers: int, env_extra: Optional[Mapping[str, str]] = None,
              on_done: Optional[OnEvent] = None, on_tick: Optional[OnTick] = None) -> list[dict]:
    """Run ``runs`` with at most ``workers`` at a time; Ctrl-C stops them all (state INTERRUPTED).

    So do SIGTERM and SIGHUP within :func:`stop_on_signals`. ``on_tick`` is called every
    :data:`TICK_SECONDS` with the runs in progress (for a display of their progress).
    """
    processes = _Processes()
    results: list[dict] = []
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="bench")
    futures: dict[Future, RunSpec] = {}
    try:
        for run in runs:
            futures[pool.submit(run_one, run, ctx, env_extra, processes)] = run
        pending = set(futures)
        last_tick = 0.0
        while pending:
            finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            if on_tick and time.monotonic() - last_tick >= TICK_SECONDS:
                last_tick = time.monotonic()
                on_tick([futures[f] for f in pending if f.running()])
            for future in finished:
                run = futures[future]
                try:
                    state = future.result()
                except Exception as exc:  # the bench's own failure (e.g. cannot write the log), not the run's
                    state = {"key": run.key, "status": FAILED, "error": f"bench could not run it: {exc}",
                             "command": ctx.command(run)}
                    write_state(ctx.state_path(run), state)
                results.append(state)
                if on_done:
                    on_done(run, state)
    except BaseException as exc:
        for future in futures:
            future.cancel()
        processes.stop_all(interrupted_error(exc))
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return results


@contextlib.contextmanager
def _environ(extra: Mapping[str, str]) -> Iterator[None]:
    # submitit's local jobs and sbatch inherit the submitting process's environment; the
    # URL goes that way instead of into the pickled job.
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def import_submitit():
    try:
        import submitit
    except ImportError:
        raise MissingDependency("the cluster executors need submitit: pip install submitit") from None
    return submitit


def run_submitit(runs: Sequence[RunSpec], ctx: Context, cluster: str, workers: Optional[int],
                 parameters: Mapping[str, object], env_extra: Optional[Mapping[str, str]] = None,
                 on_done: Optional[OnEvent] = None, poll_s: float = 2.0) -> list[dict]:
    """Run ``runs`` as submitit jobs on ``cluster`` ("slurm", or "local" for one machine).

    At most ``workers`` jobs are out at a time (SLURM: the array's parallelism; local:
    jobs are submitted as earlier ones end, since submitit's local executor starts each
    job at once).
    """
    submitit = import_submitit()
    folder = Path(ctx.sweep_dir) / "submitit"
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params = {k: v for k, v in parameters.items() if v is not None}
    if cluster == "slurm" and workers:
        params["slurm_array_parallelism"] = workers
    executor.update_parameters(**params)
    limit = len(runs) if cluster == "slurm" else max(1, workers or 1)
    queue = list(runs)
    active: dict[object, RunSpec] = {}
    results: list[dict] = []

    def submit(batch: list[RunSpec]) -> None:
        with _environ(dict(env_extra or {})):
            if len(batch) > 1:
                with executor.batch():
                    jobs = [executor.submit(submitted_job, run, ctx) for run in batch]
            else:
                jobs = [executor.submit(submitted_job, run, ctx) for run in batch]
        for job, run in zip(jobs, batch):
            active[job] = run
            write_state(ctx.state_path(run), {"key": run.key, "status": SUBMITTED, "job_id": str(job.job_id),
                                              "command": ctx.command(run), "submitted": _now(),
                                              "log": str(ctx.log_path(run))})
            log.info("submitted %s as job %s", run.key, job.job_id)

    try:
        while queue or active:
            room = limit - len(active)
            if queue and room > 0:
                batch, queue = queue[:room], queue[room:]
                submit(batch)
            time.sleep(poll_s)
            for job in [j for j in active if j.done()]:
                run = active.pop(job)
                try:
                    state = job.result()
                    # The job wrote this itself, but our SUBMITTED record may have landed after it.
                    write_state(ctx.state_path(run), state)
                except Exception as exc:
                    text = str(exc).strip().splitlines()
                    state = read_state(ctx.state_path(run)) or {"key": run.key, "command": ctx.command(run)}
                    state.update(status=FAILED, job_id=str(job.job_id),
                                 error=f"submitit job {job.job_id} failed: {(text[-1] if text else type(exc).__name__)[:400]}")
                    write_state(ctx.state_path(run), state)
                results.append(state)
                if on_done:
                    on_done(run, state)
    except BaseException as exc:
        for job, run in active.items():
            with contextlib.suppress(Exception):
                job.cancel(check=False)
            state = read_state(ctx.state_path(run)) or {"key": run.key, "command": ctx.command(run)}
            state.update(status=INTERRUPTED, error=f"{interrupted_error(exc)}; job {job.job_id} cancelled")
            write_state(ctx.state_path(run), state)
        raise
    return results
