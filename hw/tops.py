"""Registry of the top levels ``elmoe3d generate`` / ``synth`` / ``regress`` can build.

Every module of ``elmoe3d.hw`` may define ``GENERATE_TOPS``, a list of :class:`Top`; this module
collects them. A :class:`Top` names its parameters (with types, defaults and help) and a
``build(**params)`` that returns the ``wiring.Component``; the component's constructor validates
the values and raises ``UserError`` (a ``ValueError``) with a clear message.
"""

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable

from ..errors import UserError


def option_name(param_name):
    """The command-line option of a generator parameter: ``acc_width`` -> ``--acc-width``."""
    return "--" + param_name.replace("_", "-")


@dataclass(frozen=True)
class Param:
    """One generator parameter: ``--<name with dashes>`` on the command line."""

    name: str
    type: type
    default: object
    help: str
    choices: tuple = ()


@dataclass(frozen=True)
class Top:
    """A generate-able top level.

    ``build(**params)`` returns the ``wiring.Component``. ``macs_per_cycle(**params)``, for
    compute tops, returns ``{mode: MACs per clock cycle at full rate}`` (for example
    ``{"draft": 256, "full": 128, "int8": 256}``) so synthesis reports energy per MAC per mode.
    """

    name: str
    help: str
    build: Callable
    params: tuple = field(default_factory=tuple)
    macs_per_cycle: Callable = None

    def defaults(self):
        return {p.name: p.default for p in self.params}

    def resolve(self, given):
        """Defaults overlaid with ``given`` (a dict); refuses names this top does not take."""
        unknown = sorted(set(given) - {p.name for p in self.params})
        if unknown:
            raise UserError(f"top {self.name!r} takes no parameter {', '.join(unknown)}; "
                            f"it takes: {', '.join(p.name for p in self.params) or 'none'}")
        return {**self.defaults(), **given}


def all_tops():
    """``{name: Top}`` of every registered top, in module order."""
    from .. import hw
    found = {}
    for info in sorted(pkgutil.iter_modules(hw.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{hw.__name__}.{info.name}")
        for top in getattr(module, "GENERATE_TOPS", ()):
            if top.name in found:
                raise RuntimeError(f"top {top.name!r} registered twice")
            found[top.name] = top
    return found


def get_top(name):
    tops = all_tops()
    if name not in tops:
        raise UserError(f"unknown top {name!r}; choose from {', '.join(sorted(tops))}")
    return tops[name]
