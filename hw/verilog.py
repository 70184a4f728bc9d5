"""Verilog generation: one entry point that cocotb, Yosys and OpenSTA all consume.

:func:`write_verilog` converts an Amaranth ``wiring.Component`` and writes, beside the ``.v``
file, a ``.json`` with the generator parameters, the port list (name, direction, width and, per
payload field, bit offset, width, signedness and enum encoding) and the interface rules and notes
(``interface``), and a ``.md`` page with the same description (:mod:`.interface_doc`), so
firmware, benches, reports and a reader who only has the Verilog use one source of truth.

The ``.v`` starts correctly on every simulator as written (see :func:`icarus_start`).
"""

import json
import re
from pathlib import Path

from amaranth.back import verilog

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
    text = icarus_start(verilog.convert(component, name=name, emit_src=False))
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
