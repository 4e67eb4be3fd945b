"""Running a sweep on a stand-in PyMARL2 (tests/bench/conftest.py): workers, states, resume, submitit."""

import importlib.util
import json
import re
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pymarl_nonmono import cli
from pymarl_nonmono.bench import launch
from pymarl_nonmono.bench.runner import (
    COMPLETED, FAILED, INTERRUPTED, LOST, RUNNING, Context, error_line, identity, plan, read_state, run_local,
    run_submitit, write_state,
)
from pymarl_nonmono.bench.spec import build_sweep

SECRET_URL = "mongodb://alice:s3cr3t-pw@127.0.0.1:1/"


def probes(tmp_path):
    return {p.stem: json.loads(p.read_text()) for p in (tmp_path / "probe").glob("*.json")}


def max_overlap(intervals):
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    level = best = 0
    for _, step in events:
        level += step
        best = max(best, level)
    return best


def make(fake_host, tmp_path, seeds="1-4", sets=("sleep=0.4", "fail_seed=3"), algs=("qmix",)):
    sweep = build_sweep(algs=list(algs), envs=["one_step_matrix_game"], seeds=seeds, sets=list(sets), name="t")
    ctx = Context(host=str(fake_host), sweep_dir=str(tmp_path / "sweep"), mongo_db="bench", threads=1)
    return sweep, ctx


def test_local_workers_states_logs_and_errors(fake_host, tmp_path):
    sweep, ctx = make(fake_host, tmp_path)
    seen = []
    results = run_local(sweep.runs(), ctx, workers=2, env_extra={"PYMARL_NONMONO_MONGO_URL": SECRET_URL},
                        on_done=lambda run, state: seen.append((run.key, state["status"])))
    assert sorted(seen) == [("qmix__one_step_matrix_game__seed1", COMPLETED), ("qmix__one_step_matrix_game__seed2", COMPLETED),
                            ("qmix__one_step_matrix_game__seed3", FAILED), ("qmix__one_step_matrix_game__seed4", COMPLETED)]
    assert len(results) == 4
    runs = probes(tmp_path)
    assert max_overlap([(p["start"], p["end"]) for p in runs.values()]) == 2
    assert all(p["mongo"] == SECRET_URL and p["omp"] == "1" for p in runs.values())  # through the environment only
    # PyMARL2 imports pygame on every run; any value hides its banner (gymnasium sets "hide" on import).
    assert all(p["pygame_banner"] for p in runs.values())
    state = read_state(ctx.state_path(sweep.runs()[2]))
    assert state["status"] == FAILED and state["error"] == "RuntimeError: boom on seed 3" and state["returncode"] == 1
    ok = read_state(ctx.state_path(sweep.runs()[0]))
    assert ok["sacred_id"] == "1" and ok["results_dir"] == "/fake/results/sacred/one_step_matrix_game/qmix/1"
    assert ok["command"][-1] == "mongo_db=bench" and "seed=1" in ok["command"]
    assert Path(ok["log"]).read_text().count("Started run") == 1
    assert "s3cr3t" not in "".join(p.read_text() for p in Path(ctx.sweep_dir).rglob("*") if p.is_file())


def test_resume_skips_finished_retries_failed_and_reruns_changed(fake_host, tmp_path):
    sweep, ctx = make(fake_host, tmp_path, seeds="1-3", sets=("sleep=0.1", "fail_seed=3"))
    run_local(sweep.runs(), ctx, workers=2)
    again = plan(sweep.runs(), ctx)
    assert [r.seed for r, _ in again.done] == [1, 2] and [r.seed for r in again.todo] == [3]
    assert [r.seed for r, _ in again.retry] == [3]
    # Where runs report to does not make a finished run unfinished...
    other_dest = Context(host=ctx.host, sweep_dir=ctx.sweep_dir, mongo_off=True)
    assert len(plan(sweep.runs(), other_dest).done) == 2
    # ...but changed settings do.
    changed, _ = make(fake_host, tmp_path, seeds="1-3", sets=("sleep=0.2", "fail_seed=3"))
    assert len(plan(changed.runs(), ctx).todo) == 3


