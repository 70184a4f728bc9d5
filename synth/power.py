"""Power from simulated switching activity: SAIF / VCD dumps, per-block OpenSTA runs.

The Debian OpenSTA (a 2019 snapshot) has neither ``read_saif`` nor ``read_vcd``, and its
``report_power`` crashes (exit 139) on the whole core's netlist. The method here, per block:

1. A simulation dumps switching activity: a SAIF file from Verilator (``--trace-saif``: the
   native core bench's SAIF build, :mod:`elmoe3d.sim.benches.activity`; the cocotb benches'
   ``waves="saif"``) or a VCD (Verilator's ``--trace``, Amaranth's simulator). :func:`load_activity` reads either into an
   :class:`Activity`: per instance path, per net bit, its toggle count and time at 1.
2. Yosys writes the mapped design with its hierarchy (``netlist_hier.v``). Each block (a
   sub-module of the top) is linked alone in OpenSTA; every input port of it gets the toggle
   rate (toggles per clock cycle) and duty (fraction of time at 1) that the dump measured at
   that port of the simulated instance, with ``set_power_activity -input_ports``; OpenSTA
   propagates it through the block's logic and registers; ``report_power``.
3. The core's power is the sum of its blocks' (the top's own glue logic, a few registers and
   multiplexers between the blocks, is not counted: it is linked only with the whole core).

A port's rate is the mean over its bits (:func:`port_rates`), so a dump of one configuration
(a larger simulated core) annotates the netlist of another whose ports have other widths (the
cut-down core that synthesis reports): bench-core simulates the shipped-model preset and
synthesizes its ``synth`` configuration. Where a port is absent from the dump it toggles at 0.

:func:`power_entry` turns per-pass dumps into the ``"power"`` entry of ``bench_core.json``:
power per block, energy per pass at a clock (the reported Fmax), pJ per MAC of the whole core in
DRAFT and FULL, pJ per byte moved on chip, leakage, and the same figures at a flat input
activity of 0.2 beside them.
"""

import math
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from . import sta_flow

FLAT_ACTIVITY = 0.2          # the vectorless figure that simulated activity is compared with
CRASH_RETRIES = 1            # reruns of a block's OpenSTA run that died on a signal


@dataclass
class Activity:
    """Switching activity of a simulation: ``duration`` (in ``timescale_s`` seconds) and, per
    instance path (``"core/executor"``, ``/``-separated from the dump's root), per net bit
    (``"i_data__valid"``, ``"o_word[3]"``), ``(toggles, time at 1)``."""

    duration: float
    timescale_s: float
    nets: dict = field(default_factory=dict)

    def scope(self, path):
        """The nets of the instance whose path is ``path`` or ends with ``/path`` (``.`` or ``/``
        separated); a path that matches no instance, or several, is refused."""
        want = path.replace(".", "/").strip("/")
        hits = [p for p in self.nets if p == want or p.endswith("/" + want)]
        if len(hits) != 1:
            known = ", ".join(sorted(self.nets)[:8])
            raise UserError(f"activity dump: {'no' if not hits else 'more than one'} instance {path!r} "
                            f"({'several match' if hits else 'instances: ' + known})")
        return self.nets[hits[0]]

    def cycles(self, clock="clk", scope=None):
        """Clock cycles in the dump: half the toggles of ``clock`` (of ``scope`` or the first
        instance that has it)."""
        scopes = [self.scope(scope)] if scope else self.nets.values()
        for nets in scopes:
            if clock in nets:
                return nets[clock][0] / 2.0
        raise UserError(f"activity dump: no clock net {clock!r}")


