"""setup.py lists packages explicitly: a forgotten subpackage would install broken."""

import ast
from pathlib import Path

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
