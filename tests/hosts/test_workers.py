"""An env worker's error stops the main process waiting on its pipe, with the error in one
line, instead of leaving it waiting for good (the parallel runner's protocol, in miniature)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

SCRIPT = textwrap.dedent("""
    import multiprocessing, sys
    from pymarl_nonmono.hosts.pymarl_family.workers import reporting_env_factory, stop_when_an_env_worker_fails

    class Env:
        def __init__(self, fail_in):
            self.fail_in = fail_in
            if fail_in == "init":
                raise RuntimeError("cannot start")

        def step(self):
            if self.fail_in == "step":
                raise ValueError("bad action 7")
            return "stepped"

    def worker(remote, fail_in):
        # PyMARL2's env_worker: build the env, then answer commands over the pipe.
        env = reporting_env_factory(Env)(fail_in=fail_in)
        while True:
            remote.recv()
            remote.send(env.step())

    if __name__ == "__main__":
        if sys.argv[2] == "watch":
            stop_when_an_env_worker_fails()
        fork = multiprocessing.get_context("fork")
        parent, child = fork.Pipe()  # the parent keeps both ends, as the runner does
        fork.Process(target=worker, args=(child, sys.argv[1]), daemon=True).start()
        parent.send("step")
        print(parent.recv(), flush=True)
""")


def run(tmp_path, fail_in, watch="watch", timeout=30):
    script = tmp_path / "workers.py"
    script.write_text(SCRIPT)
    return subprocess.run([sys.executable, str(script), fail_in, watch], capture_output=True, text=True,
                          timeout=timeout)


def test_a_worker_that_cannot_build_its_env_stops_the_main_process_with_its_error(tmp_path):
    start = time.monotonic()
    proc = run(tmp_path, "init")
    assert time.monotonic() - start < 20
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == ["pymarl-nonmono: an env worker failed: RuntimeError: cannot start"]


def test_an_error_in_an_env_method_stops_it_too(tmp_path):
    proc = run(tmp_path, "step")
    assert proc.returncode == 1
    assert "pymarl-nonmono: an env worker failed: ValueError: bad action 7" in proc.stderr
    assert "Traceback" not in proc.stderr  # the worker ends quietly; the main process says it once


def test_a_working_env_answers_as_before(tmp_path):
    proc = run(tmp_path, "never")
    assert proc.returncode == 0 and proc.stdout.strip() == "stepped"


def test_without_the_watch_the_main_process_waits_for_good(tmp_path):
    # What the hosts did: the reason the watch exists.
    try:
        run(tmp_path, "init", watch="off", timeout=5)
    except subprocess.TimeoutExpired:
        return
    raise AssertionError("the main process did not wait")