def test_running_state_alive_here_is_left_alone_dead_is_rerun(fake_host, tmp_path):
    sweep, ctx = make(fake_host, tmp_path, seeds="1-3")
    r1, r2, r3 = sweep.runs()
    import socket

    write_state(ctx.state_path(r1), {"status": RUNNING, "hostname": socket.gethostname(), "pid": os.getpid()})
    write_state(ctx.state_path(r2), {"status": RUNNING, "hostname": socket.gethostname(), "pid": 2 ** 22 + 12345})
    write_state(ctx.state_path(r3), {"status": "SUBMITTED", "job_id": "99"})
    p = plan(sweep.runs(), ctx)
    assert [r.seed for r, _ in p.elsewhere] == [1, 3] and [r.seed for r in p.todo] == [2]
    assert len(plan(sweep.runs(), ctx, restart_stale=True).todo) == 3


def interrupt(ctx, run, status=INTERRUPTED):
    """What a stopped bench leaves of a run: its state file, marked as not finished."""
    state = read_state(ctx.state_path(run))
    state.update(status=status, error="bench interrupted")
    write_state(ctx.state_path(run), state)


@pytest.mark.parametrize("partial", [False, True])
def test_an_interrupted_run_continues_from_its_last_complete_checkpoint(fake_host, tmp_path, partial):
    if partial:
        (tmp_path / "probe" / "partial-save").write_text("")
    sweep, ctx = make(fake_host, tmp_path, seeds="1", sets=("sleep=0.1", "save_model=True"))
    (run,) = sweep.runs()
    (first,) = run_local([run], ctx, workers=1)
    assert "checkpoint_path" not in " ".join(first["command"]) and "attempts" not in first
    interrupt(ctx, run)
    (second,) = run_local([run], ctx, workers=1)
    step = 20 if partial else 30  # the newest save that holds every file
    folder = Path(second["resumed_from"]["checkpoint"])
    assert second["resumed_from"]["step"] == step and folder.parent == fake_host / "results" / "models"
    assert second["command"][-3:] == [f"checkpoint_path={folder}", f"load_step={step}", f"sweep_resume_step={step}"]
    assert probes(tmp_path)["qmix-1"]["argv"][-3:] == second["command"][-3:]
    # The same run: the identity that skips it once finished leaves the resume arguments out.
    assert second["identity"] == first["identity"] and plan([run], ctx).done
    (attempt,) = second["attempts"]
    assert attempt["status"] == INTERRUPTED and attempt["sacred_id"] == "1"
    assert Path(attempt["log"]).name == "qmix__one_step_matrix_game__seed1.attempt1.log"
    assert "Saving models to" in Path(attempt["log"]).read_text()
    # A second interruption continues from the resumed attempt's own checkpoints.
    interrupt(ctx, run, status=RUNNING)
    (third,) = run_local([run], ctx, workers=1)
    assert third["resumed_from"]["step"] == step + (20 if partial else 30)
    # The record of an attempt whose bench died says so, not RUNNING forever.
    assert [a["status"] for a in third["attempts"]] == [INTERRUPTED, LOST]


def test_a_failed_run_or_one_without_checkpoints_starts_over(fake_host, tmp_path):
    sweep, ctx = make(fake_host, tmp_path, seeds="1-2", sets=("sleep=0.1", "save_model=True"))
    r1, r2 = sweep.runs()
    run_local([r1], ctx, workers=1)
    interrupt(ctx, r1, status=FAILED)  # what made it fail may be in its checkpoints
    (state,) = run_local([r1], ctx, workers=1)
    assert "resumed_from" not in state and state["attempts"][0]["status"] == FAILED
    plain, ctx2 = make(fake_host, tmp_path / "other", seeds="1", sets=("sleep=0.1",))
    (run,) = plain.runs()
    run_local([run], ctx2, workers=1)
    interrupt(ctx2, run)
    (state,) = run_local([run], ctx2, workers=1)
    assert "resumed_from" not in state and "checkpoint_path" not in " ".join(state["command"])


