"""Static timing and power with OpenSTA (the ``sta`` binary) on the Yosys gate-level netlist.

Constraints, the same for every design (stated in each report): one ideal clock on port ``clk``
(a virtual clock when the design has no ``clk`` port) with the target period, zero input and
output delays relative to it, no driving cells, output loads or wire loads (pre-layout). Worst
slack gives ``Fmax = 1 / (T - slack)``.

Power: ``set_power_activity -input -activity A`` (toggles per clock cycle on every input but the
clock and the reset, which is held inactive), propagated through the logic by OpenSTA, then
``report_power`` (watts, converted to mW).

Notes on the Debian ``sta`` (a 2019 snapshot): ``report_worst_slack`` takes no ``-max``; a
``report_power`` before ``set_power_activity`` leaves stale activities that change a later
report, so each run sets the activity once and reports power once; errors are printed as
``Error: ...`` lines while the script goes on, so the output is checked for them.
"""

import fnmatch
import re
import shutil
import subprocess
import time
from pathlib import Path

from ..errors import UserError

STA_MISSING = "timing and power need OpenSTA: install the 'sta' binary (apt-get install opensta)"


def sta_binary():
    """The ``sta`` executable, or None."""
    return shutil.which("sta")


def _tcl_path(path):
    """A file name as one Tcl word: in braces, so spaces, brackets, quotes and $ stay literal
    (a brace or backslash cannot be quoted that way and is refused)."""
    text = str(path)
    if any(c in text for c in '{}\\\n'):
        raise UserError(f"cannot pass {text!r} to OpenSTA: braces, backslashes or newlines in the name")
    return "{" + text + "}"


def top_ports(netlist, top):
    """Port names of module ``top`` in a Verilog netlist (``module top(a, b, ...);``)."""
    text = Path(netlist).read_text()
    match = re.search(r"\bmodule\s+\\?" + re.escape(top) + r"\s*\(([^;]*)\)\s*;", text)
    if not match:
        raise UserError(f"module {top} not found in {netlist}")
    return [p.strip().lstrip("\\").split()[-1] for p in match.group(1).split(",") if p.strip()]


def input_ports(netlist):
    """Names of the input ports declared in a Yosys-written netlist (``input [7:0] a;``)."""
    text = Path(netlist).read_text()
    return re.findall(r"^\s*input\s+(?:\[[^\]]*\]\s*)?\\?([^\s;]+)\s*;", text, flags=re.M)


def library_lines(liberty, extra_liberty=()):
    """Script lines reading the standard cells and any ``extra_liberty`` (SRAM macros), in ns."""
    return [f"read_liberty {_tcl_path(liberty)}", *(f"read_liberty {_tcl_path(x)}" for x in extra_liberty),
            "set_cmd_units -time ns"]


def design_lines(netlist, top, clock_ns, clock_port="clk", has_clock_port=True, io_delays=True):
    """Script lines reading ``netlist`` and linking ``top`` with an ideal clock of ``clock_ns``
    (on ``clock_port``, or virtual); ``io_delays``: zero input/output delays against it."""
    lines = [f"read_verilog {_tcl_path(netlist)}", f"link_design {{{top}}}",
             f"create_clock -name clk -period {clock_ns:.6g}" + (f" [get_ports {clock_port}]" if has_clock_port else "")]
    if io_delays:
        inputs = (f"[delete_from_list [all_inputs] [get_ports {clock_port}]]" if has_clock_port
                  else "[all_inputs]")
        lines += [f"set_input_delay 0 -clock clk {inputs}", "set_output_delay 0 -clock clk [all_outputs]"]
    return lines


def sta_script(netlist, liberty, top, clock_ns, activity, clock_port="clk", has_clock_port=True,
               static_ports=(), extra_liberty=()):
    """The OpenSTA Tcl script; markers ``@@name`` separate the sections of its output.

    ``static_ports`` (such as the reset) keep activity 0 in the power analysis.
    ``extra_liberty``: more Liberty files read after ``liberty`` (SRAM macros).
    """
    return "\n".join([
        *library_lines(liberty, extra_liberty),
        *design_lines(netlist, top, clock_ns, clock_port, has_clock_port),
        'puts "@@checks"',
        "report_checks -path_delay max -digits 3",
        'puts "@@slack"',
        "report_worst_slack -digits 4",
        "report_tns -digits 4",
        'puts "@@power"',
        f"set_power_activity -input -activity {activity:.6g}",
        *(f"set_power_activity -input_ports [get_ports {p}] -activity 0" for p in static_ports),
        "report_power -digits 6",
        'puts "@@end"',
        "exit",
    ]) + "\n"


