"""Fixtures: a fake PyMARL2 checkout whose main.py only pretends to train."""

import pytest

FAKE_MAIN = r'''
"""Stands in for PyMARL2's src/main.py: prints what the bench parses, sleeps, may fail."""
import json, os, sys, time

args = sys.argv[1:]
updates = dict(a.split("=", 1) for a in args[args.index("with") + 1:])
probe = os.environ["FAKE_PROBE_DIR"]
seed, alg = updates["seed"], updates["sweep_alg"]
start = time.time()
print("[INFO] root Saving to FileStorageObserver in /fake/results/sacred/%s/%s." % (updates["sweep_env"], alg))
print('[INFO] pymarl Started run with ID "%s"' % seed, flush=True)
with open(os.path.join(probe, "%s-%s.pid" % (alg, seed)), "w") as f:  # for tests that signal the bench
    f.write(str(os.getpid()))
print("[INFO 12:00:00] my_main t_env: 7 / %s" % updates.get("t_max", "100"), flush=True)  # as run.py logs progress
if updates.get("save_model") == "True":  # checkpoints as run.py saves them, one folder per step
    token = "%s_seed%s__%d" % (alg, seed, time.time_ns())
    first = int(updates.get("load_step", "0")) + 10
    for step in range(first, first + 30, 10):
        folder = os.path.join("results", "models", token, str(step))
        os.makedirs(folder)
        print("[INFO 12:00:01] my_main Saving models to %s" % folder, flush=True)
        names = ["agent.th", "learner.th"]
        if step == first + 20 and os.path.exists(os.path.join(probe, "partial-save")):
            names = names[:1]  # stopped in the middle of a (stock learner's) save
        for name in names:
            open(os.path.join(folder, name), "w").close()
sleep_file = os.path.join(probe, "sleep")  # a delay that is no setting of the sweep
time.sleep(float(open(sleep_file).read() if os.path.exists(sleep_file) else updates.get("sleep", "0.3")))
with open(os.path.join(probe, "%s-%s.json" % (alg, seed)), "w") as f:
    json.dump({"start": start, "end": time.time(), "argv": args,
               "mongo": os.environ.get("PYMARL_NONMONO_MONGO_URL"), "omp": os.environ.get("OMP_NUM_THREADS"),
               "pygame_banner": os.environ.get("PYGAME_HIDE_SUPPORT_PROMPT"),
               "autogroup": open("/proc/self/autogroup").read() if os.path.exists("/proc/self/autogroup") else None}, f)
if os.path.exists(os.path.join(probe, "refuse-seed%s" % seed)):  # as main.py stops on our start-up check
    print("pymarl-nonmono: cannot run env=sc2: StarCraft II is not installed (test)")
    sys.exit(1)
if updates.get("fail_seed") == seed or os.path.exists(os.path.join(probe, "fail-seed%s" % seed)):
    print("Traceback (most recent call last):")
    print('  File "src/main.py", line 1, in <module>')
    print("RuntimeError: boom on seed %s" % seed)
    sys.exit(1)
'''


@pytest.fixture
def fake_host(tmp_path, monkeypatch):
    """A folder shaped like a PyMARL2 checkout whose main.py only pretends to train."""
    root = tmp_path / "fakehost"
    (root / "src" / "config" / "algs").mkdir(parents=True)
    (root / "src" / "config" / "envs").mkdir(parents=True)
    (root / "src" / "main.py").write_text(FAKE_MAIN)
    # The keys of PyMARL2's default.yaml and qmix.yaml that our learner's start-up check reads or knows.
    (root / "src" / "config" / "default.yaml").write_text(
        "t_max: 100\nsleep: 0.3\nfail_seed: ''\nrunner: episode\nbatch_size_run: 1\ngamma: 0.99\ngrad_norm_clip: 10\n"
        "optim_alpha: 0.99\noptim_eps: 0.00001\nlearner_log_interval: 2000\n")
    (root / "src" / "config" / "algs" / "qmix.yaml").write_text(
        "name: qmix\nagent_output_type: q\nbatch_size: 128\nbuffer_size: 5000\ngain: 0.01\nlearner: nq_learner\n"
        "mac: n_mac\nper_alpha: 0.6\nper_beta: 0.4\nq_lambda: False\nuse_layer_norm: False\nuse_orthogonal: False\n")
    (root / "src" / "config" / "algs" / "vdn.yaml").write_text("name: vdn\n")
    (root / "src" / "config" / "envs" / "one_step_matrix_game.yaml").write_text("env_args: {map_name: m}\n")
    (root / "src" / "config" / "envs" / "sc2.yaml").write_text("env: sc2\nenv_args: {map_name: 3m}\n")
    probe = tmp_path / "probe"
    probe.mkdir()
    monkeypatch.setenv("FAKE_PROBE_DIR", str(probe))
    return root


@pytest.fixture
def cli_host(fake_host, monkeypatch):
    """The fake checkout, accepted by bench's host check (the stand-in has no patches to
    check); everything after that check is real."""
    from pymarl_nonmono.bench import launch
    from pymarl_nonmono.hosts.spec import PYMARL2

    monkeypatch.setattr(launch, "check_host", lambda path, host=None: (fake_host, host or PYMARL2))
    monkeypatch.delenv("PYMARL_NONMONO_MONGO_URL", raising=False)
    return fake_host
