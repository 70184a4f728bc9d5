"""The ``elmoe3d`` command line: one entry point, one sub-command per job.

Each sub-command lives in its own module under ``elmoe3d.commands`` and provides ``HELP`` (one
line), ``add_arguments(parser)`` and ``run(args) -> int``. Modules import heavy dependencies
(Amaranth, cocotb, ...) inside ``run`` so that ``elmoe3d --help`` stays fast.

A user's mistake (bad option, bad value, missing or corrupt file, an output path that cannot
be written, a full disk) prints one line on stderr and exits with status 2; set
``ELMOE3D_DEBUG=1`` to see the traceback instead. Output whose reader has gone (``elmoe3d ... |
head``) ends the command quietly with status 141, as a Unix tool killed by ``SIGPIPE`` does.
"""

import argparse
import errno
import importlib
import math
import os
import pkgutil
import sys
from pathlib import Path

from .errors import UserError

# Sub-commands are the modules of elmoe3d.commands (those not starting with "_"; an underscore
# in the module name is a dash in the command's); this is the order `elmoe3d --help` lists the
# known ones in, the others follow alphabetically.
_ORDER = ["demo", "numerics", "generate", "regress", "synth", "sd", "perf", "bench_pe", "bench_cache", "bench_core"]


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
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def finite_float(text):
    """argparse type: a finite float (no nan, no inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


from .limits import CLOCK_NS_MAX, CLOCK_NS_MIN  # noqa: E402


def clock_ns(text):
    """argparse type: a clock period in ns, in [CLOCK_NS_MIN, CLOCK_NS_MAX]."""
    value = positive_float(text)
    if not CLOCK_NS_MIN <= value <= CLOCK_NS_MAX:
        raise argparse.ArgumentTypeError(f"expected a clock period from {CLOCK_NS_MIN} ns (1 ps) to "
                                         f"{CLOCK_NS_MAX:g} ns, got {text!r}")
    return value


def float_in(lo, hi):
    """argparse type factory: a float in ``[lo, hi]`` (NaN refused too)."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number in [{lo:g}, {hi:g}], got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"expected a number in [{lo:g}, {hi:g}], got {text!r}")
        return value
    return parse


unit_fraction = float_in(0.0, 1.0)
unit_fraction.__doc__ = "argparse type: a float in [0, 1]."


def existing_file(text):
    """argparse type: the path of a readable file."""
    path = Path(text)
    if not text:
        raise argparse.ArgumentTypeError("expected a file name, got an empty string")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    return path


def writable_path(text):
    """Check, before any work is done, that the file ``text`` can be written (its folder is
    created if missing); see :func:`elmoe3d.paths.output_file`."""
    from .paths import output_file
    return output_file(text)


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


EXIT_BROKEN_PIPE = 141      # 128 + SIGPIPE: what a shell reports for `yes | head`


def _quiet_broken_pipe():
    """The reader of stdout has gone: point stdout at /dev/null so that Python's final flush
    does not complain again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def main(argv=None):
    """Run the command line; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        status = args._run(args) or 0
        sys.stdout.flush()          # a closed pipe shows here, inside the handler, not at exit
        return status
    except BrokenPipeError:
        _quiet_broken_pipe()
        return EXIT_BROKEN_PIPE
    except (UserError, OSError) as exc:
        if os.environ.get("ELMOE3D_DEBUG"):
            raise
        if isinstance(exc, OSError) and exc.errno == errno.EPIPE:
            _quiet_broken_pipe()
            return EXIT_BROKEN_PIPE
        if isinstance(exc, UserError):
            message = str(exc)
        else:
            from .paths import os_error_message
            message = os_error_message(exc)
        if not message.startswith("elmoe3d"):
            message = f"elmoe3d: error: {message}"
        try:
            print(" ".join(message.split("\n")), file=sys.stderr)
        except OSError:
            pass
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("elmoe3d: interrupted", file=sys.stderr)
        return 130