def test_a_labelled_variant_gets_a_results_folder_of_its_own_without_changing_which_runs_are_done(fake_host, tmp_path):
    sweep = build_sweep(algs=["qmix", "qmix:qmix_fast"], envs=["one_step_matrix_game"], seeds="1",
                        sets=["sleep=0.1"], name="v")
    ctx = Context(host=str(fake_host), sweep_dir=str(tmp_path / "sweep"))
    plain, variant = sweep.runs()
    assert not any(a.startswith("name=") for a in ctx.command(plain))
    assert ctx.command(variant)[-1] == "name=qmix_fast" and "name=qmix_fast" not in " ".join(identity(variant))
    # A run finished before variants got their folder (same command but the name) stays finished.
    write_state(ctx.state_path(variant), {"status": COMPLETED, "identity": identity(variant)})
    assert [r.key for r, _ in plan([variant], ctx).done] == [variant.key]
    named = build_sweep(algs=["qmix:qmix_fast name=mine"], envs=["one_step_matrix_game"], seeds="1", name="w")
    assert named.runs()[0].folder_args() == []


def test_timeout(fake_host, tmp_path):
    sweep, ctx = make(fake_host, tmp_path, seeds="1", sets=("sleep=30",))
    ctx.timeout_s = 0.5
    (state,) = run_local(sweep.runs(), ctx, workers=1)
    assert state["status"] == FAILED and state["error"] == "timed out after 0.5 s"


def test_error_line():
    assert error_line("a\nTraceback\n  File x\nKeyError: 'one_step'\n[INFO] bye\n") == "KeyError: 'one_step'"
    assert error_line("x\npymarl-nonmono: cannot run env=sc2: ...\n") == "pymarl-nonmono: cannot run env=sc2: ..."
    assert error_line("") == "no output"
    # What a run whose env workers failed leaves last (hosts/pymarl_family/workers.py): the cause.
    worker = "pymarl-nonmono: an env worker failed: RuntimeError: this env cannot start"
    assert error_line(f"[ERROR 13:59:10] pymarl Failed after 0:00:00!\n{worker}\n") == worker
    assert error_line("just this\n") == "just this"


def test_submitit_local_executor_path(fake_host, tmp_path, monkeypatch):
    pytest.importorskip("submitit", reason="submitit is not installed (pip install submitit)")
    monkeypatch.delenv("PYMARL_NONMONO_MONGO_URL", raising=False)
    sweep, ctx = make(fake_host, tmp_path, seeds="1-3", sets=("sleep=0.5", "fail_seed=2"))
    done = []
    results = run_submitit(sweep.runs(), ctx, "local", 2, {"timeout_min": 5}, {"PYMARL_NONMONO_MONGO_URL": SECRET_URL},
                           on_done=lambda run, state: done.append(run.seed), poll_s=0.2)
    assert sorted(done) == [1, 2, 3]
    by_seed = {s["seed"]: s for s in results}
    assert by_seed[1]["status"] == by_seed[3]["status"] == COMPLETED and by_seed[1]["job_id"]
    assert by_seed[2]["status"] == FAILED and by_seed[2]["error"] == "RuntimeError: boom on seed 2"
    runs = probes(tmp_path)
    assert all(p["mongo"] == SECRET_URL for p in runs.values())
    assert max_overlap([(p["start"], p["end"]) for p in runs.values()]) <= 2
    assert "PYMARL_NONMONO_MONGO_URL" not in os.environ  # restored after submitting
    for path in Path(ctx.sweep_dir).rglob("*"):
        if path.is_file():
            assert b"s3cr3t" not in path.read_bytes(), path  # not in the pickled jobs either


