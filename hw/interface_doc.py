"""Interface documentation of a generated top, for someone who only has the Verilog.

:func:`describe` walks a component's ``wiring.Signature`` and the ``data`` layouts of its ports
(``hw/layouts.py`` and each block's own layouts) and returns, per Verilog port, its direction,
width and, per payload field, bit offset, width, signedness and enum encoding; the streams the
ports form; the rules every top obeys (:data:`RULES`: clock, reset, stream handshake, bit order);
and the top's own notes: what it does outside the legal range of its inputs and what its
counters count. The notes are written once, beside the component, as its ``INTERFACE_NOTES``
class attribute (a tuple of strings; ``{name}`` in a note is replaced with the component's
attribute ``name``, or its ``config``'s, so a note can quote a parameter's value). :func:`markdown` renders the same
description as a Markdown page; ``hw/verilog.write_verilog`` writes both beside the Verilog
(the JSON's ``ports`` and ``interface``, and ``<top>.md``), so nothing is written by hand twice.

Nothing here names a top or a width: a parameter or a port added to a component (a pipeline
option, a status field) appears in the documentation without an edit here.
"""

import itertools
import re

from amaranth.hdl import Shape, Value
from amaranth.lib import data, enum, stream, wiring

CLOCK = {"port": "clk", "edge": "rising"}
RESET = {"port": "rst", "kind": "synchronous", "active": "high",
         "effect": "every register takes its initial value at a rising clk edge with rst high"}

# The rules every generated top obeys; tests/test_interface_doc.py checks them on the RTL.
RULES = (
    "Clock and reset: one clock `clk`; every register updates on its rising edge. `rst` is a "
    "synchronous, active-high reset: a rising `clk` edge with `rst` high puts every register "
    "(state machines, counters, flags, stream `valid`s the block drives from registers) into its "
    "initial state. Hold `rst` high for at least one rising edge after power-up; no output is "
    "defined before that edge.",
    "Port names: an interface member's path joined with `__` (`i_cmd__payload`); an array of "
    "interfaces has the index as one path element (`o_cmd__2__valid`).",
    "Streams (`<name>__valid`, `<name>__ready`, `<name>__payload`): a transfer happens at a "
    "rising `clk` edge where `valid` and `ready` are both high. Once a producer raises `valid` it "
    "keeps `valid` high and the payload stable until the transfer; `valid` never waits for "
    "`ready`. A consumer's `ready` may depend on `valid` in the same cycle (several blocks take a "
    "beat only together with another stream's beat), so a producer must not make `valid` depend "
    "on `ready`. Either side may stall for any number of cycles; nothing is lost or duplicated.",
    "Bit order: a payload is one flat vector. A struct's first field sits at bit 0 (the LSB) and "
    "each later field above it; element 0 of an array sits at the LSB. The offsets below are bit "
    "positions inside the port; an array field `x[row][col]` of `w` bits sits at "
    "`offset + row*stride_row + col*stride_col`, bits `w-1 .. 0` above that.",
    "Values: `signed` fields are two's complement; enum fields carry only the listed encodings; "
    "status counters count up by one per event and wrap modulo 2**width.",
)

COMBINATIONAL_RULE = ("Clock and reset: none; the block is combinational (no `clk`, no `rst`): "
                      "its outputs follow its inputs within the cycle.")

_INDEX_NAMES = "ijnpqr"


def _is_layout(shape):
    return isinstance(shape, data.Layout)


def _is_enum(shape):
    return isinstance(shape, type) and issubclass(shape, enum.Enum)


def _leaf(name, shape, offset, index):
    s = Shape.cast(shape)
    row = {"field": name, "offset": offset, "width": s.width, "signed": s.signed}
    if index:
        row["index"] = [{"name": i, "count": n, "stride": st} for i, n, st in index]
    if _is_enum(shape):
        row["encoding"] = {m.name: m.value for m in shape}
    return row


def field_rows(shape, name="", offset=0, index=()):
    """Rows ``{field, offset, width, signed[, index][, encoding]}`` of a port's shape.

    Struct fields are walked depth-first with their layout offsets; an array becomes one row per
    leaf of its element with ``index`` (count and stride per dimension) instead of one row per
    element. A plain unsigned or signed port gives no row (the port row says all).
    """
    if isinstance(shape, data.ArrayLayout):
        dims, elem = [], shape
        while isinstance(elem, data.ArrayLayout):
            spare = _INDEX_NAMES[len(index) + len(dims)]
            dims.append((getattr(elem, "index", spare), elem.length, Shape.cast(elem.elem_shape).width))
            elem = elem.elem_shape
        sub = name + "".join(f"[{d[0]}]" for d in dims)
        if _is_layout(elem) or _is_enum(elem):
            return field_rows(elem, sub, offset, (*index, *dims))
        return [_leaf(sub, elem, offset, (*index, *dims))]
    if _is_layout(shape):
        rows = []
        for fname, field in shape:
            full = f"{name}.{fname}" if name else str(fname)
            rows += field_rows(field.shape, full, offset + field.offset, index)
        return rows
    if _is_enum(shape) or name:
        return [_leaf(name or "(port)", shape, offset, index)]
    return []


def _streams(signature, path=()):
    """``[(path, flow)]`` of every stream interface in a signature (arrays expanded)."""
    out = []
    for name, member in signature.members.items():
        if not member.is_signature:
            continue
        for idx in itertools.product(*(range(d) for d in member.dimensions)):
            p = (*path, name, *idx)
            if isinstance(member.signature, stream.Signature):
                out.append((p, member.flow))
            else:
                out += _streams(member.signature, p)
    return out


