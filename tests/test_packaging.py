"""setup.py lists packages explicitly: a forgotten subpackage would install broken; a package built
from our git tree records the commit it was built from."""

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def listed_packages() -> set[str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "packages":
            return {ast.literal_eval(elt) for elt in node.value.elts}
    raise AssertionError("setup.py has no packages=[...]")


def test_every_code_folder_is_a_listed_package():
    folders = {p.parent for p in (ROOT / "pymarl_nonmono").rglob("*.py") if "__pycache__" not in p.parts}
    names = {".".join(f.relative_to(ROOT).parts) for f in folders}
    assert names <= listed_packages(), sorted(names - listed_packages())


def test_every_listed_package_has_an_init():
    for name in listed_packages():
        parts = name.split(".")
        mapped = {"pymarl_nonmono.config": "config", "pymarl_nonmono.patches": "patches"}
        folder = ROOT / mapped.get(name, "/".join(parts))
        assert (folder / "__init__.py").is_file(), name


def test_entry_points_name_real_objects():
    import importlib

    tree = (ROOT / "setup.py").read_text()
    for target in ("pymarl_nonmono.cli:main", "pymarl_nonmono.hosts.pymarl2.plugin:activate",
                   "pymarl_nonmono.tracking.observers:observers"):
        assert target in tree
        module, attr = target.split(":")
        assert callable(getattr(importlib.import_module(module), attr))


def test_every_shipped_yaml_is_package_data():
    # A YAML that no package_data pattern covers is missing from a non-editable install.
    import fnmatch

    tree = ast.parse((ROOT / "setup.py").read_text())
    patterns = next(ast.literal_eval(node.value) for node in ast.walk(tree)
                    if isinstance(node, ast.keyword) and node.arg == "package_data")["pymarl_nonmono.config"]
    shipped = [p.relative_to(ROOT / "config").as_posix() for p in (ROOT / "config").rglob("*.yaml")]
    assert shipped
    missing = [p for p in shipped if not any(fnmatch.fnmatch(p, pat) and p.count("/") == pat.count("/") for pat in patterns)]
    assert not missing, missing


def _build_py(tree: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "setup.py", "-q", "build_py", "-d", str(out)], cwd=tree,
                          capture_output=True, text=True, timeout=300)


def _source_tree(tmp_path: Path, git: bool) -> Path:
    """A copy of our tracked files as they are now: committed to a new git tree, or without git."""
    tree = tmp_path / "tree"
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], check=True, capture_output=True,
                           timeout=60).stdout.decode().split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tree / name)
    if git:
        for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "s"]):
            subprocess.run(["git", "-C", str(tree), *args], check=True, capture_output=True, timeout=120)
    return tree


needs_git_tree = pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                                    reason="needs git and this tree as a git clone")


@needs_git_tree
def test_a_package_built_from_our_git_tree_records_its_commit_and_uncommitted_code(tmp_path):
    tree = _source_tree(tmp_path, git=True)
    (tree / "config" / "nonmono_qmix.yaml").write_text("changed: true\n")
    assert _build_py(tree, tmp_path / "build").returncode == 0
    record = json.loads((tmp_path / "build" / "pymarl_nonmono" / "_source.json").read_text())
    head = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert record == {"commit": head.strip(), "uncommitted": ["config/nonmono_qmix.yaml"]}
    assert not (tree / "pymarl_nonmono" / "_source.json").exists()  # the source tree stays as it was


@needs_git_tree
def test_a_package_built_outside_git_records_no_source(tmp_path):
    tree = _source_tree(tmp_path, git=False)
    done = _build_py(tree, tmp_path / "build")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "build" / "pymarl_nonmono" / "cli.py").is_file()
    assert not (tmp_path / "build" / "pymarl_nonmono" / "_source.json").exists()