# --------------------------------------------------------------------------- the command


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_sweep_then_resume(cli_host, tmp_path, capsys):
    base = ["bench", str(cli_host), "--alg", "qmix,vdn", "--env", "one_step_matrix_game", "--seeds", "1-2",
            "--set", "sleep=0.1", "--workers", "2", "--name", "s1"]
    (tmp_path / "probe" / "fail-seed2").write_text("")  # seed 2 fails, the settings say nothing of it
    code, out, err = run_cli(capsys, *base, "--no-progress")
    assert code == 1, out + err
    assert "sweep s1: 2 algorithms x 1 environment x 2 seeds = 4 runs; 0 finished, 4 to run (2 workers, local)" in out
    assert "MongoDB: none (FileStorage only)" in out
    assert "done: 2 completed, 2 failed now; 2 of 4 runs of sweep s1 finished" in out
    assert "  qmix__one_step_matrix_game__seed2: RuntimeError: boom on seed 2 (log: " in out
    assert f"report: pymarl-nonmono report {cli_host} --sweep s1" in out
    sweep_json = json.loads((cli_host / "results" / "sweeps" / "s1" / "sweep.json").read_text())
    assert sweep_json["seeds"] == [1, 2] and sweep_json["mongo"] is None
    assert all("mongo_url=off" in p["argv"] for p in probes(tmp_path).values())

    # The same sweep runs its failed runs again.
    (tmp_path / "probe" / "fail-seed2").unlink()
    code, out, _ = run_cli(capsys, *base, "--no-progress")
    assert "2 finished, 2 to run" in out and code == 0
    assert "again: qmix__one_step_matrix_game__seed2 (FAILED: RuntimeError: boom on seed 2)" in out
    # The sweep's name is bound to its settings: other settings under it are refused, nothing runs.
    code, out, err = run_cli(capsys, *base, "--set", "fail_seed=3", "--no-progress")
    assert code == 2 and "sweep 's1' was run with other settings" in err and "--name" in err, err
    # ...naming only what changed, not the whole settings.
    assert "set: fail_seed: '<unset>' -> '3'" in err and "sleep" not in err, err
    # More seeds are fine, and so is running some of the entries.
    code, out, err = run_cli(capsys, *base, "--seeds", "3", "--only", "vdn", "--no-progress")
    assert code == 0 and "1 algorithm x 1 environment x 1 seed = 1 run; 0 finished, 1 to run" in out, out + err
    assert json.loads((cli_host / "results" / "sweeps" / "s1" / "sweep.json").read_text())["seeds"] == [1, 2, 3]
    with_bar = [] if importlib.util.find_spec("tqdm") else ["--no-progress"]
    code, out, err = run_cli(capsys, *base, *with_bar)
    assert "4 finished, 0 to run" in out and code == 0 and "done: 0 completed, 0 failed now; 4 of 4" in out


def test_cli_dry_run_shows_commands_and_runs_nothing(cli_host, tmp_path, capsys):
    code, out, _ = run_cli(capsys, "bench", str(cli_host), "--alg", "qmix", "--env", "sc2 env_args.map_name=8m",
                           "--seeds", "4", "--dry-run")
    assert code == 0
    assert "would run: (cd" in out and "--config=qmix --env-config=sc2 with env_args.map_name=8m seed=4" in out
    assert "sweep_env=8m" in out and not any((tmp_path / "probe").iterdir())


@pytest.mark.parametrize("argv,needle", [
    (["--alg", "qmx", "--env", "one_step_matrix_game", "--seeds", "1"], "unknown algorithm config(s) 'qmx' (did you mean 'qmix'?)"),
    (["--alg", "qmix", "--env", "sc3", "--seeds", "1"], "unknown environment config(s) 'sc3' (did you mean 'sc2'?)"),
    (["--alg", "qmix", "--env", "sc2"], "empty sweep: no seeds"),
    (["--seeds", "1"], "bench needs a sweep"),
    (["--alg", "qmix", "--env", "sc2", "--seeds", "1", "--mongo-url", "mongodb://alice:s3cr3t-pw@h:70000"],
     "--mongo-url: malformed MongoDB URL mongodb://***@h:70000: port '70000' is not in 1..65535"),
    (["--alg", "qmix", "--env", "sc2", "--seeds", "1", "--mongo-url", SECRET_URL],
     "cannot reach MongoDB at mongodb://***@127.0.0.1:1/ (--mongo-url) within 3 s"),
    (["--alg", "qmix", "--env", "sc2", "--seeds", "1", "--set", "t_maxx=1"], "did you mean 't_max'?"),
    (["--alg", "qmix", "--env", "sc2", "--seeds", "1", "--workers", "0"], "--workers must be at least 1"),
    # Values of keys stock algorithms read too, checked for them as for ours.
    (["--alg", "qmix", "--env", "sc2", "--seeds", "1", "--set", "batch_size=0"], "batch_size=0 must be an integer >= 1"),
    (["--alg", "qmix", "--env", "sc2", "--seeds", "1", "--set", "buffer_size=64"],
     "buffer_size=64 holds fewer episodes than batch_size=128: the learner would never get a batch"),
])
def test_cli_bad_input_fails_before_anything_runs(cli_host, tmp_path, capsys, argv, needle):
    code, out, err = run_cli(capsys, "bench", str(cli_host), *argv)
    assert code == 2 and needle in err, err
    assert err.startswith("pymarl-nonmono: error: ") and err.count("\n") == 1
    assert "s3cr3t" not in out + err
    assert not any((tmp_path / "probe").iterdir()) and not (cli_host / "results").exists()


