"""The hosts pymarl-nonmono installs into, one :class:`HostSpec` each, and how a checkout is recognised.

Everything that differs between hosts for install/uninstall/doctor/cloning is data here;
the code in :mod:`.install`, :mod:`.fetch` and :mod:`.doctor` is the same for every host.
Importing this module imports no host.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Optional


@dataclass(frozen=True)
class HostSpec:
    name: str  # the value of --host
    title: str  # how messages name it
    url: str  # where users clone it from
    commit: str  # 40 hex digits: the commit our patches were made against
    required_files: tuple[str, ...]  # install/uninstall refuse a folder without these files
    markers: tuple[str, ...]  # paths that tell this host from the others; "x/" is a folder
    patch_folder: str  # folder of its patches inside the data package pymarl_nonmono.patches
    plugin_group: str  # entry-point group its patched main.py loads plugins from
    observer_group: str  # entry-point group its patched main.py loads Sacred observers from
    source_env: str  # variable naming a URL, clone or bundle to clone from instead of url
    adapter: str  # package with its install/doctor modules (host-specific checks)
    config_root: tuple[str, ...]  # folder of our configs for it (algs/, envs/, default.yaml) in pymarl_nonmono.config

    def our_configs(self) -> Path:
        """Our configs for this host: the folder its plugin adds to the config search path."""
        return Path(str(resources.files("pymarl_nonmono.config").joinpath(*self.config_root)))

    @property
    def repo(self) -> str:
        """``owner/name`` on GitHub."""
        return "/".join(self.url.rstrip("/").split("/")[-2:])

    @property
    def pinned(self) -> str:
        """E.g. ``hijkzzz/pymarl2 commit 8ccac7c``: what the patches were made against."""
        return f"{self.repo} commit {self.commit[:7]}"

    def adapter_module(self, name: str):
        """The adapter's ``install`` or ``doctor`` module (imports our adapter, not the host)."""
        return importlib.import_module(f"{self.adapter}.{name}")


PYMARL2 = HostSpec(
    name="pymarl2",
    title="PyMARL2",
    url="https://github.com/hijkzzz/pymarl2",
    commit="8ccac7c5aa134422a2e3009be735d23cdf8ce2f8",
    required_files=("src/main.py", "src/learners/nq_learner.py", "src/config/default.yaml"),
    markers=("src/run/", "src/learners/nq_learner.py"),
    patch_folder="pymarl2",
    plugin_group="pymarl2.plugins",
    observer_group="pymarl2.observers",
    source_env="PYMARL_NONMONO_PYMARL2_SOURCE",
    adapter="pymarl_nonmono.hosts.pymarl2",
    config_root=(),
)

EPYMARL = HostSpec(
    name="epymarl",
    title="EPyMARL",
    url="https://github.com/uoe-agents/epymarl",
    commit="cbc38c09588064eab978501d0f12c2cf58fa7fc2",
    required_files=("src/main.py", "src/run.py", "src/config/default.yaml"),
    markers=("src/run.py", "src/learners/q_learner.py", "src/envs/gymma.py"),
    patch_folder="epymarl",
    plugin_group="epymarl.plugins",
    observer_group="epymarl.observers",
    source_env="PYMARL_NONMONO_EPYMARL_SOURCE",
    adapter="pymarl_nonmono.hosts.epymarl",
    config_root=("hosts", "epymarl"),
)

# --host NAME -> host; the order is the order messages list them in.
HOSTS: dict[str, HostSpec] = {spec.name: spec for spec in (PYMARL2, EPYMARL)}
# What `install` clones into an empty folder when --host is not given (as before EPyMARL).
DEFAULT_HOST = PYMARL2


def host_named(name: str) -> HostSpec:
    try:
        return HOSTS[name]
    except KeyError:
        raise ValueError(f"unknown host {name!r}: known hosts are {', '.join(HOSTS)}") from None


def _present(root: Path, marker: str) -> bool:
    return (root / marker).is_dir() if marker.endswith("/") else (root / marker).is_file()


def missing_markers(root: str | os.PathLike, spec: HostSpec) -> list[str]:
    root = Path(root)
    return [m for m in spec.markers if not _present(root, m)]


def identify(root: str | os.PathLike) -> Optional[HostSpec]:
    """The host whose markers ``root`` has the largest share of; None when it has none of any
    host's, or when two hosts tie (nothing tells them apart).

    A share, not all markers: a checkout that lost one marker (a hand-edited or partial
    tree) is still recognised, and install then says precisely what is wrong with it. The
    real trees are told apart with room to spare: PyMARL2 has both of its markers and one
    of EPyMARL's three (q_learner.py), EPyMARL all three of its own and none of PyMARL2's."""
    root = Path(root)
    if not root.is_dir():
        return None
    shares = {name: 1 - len(missing_markers(root, spec)) / len(spec.markers) for name, spec in HOSTS.items()}
    best = max(shares.values())
    winners = [name for name, share in shares.items() if share == best]
    return HOSTS[winners[0]] if best > 0 and len(winners) == 1 else None


def _article(title: str) -> str:
    return "an" if title[:1].upper() in "AEIOU" else "a"


def not_a_checkout(root: str | os.PathLike) -> str:
    """One line saying that ``root`` is none of the hosts, and what each would need."""
    root = Path(root)
    specs = list(HOSTS.values())
    if not root.is_dir():
        others = " or ".join(f"{_article(s.title)} {s.title}" for s in specs[1:])
        return f"not {_article(specs[0].title)} {specs[0].title} checkout: {root} is not a directory (nor {others} one)"
    first, *rest = specs
    text = f"not {_article(first.title)} {first.title} checkout: {root} (no {', '.join(first.markers)})"
    for spec in rest:
        text += f", nor {_article(spec.title)} {spec.title} one (no {', '.join(spec.markers)})"
    return text + f"; say which with --host {'|'.join(HOSTS)}"