def _timescale(text):
    m = re.fullmatch(r"\s*(\d+)\s*([munpf]?s)\s*", text)
    if not m:
        raise UserError(f"activity dump: timescale {text!r} not understood")
    return int(m.group(1)) * {"s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9, "ps": 1e-12, "fs": 1e-15}[m.group(2)]


def read_saif(path):
    """An :class:`Activity` from a SAIF file (Verilator's ``--trace-saif``: ``INSTANCE`` and
    ``NET`` groups with ``T0``, ``T1``, ``TC`` per bit; escaped names ``a\\[0\\]``)."""
    text = Path(path).read_text(errors="replace")
    if "(SAIFILE" not in text:
        raise UserError(f"{path} is not a SAIF file (no SAIFILE group)")
    dur = re.search(r"\(DURATION\s+([\d.eE+]+)\)", text)
    ts = re.search(r"\(TIMESCALE\s+([^)]*)\)", text)
    if not dur:
        raise UserError(f"{path}: no DURATION in the SAIF file")
    act = Activity(float(dur.group(1)), _timescale(ts.group(1)) if ts else 1e-9)
    stack = []                   # instance names; depth of parentheses at which each opened
    depth = 0
    token = re.compile(r"\(INSTANCE\s+(\S+)|\(([^\s()]+)\s+((?:\([A-Z][A-Z0-9]*\s+[\d.eE+]+\)\s*)+)\)|(\()|(\))")
    for m in token.finditer(text):
        inst, net, attrs, opening, closing = m.groups()
        if inst is not None:
            depth += 1
            stack.append((inst.replace("\\", ""), depth))
            act.nets.setdefault("/".join(s for s, _ in stack), {})
        elif net is not None:
            if not stack:
                continue
            fields = dict((k, float(v)) for k, v in re.findall(r"\(([A-Z][A-Z0-9]*)\s+([\d.eE+]+)\)", attrs))
            if "TC" in fields:
                act.nets["/".join(s for s, _ in stack)][net.replace("\\", "")] = (fields["TC"], fields.get("T1", 0.0))
        elif opening:
            depth += 1
        elif closing:
            if stack and stack[-1][1] == depth:
                stack.pop()
            depth -= 1
    return act


def read_vcd(path):
    """An :class:`Activity` from a VCD file: every ``$var`` bit's value changes counted (x and z
    count as 0), time at 1 summed up to the last timestamp."""
    act = None
    scopes, ids = [], {}          # id code -> [(scope path, bit names)]
    state = {}                    # id code -> current value string (MSB first)
    t1_since = {}                 # (id, bit index) -> time it went to 1
    counts = {}                   # (id, bit index) -> [toggles, time at 1]
    timescale = 1e-9
    now = 0.0
    seen = set()
    with open(path, errors="replace") as f:
        header = True
        pending = ""
        for line in f:
            if header:
                pending += line
                if "$enddefinitions" not in pending:
                    continue
                header = False
                for cmd, body in re.findall(r"\$(\w+)\s*(.*?)\s*\$end", pending, flags=re.S):
                    if cmd == "timescale":
                        timescale = _timescale(body)
                    elif cmd == "scope":
                        scopes.append(body.split()[-1])
                    elif cmd == "upscope":
                        scopes.pop()
                    elif cmd == "var":
                        parts = body.split()
                        if len(parts) < 4:
                            continue
                        width, code, name = int(parts[1]), parts[2], parts[3]
                        rng = parts[4] if len(parts) > 4 and parts[4].startswith("[") else ""
                        if width == 1:
                            bits = [name + rng if rng and ":" not in rng else name]
                        else:
                            m = re.fullmatch(r"\[(\d+):(\d+)\]", rng)
                            hi, lo = (int(m.group(1)), int(m.group(2))) if m else (width - 1, 0)
                            step = -1 if hi >= lo else 1
                            bits = [f"{name}[{i}]" for i in range(hi, lo + step, step)]
                        ids.setdefault(code, []).append(("/".join(scopes), bits))
                        state.setdefault(code, "0" * width)
                if not ids:
                    raise UserError(f"{path}: no $var in the VCD header")
                continue
            line = line.strip()
            if not line or line.startswith("$"):
                continue
            if line[0] == "#":
                now = float(line[1:])
                continue
            if line[0] in "01xzXZ":
                value, code = line[0], line[1:]
            elif line[0] in "bB":
                value, _, code = line[1:].partition(" ")
            else:
                continue                          # real values: not switching activity
            if code not in state:
                continue
            old = state[code]
            new = value.replace("x", "0").replace("z", "0").replace("X", "0").replace("Z", "0")
            new = new.rjust(len(old), "0")[-len(old):]
            first = code not in seen           # a net's first value sets it: no toggle
            seen.add(code)
            for i, (a, b) in enumerate(zip(old, new)):
                if a != b:
                    c = counts.setdefault((code, i), [0, 0.0])
                    c[0] += 0 if first else 1
                    if b == "1":
                        t1_since[(code, i)] = now
                    else:
                        c[1] += now - t1_since.pop((code, i), now)
            state[code] = new
    if header:
        raise UserError(f"{path} is not a VCD file (no $enddefinitions)")
    act = Activity(now, timescale)
    for code, uses in ids.items():
        width = len(state[code])
        for i in range(width):
            c = counts.get((code, i), [0, 0.0])
            t1 = c[1] + (now - t1_since[(code, i)] if (code, i) in t1_since else 0.0)
            for scope, bits in uses:
                act.nets.setdefault(scope, {})[bits[i]] = (float(c[0]), t1)
    return act


def load_activity(path):
    """:func:`read_saif` or :func:`read_vcd` by the file's suffix (``.saif``, ``.vcd``)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"activity dump not found: {path}")
    if path.suffix == ".saif":
        return read_saif(path)
    if path.suffix == ".vcd":
        return read_vcd(path)
    raise UserError(f"activity dump {path}: give a .saif or .vcd file")


def difference(later, earlier):
    """The activity between two dumps of runs that share a prefix: ``later`` (the run with one
    more pass) minus ``earlier``, net by net (toggles, time at 1 and duration subtracted), so a
    bench's fixed set-up cancels out. Nets missing from ``earlier`` count from zero."""
    if later.duration <= earlier.duration:
        raise UserError("activity difference: the later dump is not longer than the earlier one")
    out = Activity(later.duration - earlier.duration, later.timescale_s)
    for scope, nets in later.nets.items():
        before = earlier.nets.get(scope, {})
        out.nets[scope] = {n: (max(0.0, tc - before.get(n, (0.0, 0.0))[0]), max(0.0, t1 - before.get(n, (0.0, 0.0))[1]))
                           for n, (tc, t1) in nets.items()}
    return out


def port_rates(activity, scope, clock="clk"):
    """``{port: (toggles per clock cycle, duty)}`` of the instance ``scope``: each net's bits
    grouped by name (``a[0]``, ``a[1]`` -> ``a``), the mean over its bits."""
    nets = activity.scope(scope)
    cycles = activity.cycles(clock)
    if cycles <= 0:
        raise UserError("activity dump: the clock never toggles")
    groups = {}
    for name, (tc, t1) in nets.items():
        base = re.sub(r"\[\d+\]$", "", name)
        groups.setdefault(base, []).append((tc, t1))
    return {base: (sum(tc for tc, _ in v) / len(v) / cycles,
                   sum(t1 for _, t1 in v) / len(v) / activity.duration if activity.duration else 0.0)
            for base, v in groups.items()}


def _port_words(netlist, module):
    """Input ports of ``module`` in a Yosys netlist: ``{name: width}`` (scalar ports width 0)."""
    text = Path(netlist).read_text()
    head = re.search(r"^module\s+\\?" + re.escape(module) + r"\s*\((.*?)\);(.*?)^endmodule", text, flags=re.S | re.M)
    if not head:
        raise UserError(f"module {module} not found in {netlist}")
    ports = {}
    for rng, name in re.findall(r"^\s*input\s+(\[[^\]]*\]\s*)?\\?([^\s;]+)\s*;", head.group(2), flags=re.M):
        m = re.match(r"\[(\d+):(\d+)\]", rng.strip()) if rng else None
        ports[name] = abs(int(m.group(1)) - int(m.group(2))) + 1 if m else 0
    return ports


def _rate(rates, port):
    """The measured ``(toggles per cycle, duty)`` of ``port`` in ``rates``, or None: a port Yosys
    renamed (``done__ready$486``) has the activity of the RTL net it carries."""
    return rates.get(port, rates.get(port.split("$")[0]))


def annotated_ports(netlist, module, rates, clock_port="clk", static_ports=("rst",)):
    """``(annotated, inputs)``: how many input ports of ``module`` (clock and reset aside) get a
    measured rate from ``rates``; the others toggle at 0 in :func:`block_script`."""
    ports = [p for p in _port_words(netlist, module) if p != clock_port and p not in static_ports]
    return sum(_rate(rates, p) is not None for p in ports), len(ports)


def block_script(netlist, liberty, module, clock_ns, rates=None, activity=FLAT_ACTIVITY,
                 clock_port="clk", static_ports=("rst",), extra_libs=(), global_activity=None):
    """OpenSTA script of one block's power: ``rates`` (``{port: (toggles per cycle, duty)}``)
    or, without them, ``activity`` on every input; the clock ideal at ``clock_ns``; the reset
    and ports missing from ``rates`` at 0. ``extra_libs``: more Liberty files (SRAM macros).
    ``global_activity`` ``(activity, duty)``: every net of the block at it instead of the
    activity OpenSTA propagates from the inputs (the fallback of :func:`run_block_power`)."""
    ports = _port_words(netlist, module)
    lines = [*sta_flow.library_lines(liberty, [Path(x).resolve() for x in extra_libs]),
             *sta_flow.design_lines(netlist, module, clock_ns, clock_port, clock_port in ports, io_delays=False)]
    if global_activity is not None:
        lines.append(f"set_power_activity -global -activity {global_activity[0]:.6g} -duty {global_activity[1]:.6g}")
    for name, width in sorted(ports.items()):
        if name == clock_port:
            continue
        if name in static_ports:
            a, d = 0.0, 0.0
        elif rates is None:
            a, d = activity, 0.5
        else:
            a, d = _rate(rates, name) or (0.0, 0.0)
        a = min(max(a, 0.0), 2.0)
        d = min(max(d, 0.0), 1.0)
        target = f"{{{name}[*]}}" if width else f"{{{name}}}"      # braces: no Tcl substitution
        lines.append(f"set_power_activity -input_ports [get_ports {target}] -activity {a:.6g} -duty {d:.6g}")
    lines += ['puts "@@power"', "report_power -digits 6"]
    cells = macro_cells(extra_libs)
    if cells:
        # the SRAM macros' own share: their instances anywhere below the block
        lines += ["set macros {}",
                  f"foreach c {{{' '.join(cells)}}} {{ set macros [concat $macros "
                  '[get_cells -hierarchical -filter "ref_name == $c" *]] }',
                  'puts "@@macros [llength $macros]"',
                  "if {[llength $macros]} { report_power -instances $macros -digits 6 }"]
    lines += ['puts "@@end"', "exit"]
    return "\n".join(lines) + "\n"


def macro_cells(liberty_files):
    """Cell names defined in the Liberty files ``liberty_files`` (the SRAM macros')."""
    names = []
    for path in liberty_files:
        names += re.findall(r"^\s*cell\s*\(\s*\"?([\w$]+)\"?\s*\)", Path(path).read_text(errors="replace"), flags=re.M)
    return sorted(set(names))


def run_block_power(netlist, liberty, module, out_dir, *, clock_ns, rates=None, activity=FLAT_ACTIVITY,
                    tag="sim", extra_libs=()):
    """Power of one block (mW: internal, switching, leakage, total) from OpenSTA; ``rates`` as
    :func:`block_script`. Files ``power_<module>_<tag>.tcl/.log`` go into ``out_dir``."""
    binary = sta_flow.sta_binary()
    if binary is None:
        raise UserError(sta_flow.STA_MISSING)
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^\w]+", "_", module)
    try:
        return _block_power(netlist, liberty, module, out_dir / f"power_{safe}_{tag}", clock_ns, rates, activity,
                            extra_libs, None)
    except _Crashed as crash:
        # this OpenSTA can die (SIGSEGV) propagating activity through a block, deterministically
        # for a netlist (the executor at some commits; each of its sub-modules alone runs): every
        # net of the block at the mean rate of its inputs instead of propagated, inputs as measured
        glob = _mean_rate(netlist, module, rates, activity)
        res = _block_power(netlist, liberty, module, out_dir / f"power_{safe}_{tag}_global", clock_ns, rates,
                           activity, extra_libs, glob)
        res["fallback"] = (f"OpenSTA crashed propagating activity ({crash}); every net at the inputs' mean "
                           f"activity {glob[0]:.4g}, duty {glob[1]:.4g}")
        return res


