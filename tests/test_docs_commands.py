"""Every `python src/main.py` command in README.md and docs/*.md parses, names configs that
exist, and finishes in minutes as written or says how long it takes: a user runs them as
they are (an example without t_max ran the paper's 10M steps, days)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Stock names the docs use, beside ours (config/algs, config/envs, config/hosts/epymarl/...).
STOCK_ALGS = {"qmix", "vdn", "qplex", "qtran", "ow_qmix", "qmix_predator_prey", "ALG"}
STOCK_ENVS = {"sc2", "one_step_matrix_game", "gymma", "gfootball", "stag_hunt"}
# A command with a bigger budget must say how long it takes, in a comment on its line.
QUICK_T_MAX = 20_000
DURATION = re.compile(r"#.*\b(\d[\d,.]*\s*(s|seconds?|minutes?|min|hours?|h)|minutes|hours|days|under a minute|as above)\b")


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def doc_commands(marker: str) -> list[tuple[str, str]]:
    """(where, command line with continuations joined) of every docs bash-block line with ``marker``."""
    found = []
    for path in DOCS:
        for block in bash_blocks(path.read_text(encoding="utf-8")):
            for line in block.replace("\\\n", " ").splitlines():
                if marker in line and not line.lstrip().startswith("#"):
                    found.append((f"{path.relative_to(ROOT)}", line.strip()))
    return found


def main_commands() -> list[tuple[str, str]]:
    return doc_commands("src/main.py")


COMMANDS = main_commands()


def ours(kind: str) -> set[str]:
    folders = [ROOT / "config" / kind, ROOT / "config" / "hosts" / "epymarl" / kind]
    return {p.stem for f in folders for p in f.glob("*.yaml")}


def test_the_docs_have_commands_to_check():
    assert len(COMMANDS) >= 10


@pytest.mark.parametrize("where,line", COMMANDS, ids=[f"{w}:{i}" for i, (w, _) in enumerate(COMMANDS)])
def test_each_command_parses_names_real_configs_and_says_how_long_it_takes(where, line):
    code, _, comment = line.partition("   #")
    words = shlex.split(code.split("src/main.py", 1)[1])
    flags = dict(w.split("=", 1) for w in words if w.startswith("--"))
    assert flags.get("--config") in ours("algs") | STOCK_ALGS, (where, line)
    assert flags.get("--env-config") in ours("envs") | STOCK_ENVS, (where, line)
    updates = words[words.index("with") + 1:] if "with" in words else []
    assert all("=" in w for w in updates), (where, line)
    t_max = next((int(w.split("=", 1)[1]) for w in updates if w.startswith("t_max=")), None)
    default_quick = flags["--config"] == "nonmono_qmix_matrix"  # its own t_max: 4,000 one-step episodes
    quick = default_quick or (t_max is not None and t_max <= QUICK_T_MAX)
    assert quick or DURATION.search(line), f"{where}: says neither a short t_max nor how long it runs: {line}"


# --------------------------------------------------------------------------- bench commands

STUDIES = sorted((ROOT / "config" / "studies").glob("*.yaml"))


def bench_commands() -> list[tuple[str, str]]:
    """(where, command) of every `pymarl-nonmono bench` line in a study file's comments or a docs bash block."""
    found = []
    for path in STUDIES:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("#") and "pymarl-nonmono bench" in line:
                found.append((f"{path.relative_to(ROOT)}", line.lstrip("# ").strip()))
    return found + doc_commands("pymarl-nonmono bench")


BENCH_COMMANDS = bench_commands()


def test_the_studies_have_bench_commands_to_check():
    assert len([w for w, _ in BENCH_COMMANDS if w.startswith("config")]) >= len(STUDIES) - 2


@pytest.mark.parametrize("where,line", BENCH_COMMANDS, ids=[f"{w}:{i}" for i, (w, _) in enumerate(BENCH_COMMANDS)])
def test_each_bench_command_builds_its_sweep_from_real_configs(where, line):
    # A piece of a study run as the comment says must be that piece: `--env paper_a` (a label where a
    # config belongs) built a sweep of an env config that does not exist.
    from pymarl_nonmono.cli import _build_parser, sweep_from_args

    code = line.partition("   #")[0].replace('"$PYMARL2_DIR"', "/host").replace('"$EPYMARL_DIR"', "/host")
    words = shlex.split(code.split("pymarl-nonmono", 1)[1])
    args = _build_parser().parse_args(words)
    sweep = sweep_from_args(args)
    if where.startswith("config/studies/"):
        assert args.sweep == Path(where).stem, f"{where}: a command for another study: {line}"
    for entry in sweep.algs:
        assert entry.config in ours("algs") | STOCK_ALGS, (where, line, entry.config)
    for entry in sweep.envs:
        assert entry.config in ours("envs") | STOCK_ENVS, (where, line, entry.config)


def test_the_readme_test_command_installs_editable_first_and_ci_runs_it():
    """The tests import the package from this folder; only an editable install puts its configs and
    kernel there (tests/conftest.py stops a run without one, saying so)."""
    commands = [line for _, line in doc_commands("python -m pytest tests") if _ == "README.md"]
    first = commands[0]
    assert first.startswith('pip install -e ".[test]" && python -m pytest tests'), first
    assert first in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


@pytest.mark.parametrize("where,line", [c for c in COMMANDS if "lbforaging" in c[1]])
def test_epymarl_commands_print_statistics_before_they_end(where, line):
    """EPyMARL logs every log_interval env steps, 50,000 by default: a shorter run printed nothing."""
    words = dict(w.split("=", 1) for w in shlex.split(line) if "=" in w and not w.startswith("-"))
    t_max = float(words["t_max"])
    for key in ("log_interval", "runner_log_interval", "learner_log_interval", "test_interval"):
        assert key in words and float(words[key]) < t_max, (where, key)
