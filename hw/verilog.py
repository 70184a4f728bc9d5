"""Verilog generation: one entry point that cocotb, Yosys and OpenSTA all consume.

:func:`write_verilog` converts an Amaranth ``wiring.Component`` and writes, beside the ``.v``
file, a ``.json`` with the generator parameters, the port list (name, direction, width and, per
payload field, bit offset, width, signedness and enum encoding) and the interface rules and notes
(``interface``), and a ``.md`` page with the same description (:mod:`.interface_doc`), so
firmware, benches, reports and a reader who only has the Verilog use one source of truth.

The ``.v`` starts correctly on every simulator as written (see :func:`icarus_start`).

Repeated blocks (:func:`leaf`)
------------------------------
Amaranth writes one Verilog module per *instance*: the 1024 PEs of the ``mixtral`` core would be
1024 copies of one module, each elaborated in Python, converted and later mapped by Yosys one
by one. :func:`convert` instead emits every repeated block (a PE, a row's LSB augmentation)
once: a parent calls :func:`leaf` for each instance; while :func:`convert` runs, that converts
the block once per distinct parameter set (a module named after its class and parameters) and
instantiates it with ``amaranth.hdl.Instance``; the module texts are appended to the top's.
Outside :func:`convert` (Amaranth's own simulator, formal harnesses through RTLIL) :func:`leaf`
adds the block as an ordinary submodule, so the two paths elaborate the same class. Done at
elaboration, not as a pass over the RTLIL, because the cost being removed is the elaboration
and netlisting of every instance in Python, not only the text.

Large blocks (:func:`part`)
---------------------------
A block built once but large (the core's executor, PE array and vector blocks) can be converted on
its own too: :func:`part` instantiates the already built component, its ports being its own port
signals, so the parent connects it as before. Each part's netlist and Yosys run are freed before
the next, so a conversion's memory follows its largest part rather than the whole design
(``docs/scale.md``: the ``mixtral`` core).
"""

import contextvars
import json
import re
from contextlib import contextmanager
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import ClockSignal, Instance, ResetSignal, Value
from amaranth.lib import wiring

from .interface_doc import describe, markdown, verilog_ports

# Yosys's Verilog back end makes every ``always @*`` block sensitive to a dummy register
# (``reg \$auto$verilog_backend.cc:NNNN:dump_module$N = 0;``) so that simulators evaluate the
# block at time 0. Icarus 11 applies that declaration initializer before the blocks wait on it,
# so no event fires: combinational outputs that depend only on registers (an FSM's ``ready`` in
# its reset state) stay X until those registers first change.
_DUMMY = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend\.cc:\d+:dump_module\$\d+ ) = 0;$", re.M)


def icarus_start(text):
    """``text`` with each dummy register toggled once at time 0 on Icarus (``__ICARUS__``).

    The toggle (``initial #0 ... = 1'b1``) runs after every process has started, which evaluates
    every such block once. It sits inside `` `ifdef __ICARUS__ ``, a macro only Icarus defines,
    so Verilator, Yosys and OpenSTA read the file as Amaranth wrote it.
    """
    return _DUMMY.sub(lambda m: f"{m.group(1)}reg {m.group(2)} = 0;\n"
                                f"`ifdef __ICARUS__\n"
                                f"{m.group(1)}initial #0 {m.group(2)} = 1'b1;\n"
                                f"`endif", text)


# {module name: Verilog text} of the leaf modules of the conversion in progress (None: none).
_LEAVES = contextvars.ContextVar("elmoe3d_leaves", default=None)
_TOP_ATTR = re.compile(r"^\(\* top =\s*1\s*\*\)\n", re.M)


def leaf_name(kind, key):
    """The Verilog module name of block ``kind`` with parameters ``key`` (a dict)."""
    parts = "_".join(f"{k}{int(v) if isinstance(v, bool) else v}" for k, v in key.items())
    return re.sub(r"[^A-Za-z0-9_]", "_", f"elmoe3d_{kind}_{parts}")


