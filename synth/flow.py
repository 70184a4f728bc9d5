"""The synthesis flow behind ``elmoe3d synth``: Verilog -> Yosys -> OpenSTA -> report.

Public entry points (all write every intermediate file into ``out_dir``):

* :func:`synthesize` -- a registered top (``elmoe3d.hw.tops``) by name and parameters;
* :func:`synthesize_component` -- any Amaranth ``wiring.Component`` (tests, ad-hoc designs);
* :func:`synthesize_verilog` -- existing Verilog files and a top module name.

Each returns the report as a dict and writes ``report.json`` and ``report.md``: area per module
(um^2 with the sequential share; NAND2 equivalents without a Liberty file), worst slack, TNS and
Fmax at the clock target, power in mW at the stated input activity, and energy per MAC in pJ for
each mode the top declares (``Top.macs_per_cycle``): ``E = P * T / (MACs per cycle)``, the
power at the target clock divided by the MACs done per second.

Without a Liberty file only the technology-independent area is reported; with one but without
OpenSTA, area in um^2 and a sentence saying timing and power need OpenSTA.
"""

import fnmatch
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from ..errors import UserError
from . import macros as sram_macros
from . import hier_timing, sta_flow, yosys_flow

NO_LIBERTY = ("Timing and power need a Liberty file: pass --liberty FILE "
              "(or a shipped library: sky130hd, nangate45).")
MAX_TABLE_ROWS = 40


def _stderr_log(line):
    print(f"elmoe3d synth: {line}", file=sys.stderr, flush=True)


def _check_settings(clock_ns, activity):
    if not (isinstance(clock_ns, (int, float)) and 0 < clock_ns < float("inf")):
        raise UserError(f"clock period must be a positive number of ns, got {clock_ns!r}")
    if not (isinstance(activity, (int, float)) and 0.0 <= activity <= 1.0):
        raise UserError(f"activity must be in [0, 1], got {activity!r}")


def _out_dir(out_dir):
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"cannot write reports into {out_dir}: it is a file")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


_CHECKED_LIBERTY = {}


def check_liberty(path, shown=None):
    """Refuse, with the cause named, a Liberty file the flow cannot map onto.

    Yosys reports a file without combinational cells only as "Can't open ABC output file", and a
    truncated one as a syntax error deep in its log, so the text is checked here first: a
    ``library (...)`` group opening near the start, balanced braces, at least one cell, one cell
    with a ``function`` (ABC maps logic onto those) and one with an ``ff`` group (``dfflibmap``
    maps flip-flops onto those). Results are remembered per (path, size, mtime).
    """
    path = Path(path)
    shown = shown or str(path)
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key in _CHECKED_LIBERTY:
            return path
        text = path.read_bytes().decode("latin-1")
    except OSError as exc:
        from ..paths import os_error_message
        raise UserError(os_error_message(exc, shown, "cannot read Liberty file")) from None
    if not text.strip():
        raise UserError(f"Liberty file {shown} is empty")
    if not re.search(r"^\s*library\s*\(", text[:65536], flags=re.M):
        raise UserError(f"{shown} does not look like a Liberty file (no 'library (...)' group at its start)")
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)            # comments may hold anything
    if text.count("{") != text.count("}"):
        raise UserError(f"Liberty file {shown} is truncated or malformed: {text.count('{')} '{{' "
                        f"against {text.count('}')} '}}'")
    if not re.search(r"\bcell\s*\(", text):
        raise UserError(f"Liberty file {shown} defines no cell")
    cells = re.split(r"\bcell\s*\(", text)[1:]
    sequential = re.compile(r"\b(ff|latch|ff_bank|latch_bank|statetable)\s*\(")
    if not any(re.search(r"\bfunction\s*:", c) and not sequential.search(c) for c in cells):
        raise UserError(f"Liberty file {shown} has no combinational cell (no cell with a pin 'function' "
                        "and no ff/latch group): logic cannot be mapped onto it")
    if not any(re.search(r"\bff\s*\(", c) for c in cells):
        raise UserError(f"Liberty file {shown} has no flip-flop cell (no 'ff' group): registers cannot "
                        "be mapped onto it")
    _CHECKED_LIBERTY[key] = True
    return path