def parse_sta_output(text):
    """Figures from the script's output: slack, TNS (ns), power per group (W), the path text."""
    errors = [ln.strip() for ln in text.splitlines() if ln.startswith("Error")]
    if errors:
        raise UserError(f"OpenSTA failed: {errors[0]}")
    sections = dict(re.findall(r"@@(\w+)\n(.*?)(?=@@\w+\n)", text, flags=re.S))
    if "slack" not in sections or "power" not in sections:
        raise UserError("OpenSTA output incomplete (no slack or power section)")
    slack_m = re.search(r"worst slack\s+(\S+)", sections["slack"])
    tns_m = re.search(r"tns\s+(\S+)", sections["slack"])
    if not slack_m:
        raise UserError("OpenSTA printed no worst slack")
    slack = _number(slack_m.group(1))
    power = {}
    for line in sections["power"].splitlines():
        parts = line.split()
        if parts and parts[0] in ("Sequential", "Combinational", "Macro", "Pad", "Total") and len(parts) >= 5:
            try:
                power[parts[0].lower()] = {"internal": float(parts[1]), "switching": float(parts[2]),
                                           "leakage": float(parts[3]), "total": float(parts[4])}
            except ValueError:
                continue
    if "total" not in power:
        raise UserError("OpenSTA printed no power total")
    return {"worst_slack_ns": slack, "tns_ns": _number(tns_m.group(1)) if tns_m else None,
            "power_w": power, "critical_path": sections.get("checks", "").strip()}


def _number(text):
    try:
        return float(text)
    except ValueError:
        low = text.lower()
        if low in ("inf", "+inf", "infinity"):
            return float("inf")
        if low in ("-inf", "-infinity"):
            return float("-inf")
        raise UserError(f"OpenSTA printed {text!r} where a number was expected") from None


def run_script(binary, script, out_dir, log_name):
    """Run OpenSTA ``binary`` on ``script`` (a file in ``out_dir``, passed by its name: OpenSTA
    sources it through Tcl, where a space in a path would split it); its output is written to
    ``out_dir / log_name``. Returns (output text, wall seconds)."""
    start = time.monotonic()
    result = subprocess.run([binary, "-no_init", "-no_splash", "-exit", Path(script).name], cwd=out_dir,
                            capture_output=True, text=True)
    text = result.stdout + result.stderr
    (Path(out_dir) / log_name).write_text(text)
    return text, time.monotonic() - start


def run_sta(netlist, liberty, top, out_dir, *, clock_ns=5.0, activity=0.2, clock_port="clk",
            static_ports=("rst",), idle_ports=(), extra_liberty=(), log=None):
    """Timing and power of a gate-level netlist; returns a dict of figures.

    ``static_ports`` present in the design (by default the synchronous reset, held inactive while
    the design works) toggle at activity 0 rather than ``activity``. ``idle_ports`` are name
    patterns (``i_lsb__*``) of more ports held still, for the power of a mode that leaves them
    idle; a pattern that matches no port is refused.

    Keys: ``clock_ns``, ``worst_slack_ns``, ``wns_ns`` (``min(0, worst slack)``), ``tns_ns``, ``met`` (slack >= 0), ``fmax_mhz``
    (None when nothing is constrained), ``activity``, ``power_mw`` (internal, switching, leakage,
    total; plus ``sequential_mw`` and ``combinational_mw``), ``timing_report`` (file with the
    critical path). Raises ``UserError`` when ``sta`` is missing or fails.
    """
    binary = sta_binary()
    if binary is None:
        raise UserError(STA_MISSING)
    if not clock_ns > 0:
        raise UserError(f"clock period must be > 0 ns, got {clock_ns}")
    if not 0.0 <= activity <= 1.0:
        raise UserError(f"activity must be in [0, 1], got {activity}")
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    netlist, liberty = Path(netlist).resolve(), Path(liberty).resolve()
    ports = top_ports(netlist, top)
    has_clock = clock_port in ports
    static = [p for p in static_ports if p in ports and p != clock_port]
    inputs = [p for p in input_ports(netlist) if p != clock_port] if idle_ports else []
    for pattern in idle_ports:
        matched = [p for p in inputs if fnmatch.fnmatchcase(p, pattern)]
        if not matched:
            raise UserError(f"--idle {pattern}: no input port of {top} matches; its inputs: {', '.join(inputs)}")
        static += [p for p in matched if p not in static]
    script = out_dir / "sta.tcl"
    script.write_text(sta_script(netlist, liberty, top, clock_ns, activity, clock_port, has_clock, static,
                                 [Path(x).resolve() for x in extra_liberty]))
    if log:
        log(f"running OpenSTA at {clock_ns:g} ns, input activity {activity:g} ...")
    text, seconds = run_script(binary, script, out_dir, "sta.log")
    if log:
        log(f"OpenSTA finished in {seconds:.1f} s (log {out_dir / 'sta.log'})")
    figures = parse_sta_output(text)
    (out_dir / "timing.rpt").write_text(figures.pop("critical_path") + "\n")
    slack = figures["worst_slack_ns"]
    critical = clock_ns - slack
    fmax = 1000.0 / critical if slack != float("inf") and critical > 0 else None
    power_w = figures.pop("power_w")
    power_mw = {k: v * 1e3 for k, v in power_w["total"].items()}
    power_mw["sequential"] = power_w.get("sequential", {}).get("total", 0.0) * 1e3
    power_mw["combinational"] = power_w.get("combinational", {}).get("total", 0.0) * 1e3
    return {"clock_ns": clock_ns, "clock_port": clock_port if has_clock else None,
            "worst_slack_ns": slack if slack != float("inf") else None,
            "wns_ns": min(0.0, slack), "tns_ns": figures["tns_ns"],
            "met": slack >= 0, "fmax_mhz": fmax, "activity": activity, "static_ports": static,
            "power_mw": power_mw,
            "timing_report": str(out_dir / "timing.rpt"), "sta_log": str(out_dir / "sta.log")}
