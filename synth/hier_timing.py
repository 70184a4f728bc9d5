"""Timing per distinct module (hierarchical synthesis, issue 21 item 2).

Yosys keeps the hierarchy (``synth -top`` without ``-flatten``) and writes the mapped design
with it (``netlist_hier.v``): each distinct module once, however many instances it has, so its
area is mapped once and multiplied by its instance count (:func:`.yosys_flow.parse_stat_json`).
This module times each distinct module once, in one OpenSTA run: ``link_design`` of the module
alone, the flow's constraints (ideal clock on ``clk``, zero input and output delays, so a path
from an input port or to an output port gets the whole period), ``report_worst_slack``.

What that covers and what it does not, stated in the report: the paths *inside* each module
(register to register, and the module's ports to and from its registers, each given a whole
cycle). The paths *between* modules (a register in one block through the other's input logic)
are timed only by the flat run over the whole netlist (:mod:`.sta_flow`), which the flow also
does; where a port of a block is both driven and captured through logic, the flat run's slack
is the lower.
"""

import re
from pathlib import Path

from ..errors import UserError
from . import sta_flow


def modules_of(netlist):
    """``{module: [port names]}`` of a Yosys-written netlist (escaped names unescaped)."""
    text = Path(netlist).read_text()
    out = {}
    for m in re.finditer(r"^module\s+\\?(\S+?)\s*\(([^;]*)\)\s*;", text, flags=re.M):
        out[m.group(1)] = [p.strip().lstrip("\\").split()[-1] for p in m.group(2).split(",") if p.strip()]
    return out


def split_modules(netlist, out_dir):
    """Write, for each module of ``netlist``, a file with it and the modules it instantiates
    (transitively) into ``out_dir/modules/``; returns ``{module: path}``. OpenSTA then reads only
    what each link needs instead of the whole netlist once per module."""
    text = Path(netlist).read_text()
    blocks = {m.group(1): m.group(0) for m in
              re.finditer(r"^module\s+\\?(\S+?)\s*\(.*?^endmodule\s*$", text, flags=re.S | re.M)}
    uses = {}
    for name, body in blocks.items():
        cells = set(re.findall(r"^\s*\\?(\S+)\s+\\?\S+\s*\(", body, flags=re.M))
        uses[name] = sorted(c for c in cells if c in blocks and c != name)

    def subtree(name, seen):
        for c in uses[name]:
            if c not in seen:
                seen.add(c)
                subtree(c, seen)
        return seen

    folder = Path(out_dir) / "modules"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for i, name in enumerate(blocks):
        path = folder / f"m{i}.v"
        path.write_text("\n".join(blocks[n] for n in [*sorted(subtree(name, set())), name]) + "\n")
        paths[name] = path
    return paths


def script(files, liberty, modules, clock_ns, extra_liberty=(), clock_port="clk"):
    """The OpenSTA script timing each of ``modules`` (``{name: ports}``) alone, reading
    ``files[name]`` (its netlist with its submodules) before linking it."""
    lines = sta_flow.library_lines(liberty, extra_liberty)
    for name, ports in modules.items():
        # read before each link: the Debian OpenSTA frees the Verilog modules when it links
        lines += [f'puts "@@module {name}"',
                  *sta_flow.design_lines(files[name], name, clock_ns, clock_port, clock_port in ports),
                  "report_worst_slack -digits 4",
                  "report_checks -path_delay max -digits 3 -format end"]
    lines += ['puts "@@end"', "exit"]
    return "\n".join(lines) + "\n"


def time_modules(netlist, liberty, top, out_dir, *, clock_ns, instances=None, extra_liberty=(), log=None):
    """Worst slack and Fmax of every distinct module of ``netlist`` but ``top``:
    ``{module: {"worst_slack_ns", "fmax_mhz", "instances", "endpoint", "error"}}`` (``fmax_mhz``
    None for a module without a constrained path). ``instances``: ``{module: count}`` for the report. Files ``sta_modules.tcl`` and
    ``sta_modules.log`` go into ``out_dir``."""
    binary = sta_flow.sta_binary()
    if binary is None:
        raise UserError(sta_flow.STA_MISSING)
    out_dir = Path(out_dir).resolve()
    mods = {name: ports for name, ports in modules_of(netlist).items() if name != top}
    if not mods:
        return {}
    path = out_dir / "sta_modules.tcl"
    files = {n: p.resolve() for n, p in split_modules(netlist, out_dir).items()}
    path.write_text(script(files, Path(liberty).resolve(), mods, clock_ns,
                           [Path(x).resolve() for x in extra_liberty]))
    if log:
        log(f"running OpenSTA on each of {len(mods)} distinct modules ...")
    text, seconds = sta_flow.run_script(binary, path, out_dir, "sta_modules.log")
    if log:
        log(f"OpenSTA per module finished in {seconds:.1f} s")
    out = {}
    for block in re.split(r"^@@module ", text, flags=re.M)[1:]:
        name, _, body = block.partition("\n")
        body = body.split("@@end", 1)[0]
        errors = [ln for ln in body.splitlines() if ln.startswith("Error")]
        slack_m = re.search(r"worst slack\s+(\S+)", body)
        slack = None
        if slack_m and not errors:
            try:
                slack = float(slack_m.group(1))
            except ValueError:
                slack = None
        if slack is not None and abs(slack) > 1e29:      # nothing constrained (OpenSTA prints 1e30)
            slack = None
        endpoint = None
        rows = [m.group(1) for m in re.finditer(r"^(\S+)(?:\s+\([^)]*\))?\s+-?[\d.]+\s+-?[\d.]+\s+-?[\d.]+",
                                                 body, flags=re.M)]
        if rows:
            endpoint = rows[0]
        out[name] = {"worst_slack_ns": slack,
                     "fmax_mhz": 1000.0 / (clock_ns - slack) if slack is not None and clock_ns - slack > 0 else None,
                     "instances": (instances or {}).get(name), "endpoint": endpoint,
                     "error": errors[0].strip() if errors else None}
    return out
