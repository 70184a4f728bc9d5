"""The ``elmoe3d`` command line: one entry point, one sub-command per job.

Each sub-command lives in its own module under ``elmoe3d.commands`` and provides ``HELP`` (one
line), ``add_arguments(parser)`` and ``run(args) -> int``. Modules import heavy dependencies
(Amaranth, cocotb, ...) inside ``run`` so that ``elmoe3d --help`` stays fast.

A user's mistake (bad option, bad value, missing file) prints one line on stderr and exits with
status 2; set ``ELMOE3D_DEBUG=1`` to see the traceback instead.
"""

import argparse
import importlib
import os
import pkgutil
import sys
from pathlib import Path

from .errors import UserError

# Sub-commands are the modules of elmoe3d.commands (those not starting with "_"; an underscore
# in the module name is a dash in the command's); this is the order `elmoe3d --help` lists the
# known ones in, the others follow alphabetically.
_ORDER = ["demo", "numerics", "generate", "regress", "synth", "sd", "perf", "bench_pe", "bench_cache"]


def _discover():
    from . import commands
    names = [m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")]
    return sorted(names, key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n))


COMMANDS = _discover()

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr, exit status 2."""

    def error(self, message):
        raise UserError(f"{self.prog}: {message}")


def positive_int(text):
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def nonnegative_int(text):
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def positive_float(text):
    """argparse type: a finite float > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def unit_fraction(text):
    """argparse type: a float in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def existing_file(text):
    """argparse type: the path of a readable file."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    return path


def writable_path(text):
    """Refuse, before any work is done, an output path whose folder does not exist."""
    path = Path(text)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"cannot write {text}: folder {parent} does not exist")
    if path.is_dir():
        raise UserError(f"cannot write {text}: it is a folder")
    return path


def build_parser():
    parser = _Parser(prog="elmoe3d", description=__doc__.split("\n\n")[0])
    from . import __version__
    parser.add_argument("--version", action="version", version=f"elmoe3d {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for name in COMMANDS:
        module = importlib.import_module(f".commands.{name}", __package__)
        sub = subparsers.add_parser(name.replace("_", "-"), help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv=None):
    """Run the command line; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        return args._run(args) or 0
    except (UserError, FileNotFoundError) as exc:
        if os.environ.get("ELMOE3D_DEBUG"):
            raise
        message = str(exc) if isinstance(exc, UserError) else f"no such file: {exc.filename}"
        if not message.startswith("elmoe3d"):
            message = f"elmoe3d: error: {message}"
        print(message.replace("\n", " "), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("elmoe3d: interrupted", file=sys.stderr)
        return 130
