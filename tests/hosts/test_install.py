"""``pymarl-nonmono install/uninstall/doctor``.

Three kinds of tests:
- no host needed (errors, CLI arguments, doctor on an empty folder, credential masking);
- a synthetic checkout with synthetic patches (the install machinery: backups, rollback,
  --force, created files, CRLF), run everywhere;
- the real patches on a copy of the real PyMARL2 (conftest's pymarl2_pristine: $PYMARL2_DIR,
  else a clone at 8ccac7c; we cannot ship PyMARL2's files);
- cloning PyMARL2 into a new folder (``install --source``), against a tiny git repository
  made here and against the PyMARL2 bundle next to the project.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import shutil
import stat
from pathlib import Path

import pytest
from install_helpers import run_cli, tree_digest

from pymarl_nonmono import cli
from pymarl_nonmono.hosts.pymarl2 import doctor as doc
from pymarl_nonmono.hosts.pymarl2 import install as inst
from pymarl_nonmono.patching import parse_patch




# ----------------------------------------------------------------- no host needed


def test_install_into_non_checkout_is_an_error(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not PyMARL2")  # not empty: install must not clone here
    before = tree_digest(tmp_path)
    with pytest.raises(inst.InstallError, match="not a PyMARL2 checkout") as info:
        inst.install(tmp_path)
    for rel in inst.REQUIRED_FILES:
        assert rel in str(info.value)
    code, out, err = run_cli(capsys, "install", str(tmp_path))
    assert code == 2 and out == ""
    assert err.startswith("pymarl-nonmono: error: not a PyMARL2 checkout:") and err.count("\n") == 1
    assert "clones PyMARL2 only into a new or empty folder" in err
    assert "Traceback" not in err
    assert tree_digest(tmp_path) == before


def test_missing_folder_is_an_error(tmp_path, capsys):
    code, _, err = run_cli(capsys, "uninstall", str(tmp_path / "nope"))
    assert code == 2 and "not a PyMARL2 checkout" in err and "not a directory" in err


@pytest.mark.parametrize(
    "argv, needle",
    [([], "a command is required"), (["frobnicate"], "invalid choice"), (["install", "--bogus"], "unrecognized arguments"),
     (["doctor", "a", "b"], "unrecognized arguments")],
)
def test_cli_argument_errors_are_one_line(capsys, argv, needle):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("pymarl-nonmono: error: ") and needle in err and err.count("\n") == 1


def test_cli_help_and_version(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0 and "install" in out and "uninstall" in out and "doctor" in out
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and "pymarl-nonmono" in out


def test_doctor_on_empty_folder_reports_host_missing(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(doc.MONGO_URL_ENV, raising=False)
    code, out, err = run_cli(capsys, "doctor", str(tmp_path))
    assert code == 1 and err == ""
    lines = out.splitlines()
    host = next(line for line in lines if " host: " in line)
    assert host.startswith("MISSING") and "not a PyMARL2 checkout" in host and "fix:" in host
    assert any(line.startswith("MISSING") and " patches: " in line for line in lines)
    mongo = next(line for line in lines if " mongodb: " in line)
    assert "not configured" in mongo and not mongo.startswith("MISSING")
    for name in ("plugin", "smac", "sc2", "gfootball"):
        assert any(f" {name}: " in line for line in lines), name


def test_doctor_path_defaults_to_env_then_cwd(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(doc.MONGO_URL_ENV, raising=False)
    monkeypatch.setenv("PYMARL2_DIR", str(tmp_path / "from-env"))
    _, out, _ = run_cli(capsys, "doctor")
    assert str(tmp_path / "from-env") in out
    monkeypatch.delenv("PYMARL2_DIR")
    monkeypatch.chdir(tmp_path)
    _, out, _ = run_cli(capsys, "doctor")
    assert f"{tmp_path} (" in out or f"{tmp_path} is" in out


def test_uninstall_without_manifest(tmp_path, capsys):
    host = make_fake_host(tmp_path)
    code, _, err = run_cli(capsys, "uninstall", str(host))
    assert code == 2 and "nothing to uninstall" in err


@pytest.mark.parametrize(
    "url, shown",
    [
        ("mongodb://alice:s3cret@db.example.org:27017/sacred", "mongodb://***@db.example.org:27017/sacred"),
        ("mongodb+srv://alice:p%40ss@cluster0.example.net/?retryWrites=true", "mongodb+srv://***@cluster0.example.net/?***"),
        ("mongodb://h1:1,h2:2/db", "mongodb://h1:1,h2:2/db"),
        ("alice:s3cret@host", "***"),
    ],
)
def test_mask_url(url, shown):
    assert doc.mask_url(url) == shown


def test_mongo_errors_never_show_credentials(monkeypatch):
    url = "mongodb://alice:s3cret@db.example.org:27017/sacred?authSource=admin"
    monkeypatch.setenv(doc.MONGO_URL_ENV, url)

    def fail(u):
        raise RuntimeError(f"auth failed for {u} (user alice, password s3cret)")

    check = doc.mongo_check(connect=fail)
    assert check.status == doc.MISSING
    assert "s3cret" not in check.line() and "alice" not in check.line() and "authSource" not in check.line()
    assert "db.example.org" in check.line()
    assert doc.mongo_check(connect=lambda u: None).status == doc.OK


def test_doctor_says_whether_the_fused_gru_kernel_was_built(monkeypatch):
    from pymarl_nonmono.numerics import fused_gru

    monkeypatch.setattr(fused_gru, "_loaded", True)
    monkeypatch.setattr(fused_gru, "_library", None)
    monkeypatch.setattr(fused_gru, "_load_error", "the compiled extension is not there (test)")
    check = doc.gru_kernel_check()
    assert check.status == doc.MISSING and "not there (test)" in check.line() and "C compiler" in check.fix
    assert [c for c in doc.software_checks() if c.name == "gru kernel"][0].status == doc.MISSING
    monkeypatch.setattr(fused_gru, "_library", object())
    monkeypatch.setattr(fused_gru, "_load_error", None)
    assert doc.gru_kernel_check().status == doc.OK


def test_mongo_unreachable_with_real_client(monkeypatch, capsys, tmp_path):
    pytest.importorskip("pymongo")
    # Port 1 on loopback: nothing listens, so the 2 s server-selection timeout applies.
    monkeypatch.setenv(doc.MONGO_URL_ENV, "mongodb://bob:hunter2@127.0.0.1:1/sacred")
    code, out, _ = run_cli(capsys, "doctor", str(tmp_path))
    mongo = next(line for line in out.splitlines() if " mongodb: " in line)
    assert mongo.startswith("MISSING") and "127.0.0.1:1" in mongo
    assert "hunter2" not in out and "bob" not in out


# ----------------------------------------------------------------- synthetic host

FAKE_FILES = {
    "src/main.py": b"import yaml\n\n\ndef read(f):\n    return yaml.load(f)\n\n\nif __name__ == '__main__':\n    read(None)\n",
    "src/learners/nq_learner.py": b"class NQLearner:\n    pass\n",
    "src/config/default.yaml": b"runner: episode\n",
    "src/run/run.py": b"import os\r\nfrom smac.env import StarCraft2Env\r\n\r\ndef run():\r\n    pass\r\n",
    "src/envs/__init__.py": b"REGISTRY = {}\nREGISTRY['sc2'] = None",  # no final newline
}


def _diff(rel: str, old, new) -> bytes:
    a = [] if old is None else old.splitlines(keepends=True)
    b = new.splitlines(keepends=True)
    lines = difflib.diff_bytes(
        difflib.unified_diff, a, b, b"/dev/null" if old is None else f"a/{rel}".encode(), f"b/{rel}".encode(), n=1
    )
    return b"".join(lines)


def fake_series():
    """(name, description, {path: (old, new)}) for three synthetic patches, in order."""
    main0 = FAKE_FILES["src/main.py"]
    main1 = main0.replace(b"yaml.load(f)", b"yaml.safe_load(f)")
    main2 = main1.replace(b"if __name__ == '__main__':\n", b"if __name__ == '__main__':\n    load_plugins()\n")
    run0 = FAKE_FILES["src/run/run.py"]
    run1 = run0.replace(b"from smac.env import StarCraft2Env\r\n", b"")
    return [
        ("0001-yaml.patch", {"src/main.py": (main0, main1)}),
        ("0002-lazy.patch", {"src/run/run.py": (run0, run1), "src/plugins/extra/hook.py": (None, b"HOOK = 1\n")}),
        ("0003-hook.patch", {"src/main.py": (main1, main2)}),
    ]


def fake_patches():
    out = []
    for name, files in fake_series():
        data = f"Synthetic {name} for tests.\n\n".encode() + b"".join(_diff(rel, old, new) for rel, (old, new) in files.items())
        out.append((parse_patch(data, name), hashlib.sha256(data).hexdigest()))
    return out


def make_fake_host(tmp_path: Path) -> Path:
    root = tmp_path / "fakehost"
    for rel, data in FAKE_FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "src/main.py").chmod(0o755)  # modes must survive install/uninstall
    return root


@pytest.fixture
def fake_host(tmp_path, monkeypatch):
    monkeypatch.setattr(inst, "shipped_patches", fake_patches)
    monkeypatch.setattr(doc, "shipped_patches", fake_patches)
    return make_fake_host(tmp_path)


def test_fake_install_uninstall_roundtrip(fake_host, capsys):
    pristine = tree_digest(fake_host)
    code, out, err = run_cli(capsys, "install", str(fake_host))
    assert code == 0 and err == ""
    assert "applied 0001-yaml.patch" in out and "created src/plugins/extra/hook.py" in out
    main = (fake_host / "src/main.py").read_bytes()
    assert b"yaml.safe_load(f)" in main and b"load_plugins()" in main
    assert (fake_host / "src/run/run.py").read_bytes() == b"import os\r\n\r\ndef run():\r\n    pass\r\n"
    assert stat.S_IMODE((fake_host / "src/main.py").stat().st_mode) == 0o755
    manifest = inst.read_manifest(fake_host)
    assert manifest["created"] == ["src/plugins/extra/hook.py"]
    assert manifest["created_dirs"] == ["src/plugins", "src/plugins/extra"]
    assert [p["name"] for p in manifest["patches"]] == ["0001-yaml.patch", "0002-lazy.patch", "0003-hook.patch"]

    installed = tree_digest(fake_host)
    code, out, _ = run_cli(capsys, "install", str(fake_host))
    assert code == 0 and "already installed" in out
    assert tree_digest(fake_host) == installed

    code, out, _ = run_cli(capsys, "uninstall", str(fake_host))
    assert code == 0 and "removed src/plugins/extra/hook.py" in out
    assert tree_digest(fake_host) == pristine


def test_fake_install_partial_series_completes(fake_host):
    # 0001 applied by hand: install applies only the rest, uninstall returns to that state.
    main1 = fake_series()[0][1]["src/main.py"][1]
    (fake_host / "src/main.py").write_bytes(main1)
    before = tree_digest(fake_host)
    result = inst.install(fake_host)
    assert result.already == ["0001-yaml.patch"] and result.applied == ["0002-lazy.patch", "0003-hook.patch"]
    inst.uninstall(fake_host)
    assert tree_digest(fake_host) == before


def test_fake_conflict_names_patch_and_file(fake_host, capsys):
    (fake_host / "src/run/run.py").write_bytes(b"import os\r\nfrom smac.env import Something\r\n\r\ndef run():\r\n    pass\r\n")
    before = tree_digest(fake_host)
    code, _, err = run_cli(capsys, "install", str(fake_host))
    assert code == 2 and "0002-lazy.patch" in err and "src/run/run.py" in err and "hunk #1" in err
    assert "nothing was changed" in err
    assert tree_digest(fake_host) == before


def test_fake_unwritable_target_refused_before_any_write(fake_host, monkeypatch, capsys):
    # Simulates a read-only file through os.access (works as root too); the real chmod test
    # is test_real_read_only_tree.
    real_access = os.access
    monkeypatch.setattr(inst.os, "access", lambda p, m: False if str(p).endswith("run.py") else real_access(p, m))
    before = tree_digest(fake_host)
    code, _, err = run_cli(capsys, "install", str(fake_host))
    assert code == 2 and "not writable: src/run/run.py" in err
    assert tree_digest(fake_host) == before


def test_fake_write_failure_rolls_back(fake_host, monkeypatch):
    real_write = inst._write_bytes
    calls = []

    def flaky(target, data, mode):
        calls.append(target)
        if target.name == "run.py":
            raise OSError(28, "No space left on device")
        real_write(target, data, mode)

    monkeypatch.setattr(inst, "_write_bytes", flaky)
    before = tree_digest(fake_host)
    with pytest.raises(inst.InstallError, match="No space left"):
        inst.install(fake_host)
    monkeypatch.setattr(inst, "_write_bytes", real_write)
    assert any(c.name == "main.py" for c in calls)  # something was written before the failure
    after = tree_digest(fake_host)
    # created parent folders of new files may remain empty; everything else is as before
    assert {k: v for k, v in after.items() if not k.startswith("src/plugins")} == before


def test_fake_uninstall_refuses_edited_file_unless_forced(fake_host, capsys):
    pristine = tree_digest(fake_host)
    inst.install(fake_host)
    with open(fake_host / "src/main.py", "ab") as f:
        f.write(b"# my local change\n")
    edited = tree_digest(fake_host)
    code, _, err = run_cli(capsys, "uninstall", str(fake_host))
    assert code == 2 and "src/main.py" in err and "--force" in err
    assert tree_digest(fake_host) == edited
    code, out, _ = run_cli(capsys, "uninstall", "--force", str(fake_host))
    assert code == 0 and "discarded edits to src/main.py" in out
    assert tree_digest(fake_host) == pristine


def test_fake_doctor_reports_patch_state(fake_host, capsys, monkeypatch):
    monkeypatch.delenv(doc.MONGO_URL_ENV, raising=False)
    _, out, _ = run_cli(capsys, "doctor", str(fake_host))
    assert "MISSING  patches: not applied 0001-yaml, 0002-lazy, 0003-hook -- fix: pymarl-nonmono install" in out
    inst.install(fake_host)
    code, out, _ = run_cli(capsys, "doctor", str(fake_host))
    assert "OK       patches: applied 0001-yaml, 0002-lazy, 0003-hook" in out
    plugin_ok = any(line.startswith("OK") and " plugin: " in line for line in out.splitlines())
    assert code == (0 if plugin_ok else 1)


# ----------------------------------------------------------------- the real PyMARL2


@pytest.fixture
def real_host(pymarl2_pristine, tmp_path):
    root = tmp_path / "pymarl2"
    shutil.copytree(pymarl2_pristine, root, symlinks=True, ignore=shutil.ignore_patterns(".git", "__pycache__", "results"))
    series = [p for p, _ in inst.shipped_patches()]
    if inst.series_state(series, inst.read_targets(inst.touched_paths(series), root)).applied:
        pytest.skip(f"{pymarl2_pristine} is already patched: these tests need a clean hijkzzz/pymarl2 checkout")
    return root


def test_real_install_twice_then_uninstall(real_host, capsys):
    pristine = tree_digest(real_host)
    code, out, _ = run_cli(capsys, "install", str(real_host))
    assert code == 0
    names = [p.name for p, _ in inst.shipped_patches()]
    assert names == ["0001-current-stack.patch", "0002-lazy-starcraft.patch", "0003-plugin-hook.patch",
                     "0004-sacred-completion.patch", "0005-tracking-hooks.patch", "0006-quiet-start.patch"]
    for name in names:
        assert f"applied {name}" in out
    main = (real_host / "src/main.py").read_text()
    assert "yaml.SafeLoader" in main and 'entry_points(group="pymarl2.plugins")' in main
    assert 'logging.getLogger("git").setLevel(logging.INFO)' in main
    assert "from smac" not in (real_host / "src/envs/__init__.py").read_text()
    assert "os._exit" not in (real_host / "src/run/run.py").read_text()
    manifest = inst.read_manifest(real_host)
    assert set(manifest["files"]) >= {"src/main.py", "src/run/run.py", "src/envs/__init__.py"}
    for rel, entry in manifest["files"].items():
        assert (real_host / inst.STATE_DIR / entry["backup"]).is_file()
        assert entry["installed_sha256"] == hashlib.sha256((real_host / rel).read_bytes()).hexdigest()
    for rel in manifest["files"]:
        if rel.endswith(".py"):
            compile((real_host / rel).read_bytes(), rel, "exec")

    installed = tree_digest(real_host)
    code, out, _ = run_cli(capsys, "install", str(real_host))
    assert code == 0 and "already installed" in out
    assert tree_digest(real_host) == installed

    code, _, _ = run_cli(capsys, "uninstall", str(real_host))
    assert code == 0
    assert tree_digest(real_host) == pristine


def test_real_modified_main_py_refused(real_host, capsys):
    main = real_host / "src/main.py"
    main.write_bytes(main.read_bytes().replace(b"config_dict = yaml.load(f)", b"config_dict = yaml.full_load(f)"))
    before = tree_digest(real_host)
    code, _, err = run_cli(capsys, "install", str(real_host))
    assert code == 2 and "0001-current-stack.patch" in err and "src/main.py" in err
    assert tree_digest(real_host) == before


def test_real_doctor_after_install(real_host, capsys, monkeypatch):
    monkeypatch.delenv(doc.MONGO_URL_ENV, raising=False)
    code, _, _ = run_cli(capsys, "doctor", str(real_host))
    assert code == 1
    inst.install(real_host)
    code, out, _ = run_cli(capsys, "doctor", str(real_host))
    assert "OK       patches: applied 0001-current-stack, 0002-lazy-starcraft, 0003-plugin-hook, 0004-sacred-completion, 0005-tracking-hooks, 0006-quiet-start" in out
    assert code == 0, out


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="running as root: file permissions do not stop root from writing, so a read-only "
                           "tree cannot be simulated with chmod (see test_fake_unwritable_target_refused_before_any_write)")
def test_real_read_only_tree(real_host, capsys):
    for dirpath, dirnames, filenames in os.walk(real_host):
        for name in filenames + dirnames:
            p = Path(dirpath, name)
            p.chmod(p.stat().st_mode & ~0o222)
    real_host.chmod(real_host.stat().st_mode & ~0o222)
    try:
        before = tree_digest(real_host)
        code, _, err = run_cli(capsys, "install", str(real_host))
        assert code == 2 and "not writable" in err and "src/main.py" in err
        assert tree_digest(real_host) == before
    finally:
        for dirpath, dirnames, filenames in os.walk(real_host):
            Path(dirpath).chmod(0o755)


def test_every_subcommand_has_a_handler_and_every_handler_a_subcommand():
    import argparse

    parser = cli._build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(cli.COMMANDS)


# ----------------------------------------------------------------- cloning PyMARL2 into a new folder

from pymarl_nonmono.hosts import checkout  # noqa: E402
from pymarl_nonmono.hosts.pymarl2 import fetch  # noqa: E402

# From the project root, as in CI and on developer machines; absent elsewhere (tests skip).
PYMARL2_BUNDLE = Path(__file__).resolve().parents[2] / ".." / "shared" / "hosts" / "pymarl2-8ccac7c.bundle"
needs_bundle = pytest.mark.skipif(not PYMARL2_BUNDLE.is_file(), reason=f"no PyMARL2 bundle at {PYMARL2_BUNDLE}")


def git(*args, cwd: Path) -> str:
    import subprocess

    proc = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "init.defaultBranch=main",
                           *args], cwd=cwd, capture_output=True, text=True, check=True)
    return proc.stdout.strip()


@pytest.fixture
def tiny_repo(tmp_path):
    """A git repository with two commits; returns (path, first commit, second commit)."""
    repo = tmp_path / "tiny"
    repo.mkdir()
    git("init", "--quiet", cwd=repo)
    (repo / "a.txt").write_text("first\n")
    git("add", "a.txt", cwd=repo)
    git("commit", "--quiet", "-m", "first", cwd=repo)
    first = git("rev-parse", "HEAD", cwd=repo)
    (repo / "b.txt").write_text("later\n")
    git("add", "b.txt", cwd=repo)
    git("commit", "--quiet", "-m", "later", cwd=repo)
    return repo, first, git("rev-parse", "HEAD", cwd=repo)


def test_clone_checks_out_the_commit_detached_even_when_the_source_has_later_ones(tiny_repo, tmp_path):
    repo, first, _ = tiny_repo
    clone = checkout.clone_at_commit(str(repo), tmp_path / "deep" / "dest", first)
    assert clone.root == tmp_path / "deep" / "dest" and clone.commit == first
    assert git("rev-parse", "HEAD", cwd=clone.root) == first
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=clone.root) == "HEAD"  # detached
    assert (clone.root / "a.txt").is_file() and not (clone.root / "b.txt").exists()
    assert checkout.is_pristine(clone.root, first)
    (clone.root / "a.txt").write_text("edited\n")
    assert not checkout.is_pristine(clone.root, first)


def test_clone_into_an_existing_empty_folder_keeps_the_folder(tiny_repo, tmp_path):
    repo, first, _ = tiny_repo
    dest = tmp_path / "empty"
    dest.mkdir()
    inode = dest.stat().st_ino
    checkout.clone_at_commit(str(repo), dest, first)
    assert dest.stat().st_ino == inode and (dest / "a.txt").is_file()


def test_untracked_file_makes_a_clone_not_pristine(tiny_repo, tmp_path):
    repo, first, _ = tiny_repo
    clone = checkout.clone_at_commit(str(repo), tmp_path / "dest", first)
    (clone.root / "new.txt").write_text("x")
    assert not checkout.is_pristine(clone.root, first)
    assert not checkout.is_pristine(tmp_path, first)  # not a git checkout at all


@pytest.mark.parametrize("existing", [False, True])
def test_absent_commit_is_an_error_and_leaves_nothing_behind(tiny_repo, tmp_path, existing):
    repo, _, _ = tiny_repo
    dest = tmp_path / "dest"
    if existing:
        dest.mkdir()
    with pytest.raises(checkout.CheckoutError, match=f"does not contain commit {'0' * 40}"):
        checkout.clone_at_commit(str(repo), dest, "0" * 40)
    assert (dest.is_dir() and not any(dest.iterdir())) if existing else not dest.exists()


@pytest.mark.parametrize("make_source, needle", [
    (lambda tmp: str(tmp / "nowhere"), "no such file or folder"),
    (lambda tmp: str(tmp), "cannot clone"),  # a folder, but not a repository
    (lambda tmp: "file:///nonexistent/repo.git", "cannot clone file:///nonexistent/repo.git"),
])
def test_unreachable_source_is_a_one_line_error(tmp_path, make_source, needle):
    source = make_source(tmp_path / "src")
    (tmp_path / "src").mkdir()
    with pytest.raises(checkout.CheckoutError, match=needle) as info:
        checkout.clone_at_commit(source, tmp_path / "dest", "0" * 40)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "dest").exists()
    assert checkout.probe(source) is not None


def test_probe_answers_none_for_a_repository(tiny_repo):
    assert checkout.probe(str(tiny_repo[0])) is None


def test_non_empty_destination_is_refused_untouched(tiny_repo, tmp_path):
    repo, first, _ = tiny_repo
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "mine.txt").write_text("keep")
    with pytest.raises(checkout.CheckoutError, match="not empty"):
        checkout.clone_at_commit(str(repo), dest, first)
    assert [p.name for p in dest.iterdir()] == ["mine.txt"]


def test_git_missing_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(checkout.GitNotFound):
        checkout.clone_at_commit("https://example.org/x.git", tmp_path / "dest", "0" * 40)
    code, out, err = run_cli(capsys, "install", str(tmp_path / "dest"), "--source", "https://example.org/x.git")
    assert code == 2 and err.count("\n") == 1
    assert "git is not installed" in err and fetch.PYMARL2_URL in err
    assert not (tmp_path / "dest").exists()


def test_a_git_that_does_not_answer_is_stopped_by_the_timeout(tmp_path, monkeypatch):
    # A stand-in for git on a network that drops packets: it never answers.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "git"
    fake.write_text("#!/bin/sh\nexec sleep 30\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    assert "no answer within 0.5 s" in checkout.probe("https://example.org/x.git", timeout=0.5)
    with pytest.raises(checkout.CheckoutError, match="no answer within 0.5 s"):
        checkout.clone_at_commit("https://example.org/x.git", tmp_path / "dest", "0" * 40, timeout=0.5)
    assert not (tmp_path / "dest").exists()


def test_cli_source_without_the_pinned_commit_is_an_error_naming_the_commit(tiny_repo, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(fetch.SOURCE_ENV, str(tiny_repo[0]))  # the variable is the source when --source is absent
    code, out, err = run_cli(capsys, "install", str(tmp_path / "dest"))
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"does not contain commit {fetch.PYMARL2_COMMIT}" in err and "--source" in err and fetch.SOURCE_ENV in err
    assert f"from {tiny_repo[0]} into" in out
    assert not (tmp_path / "dest").exists()


def test_cli_unreachable_source_is_a_one_line_error(tmp_path, capsys):
    code, _, err = run_cli(capsys, "install", str(tmp_path / "dest"), "--source", str(tmp_path / "nowhere.bundle"))
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"pymarl-nonmono: error: cannot clone {tmp_path / 'nowhere.bundle'}:")
    assert not (tmp_path / "dest").exists()


def test_source_defaults_to_the_variable_then_github(monkeypatch):
    monkeypatch.delenv(fetch.SOURCE_ENV, raising=False)
    assert fetch.pymarl2_source() == fetch.PYMARL2_URL == "https://github.com/hijkzzz/pymarl2"
    monkeypatch.setenv(fetch.SOURCE_ENV, "/some/bundle")
    assert fetch.pymarl2_source() == "/some/bundle"
    assert fetch.pymarl2_source("/explicit") == "/explicit"


@needs_bundle
def test_cli_install_clones_the_bundle_into_a_new_folder_then_patches(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(fetch.SOURCE_ENV, raising=False)
    dest = tmp_path / "new" / "pymarl2"
    code, out, err = run_cli(capsys, "install", str(dest), "--source", str(PYMARL2_BUNDLE))
    assert code == 0, err
    assert f"cloned into {dest}: HEAD detached at 8ccac7c" in out
    assert git("rev-parse", "HEAD", cwd=dest) == fetch.PYMARL2_COMMIT
    names = [p.name for p, _ in inst.shipped_patches()]
    assert all(f"applied {name}" in out for name in names)
    code, out, _ = run_cli(capsys, "install", str(dest), "--source", str(PYMARL2_BUNDLE))
    assert code == 0 and "already installed" in out and "--source is only used to clone into a new folder" in out


@needs_bundle
def test_a_source_with_later_commits_gives_exactly_the_pinned_commit(tmp_path, capsys, monkeypatch):
    later = tmp_path / "later"
    git("clone", "--quiet", str(PYMARL2_BUNDLE), str(later), cwd=tmp_path)
    (later / "src" / "main.py").write_text("# a later upstream change\n")
    git("commit", "--quiet", "-am", "later", cwd=later)
    monkeypatch.setenv(fetch.SOURCE_ENV, str(later))
    dest = tmp_path / "pymarl2"
    code, _, err = run_cli(capsys, "install", str(dest))
    assert code == 0, err
    assert git("rev-parse", "HEAD", cwd=dest) == fetch.PYMARL2_COMMIT
    assert "# a later upstream change" not in (dest / "src" / "main.py").read_text()
