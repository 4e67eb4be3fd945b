"""``pymarl-nonmono install/uninstall/doctor``.

Three kinds of tests:
- no host needed (errors, CLI arguments, doctor on an empty folder, credential masking);
- a synthetic checkout with synthetic patches (the install machinery: backups, rollback,
  --force, created files, CRLF), run everywhere;
- the real patches on a copy of the real PyMARL2, only when PYMARL2_DIR names a clean
  hijkzzz/pymarl2 checkout (we cannot ship PyMARL2's files).
"""

from __future__ import annotations

import difflib
import hashlib
import os
import shutil
import stat
from pathlib import Path

import pytest

from pymarl_nonmono import cli
from pymarl_nonmono.hosts.pymarl2 import doctor as doc
from pymarl_nonmono.hosts.pymarl2 import install as inst
from pymarl_nonmono.patching import parse_patch

SKIP_REAL = "set PYMARL2_DIR to a clean hijkzzz/pymarl2 checkout (commit 8ccac7c) to run"


def tree_digest(root: Path) -> dict[str, tuple[int, str]]:
    """Every file and folder below root: permission bits and content hash."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            mode = stat.S_IMODE(path.lstat().st_mode)
            if path.is_symlink():
                out[rel] = (mode, "link:" + os.readlink(path))
            elif path.is_file():
                out[rel] = (mode, hashlib.sha256(path.read_bytes()).hexdigest())
            else:
                out[rel] = (mode, "dir")
    return out


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ----------------------------------------------------------------- no host needed


def test_install_into_non_checkout_is_an_error(tmp_path, capsys):
    before = tree_digest(tmp_path)
    with pytest.raises(inst.InstallError, match="not a PyMARL2 checkout") as info:
        inst.install(tmp_path)
    for rel in inst.REQUIRED_FILES:
        assert rel in str(info.value)
    code, out, err = run_cli(capsys, "install", str(tmp_path))
    assert code == 2 and out == ""
    assert err.startswith("pymarl-nonmono: error: not a PyMARL2 checkout:") and err.count("\n") == 1
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
def real_host(tmp_path):
    src = os.environ.get("PYMARL2_DIR")
    if not src or not Path(src, "src/main.py").is_file():
        pytest.skip(SKIP_REAL)
    root = tmp_path / "pymarl2"
    shutil.copytree(src, root, symlinks=True, ignore=shutil.ignore_patterns(".git", "__pycache__", "results"))
    series = [p for p, _ in inst.shipped_patches()]
    if inst.series_state(series, inst.read_targets(inst.touched_paths(series), root)).applied:
        pytest.skip(f"PYMARL2_DIR={src} is already patched; " + SKIP_REAL)
    return root


def test_real_install_twice_then_uninstall(real_host, capsys):
    pristine = tree_digest(real_host)
    code, out, _ = run_cli(capsys, "install", str(real_host))
    assert code == 0
    names = [p.name for p, _ in inst.shipped_patches()]
    assert names == ["0001-current-stack.patch", "0002-lazy-starcraft.patch", "0003-plugin-hook.patch",
                     "0004-sacred-completion.patch", "0005-tracking-hooks.patch"]
    for name in names:
        assert f"applied {name}" in out
    main = (real_host / "src/main.py").read_text()
    assert "yaml.SafeLoader" in main and 'entry_points(group="pymarl2.plugins")' in main
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
    assert "OK       patches: applied 0001-current-stack, 0002-lazy-starcraft, 0003-plugin-hook, 0004-sacred-completion, 0005-tracking-hooks" in out
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