class _Crashed(Exception):
    """OpenSTA died on a signal (twice)."""


def _mean_rate(netlist, module, rates, activity):
    """``(activity, duty)``: the mean over the input ports of ``module`` (clock, reset aside) of
    their measured rates (0 where absent), or the flat ``activity`` at duty 0.5 without rates."""
    if rates is None:
        return activity, 0.5
    ports = [p for p in _port_words(netlist, module) if p not in ("clk", "rst")]
    got = [_rate(rates, p) or (0.0, 0.0) for p in ports]
    if not got:
        return 0.0, 0.0
    return sum(a for a, _ in got) / len(got), sum(d for _, d in got) / len(got)


def _block_power(netlist, liberty, module, stem, clock_ns, rates, activity, extra_libs, global_activity):
    binary = sta_flow.sta_binary()
    out_dir = stem.parent
    script, log = Path(f"{stem}.tcl"), Path(f"{stem}.log")
    text = block_script(Path(netlist).resolve(), Path(liberty).resolve(), module, clock_ns, rates, activity,
                        extra_libs=extra_libs, global_activity=global_activity)
    netlist_stamp = f"# netlist {Path(netlist).stat().st_mtime_ns} {Path(netlist).stat().st_size}\n"
    # a rerun with the same script on the same netlist reuses OpenSTA's finished report
    if not (script.exists() and script.read_text() == netlist_stamp + text and log.exists()
            and "@@end" in log.read_text()):
        script.write_text(netlist_stamp + text)
        for attempt in range(CRASH_RETRIES + 1):
            res = subprocess.run([binary, "-no_init", "-no_splash", "-exit", script.name], cwd=out_dir,
                                 capture_output=True, text=True)
            # this OpenSTA sometimes dies on a signal (SIGSEGV) in report_power: once more
            if res.returncode >= 0 and res.returncode != 139:
                break
        out = res.stdout + res.stderr
        log.write_text(out)
        errors = [ln.strip() for ln in out.splitlines() if ln.startswith("Error")]
        if not errors and global_activity is None and (res.returncode < 0 or res.returncode == 139):
            log.write_text(out.replace("@@end", "@@failed"))
            raise _Crashed(f"exit {res.returncode}")
        if errors or res.returncode != 0:
            log.write_text(out.replace("@@end", "@@failed"))
            raise UserError(f"OpenSTA power of {module} failed (exit {res.returncode}): "
                            f"{errors[0] if errors else 'see ' + str(log)}")
    res = parse_power_log(log.read_text())
    if res is None:
        raise UserError(f"OpenSTA printed no power total for {module}")
    return res