def resolve_liberty(liberty):
    """``None``, a shipped short name (``sky130hd``, ``nangate45``) or a path -> readable path,
    checked by :func:`check_liberty`."""
    if liberty is None:
        return None
    from ..toolchain import LIBERTY_FILES, liberty_path
    if str(liberty) == "":
        raise UserError("--liberty: an empty name; give a Liberty file or sky130hd, nangate45")
    given = Path(liberty)
    if str(liberty) not in LIBERTY_FILES and given.is_file() and given.stat().st_size == 0:
        raise UserError(f"Liberty file {liberty} is empty")
    return check_liberty(liberty_path(str(liberty)), str(liberty))


def synthesize(top_name, params, out_dir, liberty=None, clock_ns=5.0, activity=0.2, *,
               flatten=False, idle_ports=(), macros=True, log=_stderr_log):
    """Synthesize a registered top with ``params`` (a dict; missing ones take defaults)."""
    from ..hw.tops import get_top
    _check_settings(clock_ns, activity)
    top = get_top(top_name)
    params = top.resolve(dict(params or {}))
    lib = resolve_liberty(liberty)        # refuse a bad Liberty before the slow work
    if log:
        log(f"building {top_name} ({_format_params(params) or 'defaults'}) ...")
    component = top.build(**params)
    macs = top.macs_per_cycle(**params) if top.macs_per_cycle else None
    return synthesize_component(component, top_name, out_dir, params=params, macs_per_cycle=macs,
                                liberty=lib, clock_ns=clock_ns, activity=activity, flatten=flatten,
                                idle_ports=idle_ports, macros=macros, log=log)


def synthesize_component(component, name, out_dir, *, params=None, macs_per_cycle=None, liberty=None,
                         clock_ns=5.0, activity=0.2, flatten=False, idle_ports=(), macros=True,
                         log=_stderr_log):
    """Synthesize an Amaranth component as Verilog module ``name``.

    ``macs_per_cycle`` (``{mode: MACs per cycle}``) adds energy per MAC to the report.
    """
    from ..hw.verilog import port_list, write_verilog
    _check_settings(clock_ns, activity)
    lib = resolve_liberty(liberty)
    inputs = [p["name"] for p in port_list(component) if p["dir"] == "in" and p["name"] != "clk"]
    for pattern in idle_ports:                 # refuse before the slow work
        if not any(fnmatch.fnmatchcase(name, pattern) for name in inputs):
            raise UserError(f"--idle {pattern}: no input port of {name} matches; its inputs: {', '.join(inputs)}")
    out_dir = _out_dir(out_dir)
    start = time.monotonic()
    if log:
        log(f"writing Verilog for {name} ...")
    v_path = write_verilog(component, name, out_dir, params or {})
    seconds = time.monotonic() - start
    report = synthesize_verilog([v_path], name, out_dir, params=params, macs_per_cycle=macs_per_cycle,
                                liberty=lib, clock_ns=clock_ns, activity=activity, flatten=flatten,
                                idle_ports=idle_ports, macros=macros, log=log)
    report["runtime_s"]["verilog"] = round(seconds, 2)
    _write_reports(report, out_dir)
    return report


