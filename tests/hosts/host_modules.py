"""Import a module of the real PyMARL2 into a test, and take it out again afterwards.

PyMARL2's top-level package names (``modules``, ``utils``) are generic: another package's
``utils`` may already be imported, and the host's must not leak into other tests.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from pathlib import Path
from typing import Iterator

GENERIC_PACKAGES = ("modules", "utils", "envs")


@contextlib.contextmanager
def imported_from_host(root: Path, module: str) -> Iterator[object]:
    """``module`` (e.g. ``"modules.mixers.nmix"``) imported from the checkout ``root``'s ``src/``."""
    src = str(Path(root) / "src")
    host_names = lambda: [n for n in sys.modules if n.split(".")[0] in GENERIC_PACKAGES]  # noqa: E731
    others = {n: sys.modules.pop(n) for n in host_names()}
    sys.path.insert(0, src)
    try:
        loaded = importlib.import_module(module)
    finally:
        sys.path.remove(src)
    try:
        yield loaded
    finally:
        for name in host_names():
            del sys.modules[name]
        sys.modules.update(others)
