"""Verilog generation: one entry point that cocotb, Yosys and OpenSTA all consume.

:func:`write_verilog` converts an Amaranth ``wiring.Component`` and writes, beside the ``.v``
file, a ``.json`` with the generator parameters and the port list (name, direction, width), so
firmware, benches and reports read one source of truth.
"""

import json
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Value
from amaranth.lib import wiring


def port_list(component):
    """``[{"name", "dir", "width"}]`` of a component's ports, as the Verilog names them.

    Port names join member paths with ``__`` (Amaranth's convention); ``clk`` and ``rst`` come
    from the ``sync`` domain.
    """
    ports = [{"name": "clk", "dir": "in", "width": 1}, {"name": "rst", "dir": "in", "width": 1}]
    for path, member, value in component.signature.flatten(component):
        ports.append({"name": "__".join(str(p) for p in path),
                      "dir": "in" if member.flow == wiring.In else "out",
                      "width": len(Value.cast(value))})  # enum/struct views too
    return ports


def write_verilog(component, name, out_dir, params):
    """Write ``<out_dir>/<name>.v`` and ``<out_dir>/<name>.json``; returns the ``.v`` path.

    ``params`` is a JSON-serializable dict of the generator's parameters.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = verilog.convert(component, name=name, emit_src=False)
    v_path = out_dir / f"{name}.v"
    v_path.write_text(text)
    meta = {"top": name, "params": params, "ports": port_list(component)}
    (out_dir / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    return v_path