def synthesize_verilog(verilog_files, top, out_dir, *, params=None, macs_per_cycle=None, liberty=None,
                       clock_ns=5.0, activity=0.2, flatten=False, dont_use=None, idle_ports=(),
                       macros=True, log=_stderr_log):
    """Synthesize Verilog files (a path or a list) with top module ``top``; see the module doc.

    ``idle_ports``: name patterns of input ports held still (activity 0) in the power analysis,
    for example ``["i_lsb__*"]`` for a mode that never uses the LSB planes.
    ``macros``: map the memories onto the library's SRAM macros (:mod:`.macros`) when it has a
    set and its files are present; ``False`` keeps them as flip-flops. The report says which.
    """
    _check_settings(clock_ns, activity)
    lib = resolve_liberty(liberty)
    out_dir = _out_dir(out_dir)
    if isinstance(verilog_files, (str, Path)):
        verilog_files = [verilog_files]
    runtime = {}
    notes = []
    macro_files, memories = _macro_files(lib, macros, out_dir)
    if memories:
        notes.append(memories)
    start = time.monotonic()
    area = yosys_flow.synthesize_verilog(verilog_files, top, out_dir, liberty=lib, clock_ns=clock_ns,
                                         dont_use=dont_use, flatten=flatten, macros=macro_files, log=log)
    runtime["yosys"] = round(time.monotonic() - start, 2)
    timing = power = energy = None
    if lib is None:
        notes.append(NO_LIBERTY)
    elif sta_flow.sta_binary() is None:
        notes.append(sta_flow.STA_MISSING[0].upper() + sta_flow.STA_MISSING[1:] + ".")
    else:
        if area.get("unmapped"):
            notes.append("Cells the library could not implement were left in the netlist: "
                         + ", ".join(f"{c} x{n}" for c, n in sorted(area["unmapped"].items()))
                         + "; timing and power ignore them.")
        start = time.monotonic()
        for stale in ("sta.log", "timing.rpt"):              # a stale file would pass for this run's
            (out_dir / stale).unlink(missing_ok=True)
        if area.get("flat_failed"):
            notes.append("Yosys could not flatten the design for OpenSTA (" + area["flat_failed"] + "; the "
                         "WebAssembly Yosys has 4 GiB): no flat timing and no power; each distinct module "
                         "is timed alone (below), the paths between modules are not timed.")
            sta = {"clock_ns": clock_ns, "clock_port": None, "worst_slack_ns": None, "wns_ns": None,
                   "tns_ns": None, "met": None, "fmax_mhz": None, "timing_report": None, "power_mw": None,
                   "static_ports": []}
        else:
            try:
                sta = sta_flow.run_sta(area["netlist"], lib, top, out_dir, clock_ns=clock_ns,
                                       activity=activity, idle_ports=idle_ports,
                                       extra_liberty=area.get("macro_liberty", ()), log=log)
            except UserError as exc:
                sta = _timing_without_power(out_dir, clock_ns, exc)       # re-raises when there is no timing
                sta["clock_port"] = "clk" if "clk" in sta_flow.top_ports(area["netlist"], top) else None
                notes.append(f"OpenSTA stopped before its power report ({exc}); area and timing are reported, "
                             "power is not.")
        runtime["sta"] = round(time.monotonic() - start, 2)
        timing = {k: sta[k] for k in ("clock_ns", "clock_port", "worst_slack_ns", "wns_ns", "tns_ns", "met",
                                      "fmax_mhz", "timing_report")}
        if not flatten and len(area["modules"]) > 1 and area.get("netlist_hier"):
            start = time.monotonic()
            timing["modules"] = hier_timing.time_modules(
                area["netlist_hier"], lib, area["top"], out_dir, clock_ns=clock_ns,
                instances={n: m["instances"] for n, m in area["modules"].items()},
                extra_liberty=area.get("macro_liberty", ()), log=log)
            runtime["sta_modules"] = round(time.monotonic() - start, 2)
        if sta.get("power_mw"):
            power = {"activity": activity, "clock_mhz": 1000.0 / clock_ns, "static_ports": sta["static_ports"],
                     **sta["power_mw"]}
            energy = energy_per_mac(sta["power_mw"]["total"], clock_ns, macs_per_cycle)
        if sta["met"] is False:
            notes.append(f"The design misses the {clock_ns:g} ns target (Fmax {sta['fmax_mhz']:.1f} MHz); "
                         "power and energy are still computed at the target clock.")
        if sta["clock_port"] is None and not area.get("flat_failed"):
            notes.append("The design has no clk port: a virtual clock constrains input-to-output paths.")
    report = {
        "top": top, "params": params or {},
        "verilog": [str(Path(v).resolve()) for v in verilog_files],
        "liberty": str(lib) if lib else None,
        "library": area.get("library"),
        "clock_ns": clock_ns if lib else None,
        "activity": activity if lib else None,
        "flatten": flatten,
        "area": {k: v for k, v in area.items() if k not in ("yosys_log",)},
        "timing": timing, "power_mw": power, "energy": energy,
        "notes": notes,
        "tools": tool_versions(out_dir / "yosys.log", lib is not None),
        "runtime_s": runtime,
        "out_dir": str(out_dir.resolve()),
    }
    area_total = report["area"]["total"]
    area_total["sequential_share"] = (area_total["sequential_area"] / area_total["area"]
                                      if area_total["area"] else 0.0)
    report["area"]["groups"] = module_groups(area)
    report["area"]["cells_by_type"] = cells_by_type(area)
    _write_reports(report, out_dir)
    if log:
        log(f"wrote {out_dir / 'report.md'} and {out_dir / 'report.json'}")
    return report