def leaf(m, name, build, kind, key, ports):
    """Add the block ``build()`` (a ``wiring.Component``) to module ``m`` as submodule ``name``,
    its ports connected to ``ports`` (``{port name: value}``, names as in the Verilog: member
    paths joined by ``__``; every port of the block is given).

    During :func:`convert` the block becomes an instance of one module per distinct ``(kind,
    key)`` (``key``: a dict of the parameters that fully determine its logic: equal keys must
    mean equal designs), and ``build`` is called once per module, not per instance; otherwise
    it is an ordinary submodule whose ports are assigned from (inputs) and to (outputs) the
    given values, so both paths simulate the same.
    """
    leaves = _LEAVES.get()
    if leaves is None:
        block = build()
        m.submodules[name] = block
        for path, member, value in block.signature.flatten(block):
            port = "__".join(map(str, path))
            if port not in ports:
                raise ValueError(f"leaf {name}: port {port} not connected")
            m.d.comb += value.eq(ports[port]) if member.flow == wiring.In else ports[port].eq(value)
        return
    module = leaf_name(kind, key)
    # converted once per conversion (not cached across conversions: the generator's code may
    # differ between two conversions of one process, as in a test that patches it)
    if module not in leaves:
        block = build()
        text = verilog.convert(block, name=module, emit_src=False)
        dirs = {"__".join(map(str, path)): "i" if member.flow == wiring.In else "o"
                for path, member, value in block.signature.flatten(block)}
        # one module of the file is the top: the leaf drops Yosys's `top` attribute
        leaves[module] = (_TOP_ATTR.sub("", text), dirs)
    text, dirs = leaves[module]
    present = _header_ports(text, module)
    args = {}
    if "clk" in present:
        args["i_clk"] = ClockSignal()
    if "rst" in present:
        args["i_rst"] = ResetSignal()
    for port, d in dirs.items():
        if port not in ports:
            raise ValueError(f"leaf {name}: port {port} not connected")
        if port in present:            # a port the design does not use is not in the module
            args[f"{d}_{port}"] = Value.cast(ports[port])
    m.submodules[name] = Instance(module, **args)


# Amaranth numbers the nets of a design's top input ports below 2**16 (two reserved): a block
# with more input bits cannot be converted on its own and stays an ordinary submodule.
MAX_PART_INPUT_BITS = (1 << 16) - 2


def input_bits(block):
    """Bits of the input ports of the component ``block``."""
    return sum(len(Value.cast(value)) for path, member, value in block.signature.flatten(block)
               if member.flow == wiring.In)


def part(m, name, block, kind, key):
    """Add the component ``block`` (already built, its ports connected by the parent as usual)
    to ``m`` as submodule ``name``, converted on its own during :func:`convert`.

    A large block instantiated once (the executor, the PE array's top) is a separate conversion
    then: its netlist and its Yosys run are freed before the parent's are built, so the memory
    of a conversion follows its largest part, not the whole core; equal ``(kind, key)`` share
    one module (the two requantizers). The instance's ports are the block's own port signals.
    Outside a conversion, or for a block whose inputs exceed :data:`MAX_PART_INPUT_BITS`, it is
    an ordinary submodule.
    """
    if _LEAVES.get() is None or input_bits(block) > MAX_PART_INPUT_BITS:
        m.submodules[name] = block
        return
    ports = {"__".join(map(str, path)): value for path, member, value in block.signature.flatten(block)}
    leaf(m, name, lambda: block, kind, key, ports)


def digest(*values):
    """A short stable digest of ``values`` (their ``repr``), for a key naming a block built from a
    whole configuration."""
    import hashlib
    return hashlib.sha1(repr(values).encode()).hexdigest()[:10]


def _header_ports(text, module):
    match = re.search(rf"^module {re.escape(module)}\(([^)]*)\);", text, re.M)
    return {p.strip() for p in match.group(1).split(",") if p.strip()}


@contextmanager
def _collect_leaves():
    token = _LEAVES.set({})
    try:
        yield _LEAVES.get()
    finally:
        _LEAVES.reset(token)


def convert(component, name):
    """Verilog text of ``component`` as module ``name``, each repeated block (:func:`leaf`) one
    module, appended after the top's (so the file's first module is the top)."""
    with _collect_leaves() as leaves:
        text = verilog.convert(component, name=name, emit_src=False)
    for module in sorted(leaves):
        text += "\n" + leaves[module][0]
    return icarus_start(text)


def port_list(component):
    """``[{"name", "dir", "width"[, "stream", "role"][, "fields"]}]`` of a component's ports.

    Port names join member paths with ``__`` (Amaranth's convention); ``clk`` and ``rst`` come
    from the ``sync`` domain. See :func:`elmoe3d.hw.interface_doc.describe`.
    """
    return describe(component)["ports"]


def write_verilog(component, name, out_dir, params):
    """Write ``<out_dir>/<name>.v``, ``<name>.json`` and ``<name>.md``; returns the ``.v`` path.
    (``elmoe3d generate`` adds ``<name>_commands.h`` beside a top that executes command streams.)

    ``params`` is a JSON-serializable dict of the generator's parameters.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = convert(component, name)
    v_path = out_dir / f"{name}.v"
    v_path.write_text(text)
    doc = describe(component, verilog_ports(text, name))
    from ..config import DEFAULT, AccelConfig
    # The accelerator configuration: the one a top is built from (the core, the command
    # processor), else the one whose values the generator's defaults come from (parameters given
    # on the command line override them; `params` holds what was built).
    own = getattr(component, "config", None)
    accel = own if isinstance(own, AccelConfig) else DEFAULT
    meta = {"top": name, "params": params, "ports": doc.pop("ports"), "interface": doc,
            "accelerator_config": accel.to_dict()}
    (out_dir / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out_dir / f"{name}.md").write_text(markdown(name, params, {**doc, "ports": meta["ports"]}))
    return v_path