def test_runs_our_start_up_check_stopped_are_not_offered_for_retry(cli_host, tmp_path, capsys):
    (tmp_path / "probe" / "refuse-seed2").write_text("")
    code, out, _ = run_cli(capsys, "bench", str(cli_host), "--alg", "qmix", "--env", "one_step_matrix_game",
                           "--seeds", "1-3", "--set", "sleep=0.1", "--set", "fail_seed=3", "--name", "refused",
                           "--no-progress")
    assert code == 1
    retry, refused = out.split("failed runs (run bench again to retry them):")[1].split(
        "runs stopped at start-up by our checks (fix what the message names, then run bench again):")
    assert "seed3: RuntimeError: boom on seed 3" in retry and "seed2" not in retry
    assert "seed2: pymarl-nonmono: cannot run env=sc2: StarCraft II is not installed (test)" in refused


def test_cli_credentials_in_a_sweep_file_are_refused(cli_host, tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(f"algs: [qmix]\nenvs: [sc2]\nseeds: [1]\nmongo_url: {SECRET_URL}\n")
    code, _, err = run_cli(capsys, "bench", str(cli_host), "--sweep", str(path))
    assert code == 2 and "carries a user, password" in err and "s3cr3t" not in err


def test_cli_missing_optional_packages_are_named(cli_host, capsys, monkeypatch):
    import sys

    base = ["bench", str(cli_host), "--alg", "qmix", "--env", "sc2", "--seeds", "1"]
    monkeypatch.setitem(sys.modules, "tqdm", None)
    code, _, err = run_cli(capsys, *base)
    assert code == 2 and "pip install tqdm (or pass --no-progress)" in err
    monkeypatch.setitem(sys.modules, "submitit", None)
    code, _, err = run_cli(capsys, *base, "--no-progress", "--executor", "slurm")
    assert code == 2 and "pip install submitit" in err


# --------------------------------------------------------------------------- signals


DRIVER = """
import sys
from pathlib import Path
from pymarl_nonmono import cli
from pymarl_nonmono.bench import launch
from pymarl_nonmono.hosts.spec import PYMARL2
launch.check_host = lambda path, host=None: (Path(path), PYMARL2)  # the stand-in has no patches to check, as in cli_host
sys.exit(cli.main(sys.argv[1:]))
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_sighup_stops_the_runs_and_marks_them_interrupted(cli_host, tmp_path, capsys, sig):
    driver = tmp_path / "drive.py"
    driver.write_text(DRIVER)
    argv = ["bench", str(cli_host), "--alg", "qmix", "--env", "one_step_matrix_game", "--seeds", "1",
            "--name", "sig", "--no-progress"]
    (tmp_path / "probe" / "sleep").write_text("120")
    bench = subprocess.Popen([sys.executable, str(driver), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid_file = tmp_path / "probe" / "qmix-1.pid"
    run_pid = None
    try:
        for _ in range(600):  # the run has started once its pid is written
            if pid_file.is_file() and pid_file.read_text():
                run_pid = int(pid_file.read_text())
                break
            assert bench.poll() is None, bench.communicate()
            time.sleep(0.1)
        assert run_pid is not None
        bench.send_signal(sig)
        out, err = bench.communicate(timeout=120)
        assert bench.returncode == 128 + sig, out + err
        assert f"interrupted by {sig.name}" in err and "Traceback" not in err
        assert not _alive(run_pid)  # stopped with the bench, not left training as an orphan
    finally:
        if bench.poll() is None:
            bench.kill()
        if run_pid is not None and _alive(run_pid):
            os.killpg(run_pid, signal.SIGKILL)
    state = read_state(cli_host / "results" / "sweeps" / "sig" / "runs" / "qmix__one_step_matrix_game__seed1.json")
    assert state["status"] == INTERRUPTED and state["error"] == f"bench interrupted by {sig.name}"

    (tmp_path / "probe" / "sleep").write_text("0.1")
    code, out, _ = run_cli(capsys, *argv)
    assert code == 0
    assert f"again: qmix__one_step_matrix_game__seed1 (INTERRUPTED: bench interrupted by {sig.name})" in out


def test_a_run_left_running_by_a_dead_bench_is_rerun_saying_so(cli_host, capsys):
    argv = ["bench", str(cli_host), "--alg", "qmix", "--env", "one_step_matrix_game", "--seeds", "1",
            "--name", "dead", "--no-progress", "--set", "sleep=0.1"]
    path = cli_host / "results" / "sweeps" / "dead" / "runs" / "qmix__one_step_matrix_game__seed1.json"
    write_state(path, {"status": RUNNING, "hostname": socket.gethostname(), "pid": 2 ** 22 + 12345})
    code, out, _ = run_cli(capsys, *argv)
    assert code == 0 and "1 to run" in out
    assert "again: qmix__one_step_matrix_game__seed1 (RUNNING: left by an earlier bench or job" in out


def test_run_progress_reads_the_last_progress_line_of_a_log(tmp_path):
    from pymarl_nonmono.bench.runner import run_progress

    log = tmp_path / "run.log"
    log.write_text("[INFO] my_main t_env: 352 / 60000\nstuff\n[INFO] my_main t_env: 21018 / 60000\n[INFO] more\n")
    assert run_progress(log) == (21018, 60000)
    log.write_text("[INFO] starting\n")
    assert run_progress(log) is None


def test_bench_shows_the_progress_of_running_runs(cli_host, tmp_path, capsys, monkeypatch):
    # The bar moved only when a run finished: a hung run looked like a slow one.
    from pymarl_nonmono.bench import runner

    monkeypatch.setattr(runner, "TICK_SECONDS", 0.1)
    monkeypatch.setattr(cli, "PROGRESS_LINE_SECONDS", 0)
    (tmp_path / "probe" / "sleep").write_text("3")
    code, out, _ = run_cli(capsys, "bench", str(cli_host), "--alg", "qmix", "--env", "one_step_matrix_game",
                           "--seeds", "1", "--name", "live", "--no-progress")
    assert code == 0
    assert re.search(r"running \(0:00:0\d elapsed\): qmix__one_step_matrix_game__seed1 7/100 steps \(7%\)", out), out


def _can_renice_autogroups() -> bool:
    try:
        path = Path("/proc/self/autogroup")
        path.write_text(path.read_text().split("nice")[-1].strip())
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _can_renice_autogroups(),
                    reason="this kernel has no scheduler autogroups (/proc/self/autogroup) or forbids setting them")
def test_a_niced_bench_gives_its_runs_its_niceness(fake_host, tmp_path):
    # Each run is a session of its own, and with autogroups a session is a scheduling group whose
    # weight its members' inherited nice value does not change: `nice pymarl-nonmono bench` would
    # otherwise compete at full weight. A niced bench (a child process here: niceness cannot be
    # undone) runs one fake run that reports its own autogroup.
    sweep_dir = tmp_path / "sweep"
    script = f"""
import os, sys
os.nice(7)
from pymarl_nonmono.bench.runner import Context, run_local
from pymarl_nonmono.bench.spec import build_sweep
sweep = build_sweep(algs=["qmix"], envs=["one_step_matrix_game"], seeds="1", sets=[], name="t")
ctx = Context(host={str(fake_host)!r}, sweep_dir={str(sweep_dir)!r}, mongo_db="bench", threads=1)
run_local(sweep.runs(), ctx, workers=1)
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    expected = min(19, os.nice(0) + 7)  # os.nice adds to the niceness this test itself runs at
    assert [r["autogroup"].split()[-1] for r in probes(tmp_path).values()] == [str(expected)]


def test_an_unniced_bench_leaves_the_scheduler_alone(tmp_path, monkeypatch):
    from pymarl_nonmono.bench.runner import share_niceness

    (tmp_path / "42").mkdir()
    monkeypatch.setattr(os, "nice", lambda increment: 0)
    share_niceness(42, proc_root=tmp_path)
    assert not (tmp_path / "42" / "autogroup").exists()
    monkeypatch.setattr(os, "nice", lambda increment: 5)
    share_niceness(42, proc_root=tmp_path)
    assert (tmp_path / "42" / "autogroup").read_text() == "5"
    share_niceness(43, proc_root=tmp_path)  # no such process: nothing to do, no error