def _timing_without_power(out_dir, clock_ns, exc):
    """The timing OpenSTA printed before it stopped (it has crashed in ``report_power`` on the
    whole core's netlist): :func:`.sta_flow.run_sta`'s keys, ``power_mw`` None; re-raises
    ``exc`` when the log holds no worst slack."""
    log_path = Path(out_dir) / "sta.log"
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    slack_m = re.search(r"worst slack\s+(\S+)", text)
    if not slack_m:
        raise exc
    slack = sta_flow._number(slack_m.group(1))
    tns_m = re.search(r"tns\s+(\S+)", text)
    checks = text.split("@@checks", 1)[-1].split("@@slack", 1)[0].strip()
    report = Path(out_dir) / "timing.rpt"
    report.write_text(checks + "\n")
    critical = clock_ns - slack
    return {"clock_ns": clock_ns, "clock_port": None,
            "worst_slack_ns": slack, "wns_ns": min(0.0, slack),
            "tns_ns": sta_flow._number(tns_m.group(1)) if tns_m else None, "met": slack >= 0,
            "fmax_mhz": 1000.0 / critical if critical > 0 else None, "timing_report": str(report),
            "power_mw": None, "static_ports": []}


def _macro_files(lib, macros, out_dir):
    """``(MacroFiles or None, a sentence for the report's notes)``: the library's SRAM macros
    prepared in ``out_dir``, or why the memories stay flip-flops."""
    if lib is None:
        return None, None
    key = sram_macros.macro_set_for(yosys_flow.library_name(lib))
    if not macros:
        return None, ("Memories as flip-flops (--no-macros)"
                      + (f"; this library has the {key} SRAM macro set." if key else "."))
    if key is None:
        return None, "Memories as flip-flops: this library has no SRAM macro set (Nangate 45 and sky130 hd do)."
    if not sram_macros.available(key):
        return None, (f"Memories as flip-flops: the {key} SRAM macros are missing from "
                      f"{sram_macros.SRAM_DIR}.")
    files = sram_macros.prepare(key, out_dir)
    names = ", ".join(m.name for m in files.macros)
    note = (f"Memories on SRAM macros ({key}: {names}): memory_libmap tiles each memory from the macro "
            "shapes (least macro area, leftover rounded up to whole macros); a memory's contents at reset are "
            "taken as unused (macros power up undefined). Macro figures are those of their Liberty files"
            + (" (fakeram45: CACTI estimates, not silicon)" if key == "nangate45" else "") + ".")
    if any(m.ports == "1rw" for m in files.macros):
        fmax = sram_macros.double_pump_fmax_mhz(key)
        note += " Rule: " + sram_macros.DUAL_PORT_RULE + (f" ({fmax:.0f} MHz here)." if fmax else ".")
    return files, note


