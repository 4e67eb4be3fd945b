"""Every relative link and image in README.md and docs/ points at a file of the repository: the
docs cite figures and other pages by path, and a figure not committed (or a page renamed) would
leave a reader with a dead link and no error anywhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def relative_targets(text: str) -> list[str]:
    """Targets of markdown links and images that name a path here (not a URL, not an anchor)."""
    return [t.split("#")[0] for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_relative_targets_are_found_and_urls_left_out():
    text = "![f](img/a.png) [p](other.md#part) [u](https://x.org/y) [m](mailto:a@b) [s](#section)"
    assert relative_targets(text) == ["img/a.png", "other.md"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    missing = [t for t in relative_targets(page.read_text(encoding="utf-8")) if not (page.parent / t).exists()]
    assert not missing, f"{page.relative_to(ROOT)} links to files that do not exist: {missing}"
