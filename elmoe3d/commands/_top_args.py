"""Shared ``--top NAME`` and per-top ``--<param>`` options of ``generate`` / ``synth`` / ``regress``.

Not a command (the leading underscore keeps it out of discovery). Every parameter of every
registered top (``elmoe3d.hw.tops``) becomes one option, ``--<name with dashes>``; the help of an
option says which tops take it. Values are kept as text while parsing and converted with the
chosen top's :class:`~elmoe3d.hw.tops.Param` type afterwards, so two tops may share a parameter
name with different types. Giving a parameter the chosen top does not take is refused.

Usage in a command module::

    from ._top_args import add_top_arguments, top_params

    def add_arguments(p):
        p.add_argument("-o", "--out", ...)
        add_top_arguments(p)          # after the command's own options

    def run(args):
        top, params = top_params(args)    # Top, {name: value} with defaults filled in

Sizes whose elaboration would not end in reasonable time are refused here with the limit named
(:func:`check_size_limits`), before anything is built.
"""

import argparse

from ..errors import UserError
from ..hw.tops import option_name

# Options are stored under this prefix so they never clash with a command's own destinations.
_DEST_PREFIX = "top_param__"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def add_top_arguments(parser, tops=None):
    """Add ``--top`` and one ``--<param>`` option per parameter name of the registered tops.

    ``tops`` (``{name: Top}``) defaults to :func:`elmoe3d.hw.tops.all_tops`; tests pass their own.
    Options default to "not given", so :func:`top_params` can tell a given value from a default.
    """
    if tops is None:
        from ..hw.tops import all_tops
        tops = all_tops()
    names = ", ".join(tops) or "none registered"
    parser.add_argument("--top", required=True, metavar="NAME",
                        help=f"the top level to build ({names})")
    group = parser.add_argument_group(
        "top parameters", "each is taken only by the tops named in its help; defaults are the top's own")
    seen = {}
    for top in tops.values():
        for param in top.params:
            seen.setdefault(param.name, []).append((top, param))
    for name, uses in seen.items():
        where = "; ".join(f"{top.name}: {_describe(param)}" for top, param in uses)
        helps = dict.fromkeys(param.help for _, param in uses)     # unique, in order
        group.add_argument(option_name(name), dest=_DEST_PREFIX + name, metavar="VALUE",
                           default=argparse.SUPPRESS,
                           help=f"{' / '.join(helps)} ({where})".replace("%", "%%"))
    parser.set_defaults(_top_registry=tops)


def _describe(param):
    text = f"default {param.default}"
    if param.choices:
        text += f", one of {', '.join(map(str, param.choices))}"
    return text


def given_params(args):
    """``{name: text}`` of the per-top options given on the command line (not converted)."""
    return {key[len(_DEST_PREFIX):]: value for key, value in vars(args).items()
            if key.startswith(_DEST_PREFIX)}


def convert(param, text):
    """Convert one option's text with the parameter's type; ``UserError`` names the option."""
    opt = option_name(param.name)
    if param.type is bool:
        low = str(text).strip().lower()
        if low in _TRUE:
            value = True
        elif low in _FALSE:
            value = False
        else:
            raise UserError(f"{opt}: expected true or false, got {text!r}")
    else:
        try:
            value = param.type(text)
        except (TypeError, ValueError):
            raise UserError(f"{opt}: expected {getattr(param.type, '__name__', param.type)}, "
                            f"got {text!r}") from None
    if param.choices and value not in param.choices:
        raise UserError(f"{opt}: {text!r} is not one of {', '.join(map(str, param.choices))}")
    return value


def _size_limits():
    """``{(top, param): (most, why)}``: sizes the generators take but that no design of this
    accelerator needs and whose elaboration would run for minutes to hours (measured:
    ``lsb_augment --width 4096`` 32 s, growing faster than linearly; 100 000 never ends;
    ``stream_fifo --width 10**9`` and ``core --max-k 10**9`` do not end either).

    A PE sums at most the products of one PE-array row, and an LSB-augmentation unit serves one
    row of weights, so both are bounded by the array's widest row (``hw.pe_array.MAX_COLS``). A
    stream block carries at most the widest line the width adapter converts
    (``STREAM_MAX_WIDTH``). The core's router slots are the vector router's
    (``hw.vector_router.MAX_K``).
    """
    from ..hw.pe_array import MAX_COLS
    from ..hw.vector_router import MAX_K
    row = f"the widest PE-array row (MAX_COLS = {MAX_COLS})"
    line = (f"Amaranth builds ports of fewer than 2**16 bits and a stream block's port holds the payload "
            f"and more (STREAM_MAX_WIDTH = {STREAM_MAX_WIDTH})")
    return {("pe", "terms"): (MAX_COLS, row), ("lsb_augment", "width"): (MAX_COLS, row),
            ("stream_fifo", "width"): (STREAM_MAX_WIDTH, line), ("stream_arbiter", "width"): (STREAM_MAX_WIDTH, line),
            ("core", "max_k"): (MAX_K, f"the vector router's slots (MAX_K = {MAX_K})")}


# The widest payload a stream block is generated with: half of the 2**16 bits an Amaranth port
# may have (2**16 itself fails inside Amaranth with an assertion), far above the widest line of
# this design (an HB line of 16 channels x 512 bits).
STREAM_MAX_WIDTH = 1 << 15


def check_size_limits(top, params):
    """Refuse a parameter above its limit in :func:`_size_limits`, naming the limit and why."""
    for name, value in params.items():
        limit = _size_limits().get((top.name, name))
        if limit and isinstance(value, int) and value > limit[0]:
            raise UserError(f"{option_name(name)} {value}: at most {limit[0]}, {limit[1]}")
        if limit and isinstance(value, int) and value < 1:
            raise UserError(f"{option_name(name)} {value}: at least 1")


def top_params(args, top=None):
    """The chosen :class:`Top` and its parameters (defaults overlaid with the given options).

    ``top`` defaults to the one ``--top`` names. Raises ``UserError`` for an unknown top, a
    parameter the top does not take, or a value its type or choices refuse.
    """
    tops = getattr(args, "_top_registry", None)
    if top is None:
        name = args.top
        if tops is None:
            from ..hw.tops import get_top
            top = get_top(name)
        elif name not in tops:
            raise UserError(f"unknown top {name!r}; choose from {', '.join(sorted(tops)) or 'none registered'}")
        else:
            top = tops[name]
    given = given_params(args)
    unknown = sorted(set(given) - {p.name for p in top.params})
    if unknown:
        raise UserError(f"top {top.name!r} takes no option {', '.join(option_name(n) for n in unknown)}; "
                        f"it takes: {', '.join(option_name(p.name) for p in top.params) or 'none'}")
    by_name = {p.name: p for p in top.params}
    params = top.resolve({name: convert(by_name[name], text) for name, text in given.items()})
    check_size_limits(top, params)
    return top, params
