"""The ``pymarl-nonmono`` console command: install, uninstall and doctor for PyMARL2.

Reports go to stdout through :func:`_out`; errors are one line on stderr,
``pymarl-nonmono: error: ...``, with exit code 2 and no traceback (``-v`` adds logging).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Optional, Sequence

from . import __version__

PROG = "pymarl-nonmono"
ENV_DIR = "PYMARL2_DIR"
EXIT_ERROR = 2

log = logging.getLogger(__name__)


class UsageError(Exception):
    """Bad command line or a failed operation; reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    # argparse would print the usage block and call sys.exit itself; we want one line
    # and a return value from main().
    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message} (see {PROG} --help)")


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def _default_path() -> str:
    return os.environ.get(ENV_DIR) or os.getcwd()


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Install pymarl-nonmono into a PyMARL2 checkout (hijkzzz/pymarl2), undo it, or check a setup.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is done to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    path_help = f"PyMARL2 checkout (default: ${ENV_DIR} if set, else the current folder)"

    p = sub.add_parser("install", help="patch a PyMARL2 checkout (original files are kept for uninstall)")
    p.add_argument("path", nargs="?", metavar="PATH", help=path_help)
    p = sub.add_parser("uninstall", help="restore the checkout's original files byte for byte")
    p.add_argument("path", nargs="?", metavar="PATH", help=path_help)
    p.add_argument("--force", action="store_true", help="restore even files edited after install (the edits are lost)")
    p = sub.add_parser("doctor", help="check the checkout, the plugin and optional software (exit 1 if unusable)")
    p.add_argument("path", nargs="?", metavar="PATH", help=path_help)
    return parser


def _install(path: str) -> int:
    from .hosts.pymarl2.install import STATE_DIR, install

    result = install(path)
    if result.already_installed:
        _out(f"already installed in {result.root}: {', '.join(result.already)} applied; nothing changed")
        return 0
    if result.already:
        _out(f"already applied: {', '.join(result.already)}")
    for name in result.applied:
        _out(f"applied {name}")
    for rel in result.changed:
        _out(f"  {'created' if rel in result.created else 'changed'} {rel}")
    _out(f"installed into {result.root}; originals kept in {result.root / STATE_DIR} (undo: {PROG} uninstall {result.root})")
    _out(f"check the setup with: {PROG} doctor {result.root}")
    return 0


def _uninstall(path: str, force: bool) -> int:
    from .hosts.pymarl2.install import uninstall

    result = uninstall(path, force=force)
    for rel in result.forced:
        _out(f"  discarded edits to {rel} (--force)")
    for rel in result.restored:
        _out(f"  restored {rel}")
    for rel in result.removed:
        _out(f"  removed {rel}")
    _out(f"uninstalled from {result.root}: original files restored")
    return 0


def _doctor(path: str) -> int:
    from .hosts.pymarl2.doctor import doctor, usable

    checks = doctor(path)
    for check in checks:
        _out(check.line())
    ok = usable(checks)
    _out(f"PyMARL2 with pymarl-nonmono is {'usable' if ok else 'NOT usable'} (matrix game: host, patches, plugin)")
    return 0 if ok else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .hosts.pymarl2.install import InstallError

    parser = _build_parser()
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help and --version end here
            return int(exc.code or 0)
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                            format=f"{PROG}: %(levelname)s: %(message)s")
        if args.command is None:
            raise UsageError(f"a command is required: install, uninstall or doctor (see {PROG} --help)")
        path = args.path or _default_path()
        if args.command == "install":
            return _install(path)
        if args.command == "uninstall":
            return _uninstall(path, args.force)
        return _doctor(path)
    except (UsageError, InstallError, OSError) as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