def energy_per_mac(power_mw, clock_ns, macs_per_cycle):
    """``{"per_cycle_pj", "macs_per_cycle", "per_mac_pj": {mode: pJ}}``.

    Energy per cycle is ``P * T`` (mW x ns = pJ); per MAC it is that over the MACs per cycle.
    """
    per_cycle = power_mw * clock_ns
    result = {"per_cycle_pj": per_cycle, "macs_per_cycle": None, "per_mac_pj": None}
    if macs_per_cycle:
        for mode, macs in macs_per_cycle.items():
            if not (isinstance(macs, (int, float)) and macs > 0):
                raise ValueError(f"macs_per_cycle[{mode!r}] must be > 0, got {macs!r}")
        result["macs_per_cycle"] = dict(macs_per_cycle)
        result["per_mac_pj"] = {mode: per_cycle / macs for mode, macs in macs_per_cycle.items()}
    return result


def module_groups(area):
    """Modules grouped by name with every number replaced by ``*`` (``pe_3_5`` -> ``pe_*_*``).

    Amaranth writes one Verilog module per instance; grouping gives one row per kind of block.
    Each row sums over its instances: ``own_area`` (cells of the module itself), ``area`` (with
    submodules) and ``sequential_area`` (with submodules).
    """
    groups = {}
    for name, mod in area["modules"].items():
        key = re.sub(r"\d+", "*", name)
        g = groups.setdefault(key, {"module": key, "instances": 0, "own_area": 0.0, "area": 0.0,
                                    "sequential_area": 0.0, "macro_area": 0.0, "cells": 0})
        k = mod["instances"]
        g["instances"] += k
        g["own_area"] += mod["own_area"] * k
        g["area"] += mod["area"] * k
        g["macro_area"] += mod.get("macro_area", 0.0) * k
        g["sequential_area"] += mod["sequential_area"] * k
        g["cells"] += mod["cells"] * k
    total = area["total"]["area"] or 1.0
    for g in groups.values():
        g["share_of_design"] = g["area"] / total
        g["sequential_share"] = g["sequential_area"] / g["area"] if g["area"] else 0.0
    return list(groups.values())


def cells_by_type(area):
    """``{cell type: count}`` over the whole design (every instance), most frequent first."""
    counts = {}
    for mod in area["modules"].values():
        for cell, n in mod["cell_types"].items():
            counts[cell] = counts.get(cell, 0) + n * mod["instances"]
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def tool_versions(yosys_log, with_sta):
    versions = {"yosys": None, "sta": None}
    if Path(yosys_log).exists():
        m = re.search(r"Yosys (\d[\w.+]*)", Path(yosys_log).read_text(errors="replace"))
        versions["yosys"] = m.group(1) if m else None
    if with_sta and sta_flow.sta_binary():
        try:
            versions["sta"] = subprocess.run([sta_flow.sta_binary(), "-version"], capture_output=True,
                                             text=True, timeout=30).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            pass
    return versions


def _format_params(params):
    return ", ".join(f"{k}={v}" for k, v in (params or {}).items())


def _fmt(x, digits=1):
    return f"{x:,.{digits}f}".replace(",", " ")


