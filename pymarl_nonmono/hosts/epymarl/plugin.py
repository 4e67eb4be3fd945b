"""EPyMARL's entry point (group ``epymarl.plugins``), called by patch 0003's ``load_plugins()``.

For now it registers nothing: it only hands EPyMARL our config root for EPyMARL when
that folder exists (the adapter that registers our learner and controller comes later,
docs/design/epymarl_host.md). Imports nothing of EPyMARL.
"""

from __future__ import annotations

from importlib import resources

CONFIG_ROOT = ("hosts", "epymarl")  # inside the data package pymarl_nonmono.config


def activate() -> list[str]:
    root = resources.files("pymarl_nonmono.config").joinpath(*CONFIG_ROOT)
    return [str(root)] if root.is_dir() else []