def parse_power_log(text):
    """mW ``{"internal", "switching", "leakage", "total", "macros"}`` from the log of a
    :func:`block_script` run (the ``Total`` row after ``@@power``; ``macros``: the sum of the
    per-instance totals after ``@@macros``, 0 without), or None when it has no total."""
    section, _, macros = text.split("@@power", 1)[-1].partition("@@macros")
    for line in section.splitlines():
        parts = line.split()
        if parts and parts[0] == "Total" and len(parts) >= 5:
            try:
                w = [float(x) for x in parts[1:5]]
            except ValueError:
                continue
            res = {"internal": w[0] * 1e3, "switching": w[1] * 1e3, "leakage": w[2] * 1e3, "total": w[3] * 1e3}
            # per macro instance: internal, switching, leakage, total, name
            rows = [ln.split() for ln in macros.split("@@end", 1)[0].splitlines()[1:]]
            res["macros"] = sum(float(r[3]) for r in rows if len(r) == 5 and _number(r[3])) * 1e3
            return res
    return None


def _number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def blocks_of(netlist, top):
    """``{instance name: module name}`` of the sub-modules instantiated in ``top`` (a Yosys
    hierarchical netlist)."""
    text = Path(netlist).read_text()
    body = re.search(r"^module\s+\\?" + re.escape(top) + r"\s*\(.*?^endmodule", text, flags=re.S | re.M)
    if not body:
        raise UserError(f"module {top} not found in {netlist}")
    modules = set(re.findall(r"^module\s+\\?(\S+)\s*\(", text, flags=re.M))
    out = {}
    for mod, inst in re.findall(r"^\s*\\?(\S+)\s+\\?(\S+)\s*\(", body.group(0), flags=re.M):
        if mod in modules and mod != top:
            out[inst] = mod
    return out


