"""The per-run tables of docs/predator_prey.md are what `report --at` makes of the study's records
in docs/data/predator_prey: no number in them is typed by hand, and no finished run is left out.

A table is marked by the comment line ``<!-- runs: ENV METRIC -->`` above it; its header gives the
steps (``| run | 100k | 200k | ... | last (step) |``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pymarl_nonmono.bench.report import classify, load_file_storage, parse_steps, run_table

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "predator_prey.md"
DATA = ROOT / "docs" / "data" / "predator_prey"
SWEEP = "predator_prey"
MARKER = re.compile(r"^<!-- runs: (\S+) (\S+) -->\n((?:\|.*\|\n)+)", re.M)


def marked_tables() -> list[tuple[str, str, str]]:
    return [m.groups() for m in MARKER.finditer(DOC.read_text(encoding="utf-8"))]


def steps_of(table: str) -> tuple[int, ...]:
    cells = [c.strip() for c in table.splitlines()[0].strip("|").split("|")]
    assert cells[0] == "run" and cells[-1] == "last (step)", cells
    return parse_steps(",".join(cells[1:-1]))


def test_the_doc_has_marked_tables_and_the_data_has_finished_runs():
    assert len(marked_tables()) >= 2
    states = sorted((DATA / "sweeps" / SWEEP / "runs").glob("*.json"))
    assert states and all(json.loads(p.read_text())["status"] == "COMPLETED" for p in states)


def test_every_run_state_has_its_sacred_record_and_every_record_its_state():
    states = {(s["alg"], s["env"], s["seed"]) for s in
              (json.loads(p.read_text()) for p in (DATA / "sweeps" / SWEEP / "runs").glob("*.json"))}
    included, excluded = classify(load_file_storage([DATA / "sacred"], SWEEP), "test_return_mean")
    assert {(r.alg, r.env, r.seed) for r in included} == states
    assert all(r.note.startswith(("continued", "superseded")) for r in excluded), [r.note for r in excluded]


@pytest.mark.parametrize("env,metric,table", marked_tables(), ids=lambda v: v if "|" not in str(v) else "table")
def test_each_marked_table_is_what_report_makes_of_the_records(env, metric, table):
    records = [r for r in load_file_storage([DATA / "sacred"], SWEEP) if r.env == env]
    included, _ = classify(records, metric)
    assert included, f"no finished run at {env} records {metric}"
    assert table == run_table(included, metric, steps_of(table))