def _name(path):
    return "__".join(str(p) for p in path)


class _Attributes(dict):
    """``{name}`` in a note -> ``component.name``, else ``component.config.name``."""

    def __init__(self, component):
        super().__init__()
        self.component = component

    def __missing__(self, key):
        for source in (self.component, getattr(self.component, "config", None)):
            if source is not None and hasattr(source, key):
                return getattr(source, key)
        raise KeyError(f"{type(self.component).__name__}.INTERFACE_NOTES names {{{key}}}, "
                       f"which is neither an attribute of the component nor of its config")


def notes(component):
    """The component's ``INTERFACE_NOTES`` with ``{attribute}`` filled in."""
    values = _Attributes(component)
    return [note.format_map(values) for note in getattr(component, "INTERFACE_NOTES", ())]


def verilog_ports(text, name):
    """The port names in the header ``module <name>(...);`` of generated Verilog ``text``."""
    match = re.search(rf"^module {re.escape(name)}\(([^)]*)\);", text, re.M)
    if not match:
        raise ValueError(f"no module {name!r} in the Verilog")
    return {p.strip() for p in match.group(1).split(",") if p.strip()}


def describe(component, present=None):
    """The interface of ``component`` as a JSON-serializable dict (see the module docstring).

    ``ports`` lists ``clk`` and ``rst`` (when the design has registers: ``present``, the port
    names of the generated module, says so; without it they are listed) and every signature port
    in signature order, each ``{name, dir, width}`` plus ``stream``/``role`` for stream ports
    and ``fields`` for ports with a struct, array or enum shape.
    """
    streams = {p: flow for p, flow in _streams(component.signature)}
    ports = [{"name": CLOCK["port"], "dir": "in", "width": 1, "role": "clock"},
             {"name": RESET["port"], "dir": "in", "width": 1, "role": "reset"}]
    if present is not None:
        ports = [p for p in ports if p["name"] in present]
    for path, member, value in component.signature.flatten(component):
        port = {"name": _name(path), "dir": "in" if member.flow == wiring.In else "out",
                "width": len(Value.cast(value))}
        if tuple(path[:-1]) in streams:
            port["stream"], port["role"] = _name(path[:-1]), str(path[-1])
        rows = field_rows(member.shape)
        if rows:
            port["fields"] = rows
        ports.append(port)
    stream_rows = [{"name": _name(p), "role": "consumer" if flow == wiring.In else "producer",
                    **{r: f"{_name(p)}__{r}" for r in ("valid", "ready", "payload")}}
                   for p, flow in streams.items()]
    sync = len(ports) > 0 and ports[0]["name"] == CLOCK["port"]
    return {"clock": dict(CLOCK) if sync else None, "reset": dict(RESET) if sync else None,
            "rules": list(RULES) if sync else [COMBINATIONAL_RULE, *RULES[1:]],
            "streams": stream_rows, "ports": ports, "notes": notes(component)}


def _bits(row):
    lo = row["offset"]
    if "index" not in row:
        return f"{lo + row['width'] - 1}:{lo}" if row["width"] > 1 else f"{lo}"
    terms = " + ".join(f"{d['name']}*{d['stride']}" for d in row["index"])
    return f"{lo} + {terms} (+{row['width']})"


def _kind(row):
    if "encoding" in row:
        return "enum " + ", ".join(f"{k}={v}" for k, v in row["encoding"].items())
    return "signed" if row["signed"] else "unsigned"


def markdown(name, params, doc):
    """The Markdown page of one generated top (``doc`` from :func:`describe`)."""
    lines = [f"# `{name}`: interface", "",
             f"Generated with `elmoe3d generate --top {name}` from the component's signature and "
             "payload layouts; the same description is in the JSON beside this file "
             "(`ports`, `interface`).", "", "## Parameters", "", "| parameter | value |", "| --- | --- |"]
    lines += [f"| `{k}` | {v} |" for k, v in params.items()]
    lines += ["", "## Rules (every top)", ""] + [f"- {r}" for r in doc["rules"]]
    lines += ["", "## Ports", "", "| port | dir | width | stream |", "| --- | --- | ---: | --- |"]
    for p in doc["ports"]:
        where = f"`{p['stream']}` {p['role']}" if "stream" in p else p.get("role", "")
        lines.append(f"| `{p['name']}` | {p['dir']} | {p['width']} | {where} |")
    if doc["streams"]:
        lines += ["", "## Streams", "", "| stream | this top is its |", "| --- | --- |"]
        for s in doc["streams"]:
            lines.append(f"| `{s['name']}` | {s['role']} |")
    for p in doc["ports"]:
        if "fields" not in p:
            continue
        lines += ["", f"### `{p['name']}` ({p['width']} bits)", "",
                  "| field | bits | width | type |", "| --- | --- | ---: | --- |"]
        for row in p["fields"]:
            counts = ", ".join(f"{d['name']} < {d['count']}" for d in row.get("index", ()))
            field = f"`{row['field']}`" + (f" ({counts})" if counts else "")
            lines.append(f"| {field} | {_bits(row)} | {row['width']} | {_kind(row)} |")
    if doc["notes"]:
        lines += ["", "## Behaviour of this top", ""] + [f"- {n}" for n in doc["notes"]]
    return "\n".join(lines) + "\n"