def core_block_power(netlist, liberty, top, out_dir, *, clock_ns, activity=None, scope=None, flat=FLAT_ACTIVITY,
                     tag="sim", extra_libs=()):
    """Power of every block of ``top`` (``{instance: mW dict}``): with ``activity`` (an
    :class:`Activity`) each block's inputs get the rates measured at ``scope/instance`` (the
    simulated top's instance path, ``top`` by default); without it, ``flat`` on every input."""
    out = {}
    for inst, module in sorted(blocks_of(netlist, top).items()):
        rates = None
        if activity is not None:
            try:
                rates = port_rates(activity, f"{scope or top}/{inst}")
            except UserError:
                rates = {}                # not in the dump (a block the simulated core lacks): idle
        # files per instance: two instances of one module (rq_g, rq_u) see different activity
        out[inst] = run_block_power(netlist, liberty, module, out_dir, clock_ns=clock_ns, rates=rates,
                                    activity=flat, tag=f"{tag}_{inst}", extra_libs=extra_libs)
        if rates is not None:
            out[inst]["ports_annotated"] = annotated_ports(netlist, module, rates)
    return out


def pass_macs(layer, recording_pass):
    """MACs of one layer pass as the integer layer counts them: per token the router
    (``d x E``), per chosen routed expert and per shared expert gate, up and down (``3 x d x F``);
    ``layer`` an :class:`~elmoe3d.sim.golden.int_moe.IntMoELayer`, ``recording_pass`` a record of
    ``bench_core.record_passes`` (``x``, ``xm``, ``xe``, ``pass_``)."""
    from ..sim.golden.int_moe import int_moe
    rec = recording_pass
    res = int_moe(layer, rec["x"], rec["xm"], rec["xe"], rec["pass_"])
    tokens, d = rec["x"].shape
    chosen = int((res.chosen >= 0).sum()) if res.chosen.size else 0
    shared = sum(3 * d * s.gate.shape[0] for s in layer.shared)
    return tokens * (d * layer.n_experts + shared) + chosen * 3 * d * layer.d_ffn