def format_markdown(report):
    """The report as Markdown (what ``report.md`` holds)."""
    area = report["area"]
    unit = area["unit"]
    lib = report["library"]
    tech = lib is not None
    params = _format_params(report["params"])
    out = [f"# Synthesis report: `{report['top']}`" + (f" ({params})" if params else ""), ""]
    if tech:
        out.append(f"Library `{lib}` (`{report['liberty']}`), clock target {report['clock_ns']:g} ns "
                   f"({1000 / report['clock_ns']:.1f} MHz), input activity {report['activity']:g}.")
    else:
        out.append("No Liberty file: technology-independent area in NAND2 equivalents (Yosys internal "
                   "gates weighted by Nangate 45 nm X1 cell areas over NAND2_X1).")
    out += ["", "| figure | value |", "| --- | --- |"]
    tot = area["total"]
    macros = area.get("macros")
    if macros:
        out.append(f"| area (logic + macros) | {_fmt(tot['area'])} {unit} |")
        out.append(f"| logic area | {_fmt(tot['logic_area'])} {unit} |")
        out.append(f"| macro area | {_fmt(tot['macro_area'])} {unit} ("
                   + ", ".join(f"{n} x `{c}`" for c, n in sorted(tot["macros"].items())) + ") |")
    else:
        out.append(f"| area | {_fmt(tot['area'])} {unit} |")
    if tech:
        out.append(f"| memories | {'SRAM macros (' + macros['set'] + ')' if macros else 'flip-flops'} |")
    out.append(f"| sequential area | {_fmt(tot['sequential_area'])} {unit} "
               f"({100 * tot['sequential_share']:.1f} %) |")
    out.append(f"| cells | {tot['cells']} |")
    timing, power, energy = report["timing"], report["power_mw"], report["energy"]
    if timing:
        slack = timing["worst_slack_ns"]
        if area.get("flat_failed"):
            out.append(f"| worst slack at {timing['clock_ns']:g} ns | not timed flat (the design did not flatten; "
                       "per module below) |")
        elif slack is None:
            out.append(f"| worst slack at {timing['clock_ns']:g} ns | no constrained path |")
        else:
            out.append(f"| worst slack at {timing['clock_ns']:g} ns | {slack:.3f} ns "
                       f"({'met' if timing['met'] else 'VIOLATED'}) |")
            out.append(f"| total negative slack | {timing['tns_ns']:.3f} ns |")
        if timing["fmax_mhz"]:
            out.append(f"| Fmax | {timing['fmax_mhz']:.1f} MHz |")
    if power:
        out.append(f"| power at activity {power['activity']:g}, {power['clock_mhz']:.1f} MHz | "
                   f"{power['total']:.4g} mW (internal {power['internal']:.3g}, switching "
                   f"{power['switching']:.3g}, leakage {power['leakage']:.3g}; sequential "
                   f"{power['sequential']:.3g}) |")
    if energy:
        out.append(f"| energy per cycle | {energy['per_cycle_pj']:.4g} pJ |")
    if report.get("runtime_s"):
        out.append("| wall time per step | " + ", ".join(f"{k} {v:.1f} s" for k, v in report["runtime_s"].items())
                   + " |")
    if timing and timing.get("modules"):
        mods = timing["modules"]
        out += ["", "## Timing per distinct module", "",
                "Each distinct module timed once, alone (OpenSTA `link_design` of the module, the same clock, "
                "zero input/output delays: paths inside the module and between its ports and its registers). "
                "Paths between modules are timed by the flat run above (its Fmax is the design's).", "",
                "| module | instances | worst slack ns | Fmax MHz | worst endpoint |", "| --- | ---: | ---: | ---: | --- |"]
        ranked = sorted(mods.items(), key=lambda kv: (kv[1]["worst_slack_ns"] is None, kv[1]["worst_slack_ns"] or 0))
        for name, t in ranked[:MAX_TABLE_ROWS]:
            slack = "-" if t["worst_slack_ns"] is None else f"{t['worst_slack_ns']:.3f}"
            fmax = "-" if not t["fmax_mhz"] else f"{t['fmax_mhz']:.1f}"
            out.append(f"| `{name}` | {t['instances'] or '-'} | {slack} | {fmax} | "
                       f"{('`' + t['endpoint'] + '`') if t['endpoint'] else (t['error'] or '-')} |")
        if len(ranked) > MAX_TABLE_ROWS:
            out.append(f"| ... {len(ranked) - MAX_TABLE_ROWS} more in report.json | | | | |")
    if energy and energy["per_mac_pj"]:
        out += ["", "## Energy per MAC", "", "| mode | MACs per cycle | pJ per MAC |", "| --- | ---: | ---: |"]
        for mode, pj in energy["per_mac_pj"].items():
            out.append(f"| {mode} | {energy['macs_per_cycle'][mode]:g} | {pj:.4g} |")
        out += ["", "Power is that of one netlist at one input activity; the modes differ in the "
                "MACs they complete per cycle."]
    out += ["", "## Area by module", "",
            f"Modules whose names differ only in numbers are summed in one row. Own: cells of the "
            f"module itself; total: with its submodules ({unit}).", "",
            "| module | instances | own | total | of design | sequential |" + (" of which macros |" if macros else ""),
            "| --- | ---: | ---: | ---: | ---: | ---: |" + (" ---: |" if macros else "")]
    groups = area["groups"]
    for g in groups[:MAX_TABLE_ROWS]:
        out.append(f"| `{g['module']}` | {g['instances']} | {_fmt(g['own_area'])} | {_fmt(g['area'])} | "
                   f"{100 * g['share_of_design']:.1f} % | {100 * g['sequential_share']:.1f} % |"
                   + (f" {_fmt(g.get('macro_area', 0.0))} |" if macros else ""))
    if len(groups) > MAX_TABLE_ROWS:
        out.append(f"| ... {len(groups) - MAX_TABLE_ROWS} more in report.json | | | | | |" + (" |" if macros else ""))
    if macros:
        out += ["", "Macros: " + "; ".join(f"`{n}` {d['words']} x {d['bits']} {d['ports']}, {_fmt(d['area_um2'])} um^2"
                                           for n, d in macros["macros"].items()) + "."]
    cells = area.get("cells_by_type", {})
    if cells:
        shown = list(cells.items())[:12]
        rest = sum(cells.values()) - sum(n for _, n in shown)
        out += ["", "Most used cells: " + ", ".join(f"`{c}` x{n}" for c, n in shown)
                + (f", {rest} others" if rest else "") + "."]
    if area.get("unweighted_cells"):
        out += ["", "Cells without a NAND2 weight (not counted): "
                + ", ".join(f"`{c}` x{n}" for c, n in sorted(area["unweighted_cells"].items()))]
    if report["notes"]:
        out += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    out += ["", "## Method", ""]
    if tech:
        flat = "flattened" if report["flatten"] else "hierarchy kept"
        buffered = (f", buffering and sizing with inputs driven by {area['driving_cell']}"
                    if area.get("driving_cell") else "")
        out.append(f"- Yosys {report['tools']['yosys'] or ''}: `synth -top` ({flat}), `dfflibmap`, "
                   f"`abc -D {yosys_flow.abc_delay_ps(report['clock_ns'])}` (ps, "
                   f"{yosys_flow.ABC_DELAY_TARGET:g} of the period{buffered})"
                   + (f" with dont_use {', '.join(area['dont_use'])}" if area.get("dont_use") else "")
                   + ", `stat -liberty`.")
        if timing:
            out.append("- OpenSTA on the flattened netlist: ideal clock, zero input/output delays, no "
                       "driving cells, loads or wires (pre-layout); Fmax = 1 / (T - worst slack).")
            quiet = ", ".join(power["static_ports"]) if power and power["static_ports"] else ""
            out.append("- Power: `set_power_activity -input` on all inputs but the clock"
                       + (f" and {quiet} (held at activity 0)" if quiet else "")
                       + ", propagated by OpenSTA; energy per cycle = P x T, per MAC = P x T / MACs per cycle.")
        out.append("- Files: `netlist.v`, `yosys.log`, `stat.txt`" + (", `timing.rpt`, `sta.log`" if timing else "")
                   + f" in `{report['out_dir']}`.")
    else:
        out.append(f"- Yosys {report['tools']['yosys'] or ''}: `synth -top` onto its internal gates, `stat`.")
        out.append(f"- {NO_LIBERTY}")
    return "\n".join(out) + "\n"


def _write_reports(report, out_dir):
    out_dir = Path(out_dir)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out_dir / "report.md").write_text(format_markdown(report))