def power_entry(netlist, liberty, top, out_dir, *, fmax_mhz, passes, scope=None, onchip_blocks=None,
                extra_libs=()):
    """The ``"power"`` entry of ``bench_core.json`` for one library.

    ``passes``: ``[{"name", "mode" ("draft"/"full"), "dump" (a SAIF/VCD path) or "activity" (an
    :class:`Activity`), "cycles", "macs", "onchip_bytes"}]``, each the activity of that pass on
    the simulated core (instance path ``scope``). Power per block from each pass's activity at ``fmax_mhz``; the entry's
    ``blocks_mw`` / ``total_mw`` / ``leakage_mw`` are the mean over the passes weighted by their
    cycles; energy per pass = that pass's power x cycles / Fmax; ``pj_per_mac`` per mode (the
    passes of a mode pooled); ``pj_per_byte_onchip`` = the energy of the ``onchip_blocks``
    (memories and buffers; all blocks when None) over the bytes moved on chip.
    ``at_activity_0.2`` holds the same figures with every input at 0.2. ``extra_libs``: the SRAM
    macros' Liberty files when the netlist holds macros; ``macros_mw`` / ``blocks_macros_mw``
    is the macros' own share of the power (their instances' totals). Also: ``blocks_leakage_mw``,
    ``passes`` (per pass: mode, cycles, MACs, bytes moved on chip) and ``ports_annotated`` (per
    block: input ports with a measured rate, of all; clock and reset aside).
    """
    if not passes:
        raise UserError("power_entry: no simulated passes")
    if not fmax_mhz or fmax_mhz <= 0:
        raise UserError("power_entry: no Fmax to report power at")
    clock_ns = 1000.0 / fmax_mhz
    out_dir = Path(out_dir)
    per_pass = {}
    for p in passes:
        act = p["activity"] if "activity" in p else load_activity(p["dump"])
        per_pass[p["name"]] = core_block_power(netlist, liberty, top, out_dir, clock_ns=clock_ns, activity=act,
                                               scope=scope, tag=re.sub(r"\W+", "_", p["name"]), extra_libs=extra_libs)
    flat = core_block_power(netlist, liberty, top, out_dir, clock_ns=clock_ns, tag="flat", extra_libs=extra_libs)

    def figures(blocks_of_pass):
        cyc = sum(p["cycles"] for p in passes)
        names = list(next(iter(blocks_of_pass.values())))
        mean = {b: {k: sum(blocks_of_pass[p["name"]][b].get(k, 0.0) * p["cycles"] for p in passes) / cyc
                    for k in ("internal", "switching", "leakage", "total", "macros")} for b in names}
        res = {"clock_mhz": fmax_mhz, "blocks_mw": {k: round(v["total"], 6) for k, v in mean.items()},
               "blocks_leakage_mw": {k: round(v["leakage"], 6) for k, v in mean.items()},
               "blocks_macros_mw": {k: round(v["macros"], 6) for k, v in mean.items()},
               "macros_mw": sum(v["macros"] for v in mean.values()),
               "total_mw": sum(v["total"] for v in mean.values()),
               "leakage_mw": sum(v["leakage"] for v in mean.values())}
        energy = {p["name"]: energy_nj(sum(v["total"] for v in blocks_of_pass[p["name"]].values()),
                                       p["cycles"], fmax_mhz) for p in passes}
        res["energy_per_pass_nj"] = energy
        pj = {}
        for mode in ("draft", "full"):
            mine = [p for p in passes if p["mode"] == mode and p.get("macs")]
            if mine:
                pj[mode] = sum(energy[p["name"]] for p in mine) * 1e3 / sum(p["macs"] for p in mine)
        if pj:
            res["pj_per_mac"] = pj
        moved = sum(p.get("onchip_bytes") or 0 for p in passes)
        if moved:
            onchip = 0.0
            for p in passes:
                bl = blocks_of_pass[p["name"]]
                mw = sum(v["total"] for k, v in bl.items() if onchip_blocks is None or k in onchip_blocks)
                onchip += energy_nj(mw, p["cycles"], fmax_mhz) * 1e3                          # pJ
            res["pj_per_byte_onchip"] = onchip / moved
        return res

    entry = {"activity": "simulated", **figures(per_pass)}
    entry["passes"] = {p["name"]: {"mode": p["mode"], "cycles": p["cycles"], "macs": p.get("macs"),
                                   "onchip_bytes": p.get("onchip_bytes")} for p in passes}
    flat_fig = figures({p["name"]: flat for p in passes})
    entry[f"at_activity_{FLAT_ACTIVITY:g}"] = {"activity": FLAT_ACTIVITY, **flat_fig}
    entry["method"] = ("per block: each sub-module of the synthesized core linked alone in OpenSTA, its input "
                       "ports at the toggle rate and duty measured at the same ports of the simulated core "
                       "(mean over each port's bits), propagated by OpenSTA; core = sum of blocks")
    entry["blocks_mw_per_pass"] = {name: {k: round(v["total"], 6) for k, v in bl.items()}
                                   for name, bl in per_pass.items()}
    fallbacks = {f"{run}/{blk}": v["fallback"] for run, bl in [*per_pass.items(), (f"activity {FLAT_ACTIVITY:g}", flat)]
                 for blk, v in bl.items() if "fallback" in v}
    if fallbacks:                 # blocks whose activity OpenSTA could not propagate (see run_block_power)
        entry["fallback"] = fallbacks
    first = next(iter(per_pass.values()))
    # input ports of each block (clock and reset aside) that got a measured rate: the others
    # (absent from the dump) toggled at 0
    entry["ports_annotated"] = {k: list(v["ports_annotated"]) for k, v in first.items() if "ports_annotated" in v}
    return entry


def energy_nj(power_mw, cycles, clock_mhz):
    """Energy (nJ) of ``cycles`` at ``clock_mhz`` drawing ``power_mw``."""
    if clock_mhz <= 0 or not math.isfinite(clock_mhz):
        raise UserError(f"clock must be > 0 MHz, got {clock_mhz}")
    return power_mw * 1e-3 * cycles / (clock_mhz * 1e6) * 1e9
