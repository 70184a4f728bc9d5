"""``elmoe3d bench-core``: the RTL core on the shipped model's layer, and its synthesis per block.

Figures (README, "The core"): cycles of verify and draft passes of a shipped-model layer measured
in Verilator against the memory-bound floor (bytes moved per tier / that tier's peak bytes per
cycle, the tiers working in parallel) and against the ISS's estimate, the PE array's busy
fraction, and area per block, Fmax and power of the core in sky130 hd and Nangate 45.
"""

import json
import re
import sys
import time

HELP = ("the RTL core on a shipped-model layer: cycles of verify and draft passes in Verilator "
        "against the memory-bound floor and the ISS estimate, PE-array busy fraction; area per "
        "block, Fmax and power in sky130 hd and Nangate 45")

SYNTH_CLOCK_NS = {"sky130hd": 10.0, "nangate45": 2.5}


def shipped_model_presets():
    """The presets whose core can run the shipped model (the others, ``tiny``, cannot hold one
    of its planes): the ``--preset`` choices. Reads only the model file's configuration."""
    import numpy as np

    from ..config import PRESETS
    from ..errors import UserError
    from ..firmware.layout import model_map
    from .sd import _default_model
    with np.load(_default_model("moe_lm.npz"), allow_pickle=False) as z:
        c = json.loads(str(z["config"]))
    fits = []
    for name, cfg in PRESETS.items():
        try:
            model_map(cfg, c["n_layers"], c["n_experts"], 0, c["d_model"], c["d_ffn"], c["top_k"])
        except UserError:
            continue
        fits.append(name)
    return fits


def add_arguments(p):
    from ..cli import nonnegative_int
    p.add_argument("--preset", default="small", choices=shipped_model_presets(),
                   help="accelerator configuration of the simulated core (default %(default)s: the "
                        "shipped model at batch 16 in one lane group; the presets that hold the shipped model)")
    p.add_argument("--lanes", type=nonnegative_int, default=0,
                   help="PE-array lanes of the simulated core (1 .. the preset's buffers.tokens; default 0 keeps "
                        "the preset's); the demo and the default core test use --preset small --lanes 2")
    p.add_argument("--layer", type=nonnegative_int, default=0, help="shipped-model layer (default %(default)s)")
    p.add_argument("--no-rtl", action="store_true", help="skip the Verilator run")
    p.add_argument("--no-synth", action="store_true", help="skip synthesis")
    p.add_argument("--liberty", nargs="+", default=["sky130hd", "nangate45"],
                   help="Liberty files or names for synthesis (default: sky130hd nangate45)")
    p.add_argument("--synth-config", default=SYNTH_DEFAULT, choices=synth_config_names(),
                   help="core configuration synthesized (default %(default)s: the default preset's whole core; "
                        f"'{CUT_DOWN}': a cut-down core that synthesizes in minutes; or another preset)")
    p.add_argument("--no-power", action="store_true",
                   help="skip the power from simulated activity (a verify and a draft pass replayed on the "
                        "core with SAIF dumps, each synthesized block annotated with them in OpenSTA)")
    p.add_argument("--no-macros", action="store_true",
                   help="keep the memories as flip-flops (default: SRAM macros where the library has a set)")
    p.add_argument("--results-page", action="store_true",
                   help="also write docs/results/bench-core.md (the report, stamped with the command, commit and date)")
    p.add_argument("-o", "--out", default="results/bench_core", help="output folder (default %(default)s)")


CUT_DOWN = "synth"             # the cut-down configuration's name
SYNTH_DEFAULT = "default"      # what bench-core synthesizes by default: the default preset's core
CUT_DOWN_MAX_K = 4             # router slots of the cut-down core (the presets' cores take 8)


def synth_config(name=CUT_DOWN):
    """A configuration to synthesize: ``"synth"`` is the tiny preset's array, vector unit, cache
    and memory interfaces with buffers cut to 4 tokens of d <= 32, F <= 64 (a core that
    synthesizes in minutes); any other name is that preset."""
    from dataclasses import replace

    from ..config import BufferConfig, preset
    if name == CUT_DOWN:
        return replace(preset("tiny"), name=CUT_DOWN, buffers=BufferConfig(tokens=4, d_max=32, f_max=64))
    return preset(name)


def synth_config_names():
    """The ``--synth-config`` choices: the cut-down configuration and the presets."""
    from ..config import PRESETS
    return [CUT_DOWN, *PRESETS]


def bench_plan(G, verify, draft_pass):
    """bench-core's passes ``[(name, pass, first token, tokens)]`` for token groups of ``G``: a
    verify pass of a whole group on a cold cache and of the next group on the warm cache, a draft
    of the first group and of its first token, a verify of one token (2 x G tokens of held-out
    text in all)."""
    return [("verify, cold cache", verify, 0, G), ("verify, warm cache", verify, G, G),
            ("draft k_d=1 MSB+aug", draft_pass(1), 0, G), ("draft k_d=1 MSB+aug", draft_pass(1), 0, 1),
            ("verify", verify, G, 1)]


def record_passes(cfg, model, layer, plan=None):
    """Passes of one shipped-model layer on real activations, run on the ISS in order; the
    recording the RTL replays (see ``firmware/engine.py``). Each record's ``golden`` says whether
    the ISS's output equals the integer golden layer's (``sim.int_moe.int_moe``) bit for bit;
    the RTL replay then checks the core's output against the ISS's. ``plan(G, verify,
    draft_pass)`` returns the passes (default :func:`bench_plan`), each on tokens of the first
    2 x G of held-out text."""
    import numpy as np

    from ..firmware.compiler import compile_model, compile_pass
    from ..firmware.layout import read_output, write_input
    from ..sim.lm import corpus
    from ..sim.golden.int_moe import VERIFY, draft_pass, int_moe, quantize_tokens
    from ..sim.machine.iss import Machine
    from ..sim.lm.model import TARGET
    G = cfg.buffers.tokens
    held = corpus.load_bytes(corpus.split_files(corpus.stdlib_files())[1])
    windows = list(corpus.heldout_windows(held, 2, G))        # 2 x G tokens of held-out text
    res = model.forward(windows, model.new_cache(len(windows)), TARGET, capture=True)
    h = np.asarray(res.moe_inputs[layer]).reshape(-1, model.cfg.d_model)
    comp = compile_model(cfg, model.int_layers)
    m = Machine(cfg, comp.offchip, comp.hb)
    plan = (plan or bench_plan)(G, VERIFY, draft_pass)
    recording = []
    for name, p, first, tokens in plan:
        x = h[first:first + tokens]
        a, xm, xe = quantize_tokens(x)
        write_input(comp.offchip, comp.map, a, xm, xe)
        words = compile_pass(comp, layer, len(a), p)
        stats = m.run(words)
        out = read_output(comp.offchip, comp.map, len(a))
        # every pass of the plan routes by top-k, so the golden layer needs no cache state
        golden = bool(np.array_equal(out, int_moe(model.int_layers[layer], a, xm, xe, p).out))
        recording.append(dict(name=name, layer=layer, tokens=len(a), pass_=p, words=list(words), x=a, xm=xm, xe=xe,
                              out=out, golden=golden, cycles=stats.cycles,
                              cache=[(k.layer, k.expert, k.plane, int(r.hit), int(r.fill)) for k, r in stats.cache],
                              offchip_bytes=stats.offchip_bytes, hb_bytes=stats.hb_bytes))
    return recording


def floor_cycles(cfg, offchip_bytes, hb_bytes):
    """The memory-bound floor: each tier moves one line per cycle, the tiers in parallel."""
    return max(-(-offchip_bytes // cfg.offchip.line_bytes), -(-hb_bytes // cfg.hb.line_bytes))


def run(args):
    from ..errors import UserError
    from ..hw.core import core_config
    from ..paths import output_dir
    from ..sim.lm.model import MoELM
    from .sd import _default_model
    cfg = core_config(args.preset, args.lanes)
    model_path = _default_model("moe_lm.npz")
    model = MoELM.load(model_path)
    if args.layer >= model.cfg.n_layers:
        raise UserError(f"--layer must be below {model.cfg.n_layers}, got {args.layer}")
    if not args.no_rtl:
        from ..hw.executor import check_core_config
        from ..hw.sim_budget import check_core_simulation
        check_core_config(cfg)
        check_core_simulation(cfg, "bench-core")   # a core too large to build in Verilator here
    if not args.no_synth:
        from ..synth.flow import resolve_liberty
        for lib in args.liberty:
            resolve_liberty(lib)                 # a bad Liberty is refused before any work
    if not args.no_synth:
        from ..hw.sim_budget import check_core_synthesis
        core = _synth_core(args.synth_config)
        # a core too large to convert is refused before any work (as synth refuses it)
        check_core_synthesis(core, "bench-core")
    out = output_dir(args.out)
    if args.results_page:
        from ..results_page import RESULTS_DIR
        output_dir(RESULTS_DIR, "--results-page")     # writable, checked before any work
    from ..results_page import commit
    report = {"commit": commit(), "preset": cfg.name, "layer": args.layer}
    if not args.no_rtl:
        report["passes"] = replay_on_rtl(dict(preset=args.preset, lanes=args.lanes), model, model_path,
                                         args.layer, out)
    passes = None
    if not (args.no_rtl or args.no_synth or args.no_power):
        from ._power import simulate_passes
        print("simulating a verify and a draft pass with SAIF activity dumps...", flush=True)
        passes = simulate_passes(dict(preset=args.preset, lanes=args.lanes), model, model_path, args.layer,
                                 out / "activity")
    if not args.no_synth:
        report["synthesis"] = {}
        for lib in args.liberty:
            clock = SYNTH_CLOCK_NS.get(lib, 5.0)
            print(f"synthesizing the core ({args.synth_config} configuration) with {lib} at {clock} ns...",
                  flush=True)
            report["synthesis"][lib] = synthesize_blocks(lib, clock, out / f"synth_{lib}", config=args.synth_config,
                                                         macros=not args.no_macros, power=_power_hook(lib, passes),
                                                         core=core)
    write_results(out, report)
    text = format_report(cfg, report)
    print(text)
    if args.results_page:
        from ..results_page import command_line, write_page
        cmd = command_line("bench-core")
        page = write_page("bench-core", "The core on shipped-model passes: cycles, area, timing, power (elmoe3d bench-core)",
                          cmd, text + "\n")
        print(f"wrote {page}", file=sys.stderr)
    return 0


def _power_hook(lib, passes):
    """synthesize_blocks' ``power`` hook for ``lib``: the power entry from the simulated passes
    (``elmoe3d/commands/_power.py``), or None without passes or an Fmax."""
    if not passes:
        return None
    from ._power import power_entry

    def hook(entry, out_dir):
        if not entry.get("fmax_mhz"):
            return {"missing": "no Fmax to report power at (OpenSTA did not run)"}
        return power_entry(out_dir, lib, entry["fmax_mhz"], passes)
    return hook


def replay_on_rtl(params, model, model_path, layer, out, progress=print, quick_build=False, plan=None):
    """Record the passes of ``layer`` on the ISS (:func:`record_passes`), replay them on the RTL
    core of ``params`` (``{"preset", "lanes"}``, as ``generate --top core`` takes them) in
    Verilator, and return one row per pass: its name, tokens, core cycles, ISS estimate, memory
    floor (:func:`floor_cycles`), bytes per tier, PE-array busy beats and their fraction of the
    cycles (``pe_busy``), and ``golden`` (the ISS's output equals the golden layer's; the bench
    asserts the core's equals the ISS's). The
    Verilog and the build are in ``out/rtl``; raises ``AssertionError`` when the core differs.
    ``quick_build`` compiles the Verilated model without C++ optimization (a faster build, a
    slower run: right for these few passes). ``plan``: see :func:`record_passes`."""
    import pickle

    from ..hw.core import core_config
    from ..sim.benches.launch import run_top_bench
    cfg = core_config(params["preset"], params.get("lanes", 0))
    recording = record_passes(cfg, model, layer, plan)
    out.mkdir(parents=True, exist_ok=True)
    rec_path = out / "recording.pkl"
    with open(rec_path, "wb") as f:
        pickle.dump(recording, f)
    progress(f"recorded {len(recording)} passes of layer {layer} on the ISS; building the {cfg.name} core "
             f"in Verilator (minutes)...", flush=True)
    t0 = time.time()
    run_top_bench("core", dict(params), out / "rtl", seeds=(1,), testcase="core_replays_recorded_passes",
                  replay=str(rec_path.resolve()), model=str(model_path), quick_build=quick_build)
    rows = json.loads((out / "rtl" / "cycles.json").read_text())
    if len(rows) != len(recording):
        raise AssertionError(f"the core replayed {len(rows)} of {len(recording)} recorded passes")
    for r, rec in zip(rows, recording):
        r["name"] = rec["name"]
        r["golden"] = rec["golden"]
        r["floor"] = floor_cycles(cfg, r["offchip_bytes"], r["hb_bytes"])
        r["pe_busy"] = r["pe_beats"] / max(r["core"], 1)       # fraction of cycles the array takes a weight beat
    progress(f"RTL run: {time.time() - t0:.0f} s", flush=True)
    return rows


def _synth_core(config):
    """The core synthesized for ``--synth-config config`` (an Amaranth component)."""
    from ..hw.core import Core
    return Core(synth_config(config), max_k=CUT_DOWN_MAX_K if config == CUT_DOWN else 8)


def synthesize_blocks(lib, clock_ns, out_dir, config=CUT_DOWN, macros=True, power=None, log=None, core=None):
    """Area per block of the core (``synth_config(config)``), worst slack / Fmax and the critical
    path at ``clock_ns``; one library's entry of ``bench_core.json`` (see :func:`write_results`).

    Area: ``area_um2`` = ``logic_area_um2`` + ``macro_area_um2`` (SRAM macros where the library has
    a set and ``macros``; flip-flops otherwise, ``memories`` says which); per block (a
    sub-module of the core) the same split, its share of the core and its sequential share.
    ``power`` (a hook for synth/power.py): a callable ``power(entry, out_dir)`` returning the
    ``"power"`` entry (it finds the hierarchical netlist, Liberty files and Fmax in ``entry``);
    no key when None. When OpenSTA stops before its power report (it has crashed in
    ``report_power`` on the whole core), the area and the timing it printed are still reported.
    ``core``: the component of ``config`` already built (built here when None)."""
    from pathlib import Path

    from ..errors import UserError
    from ..synth.flow import synthesize_component
    from ..synth.yosys_flow import parse_stat_json
    out_dir = Path(out_dir)
    cfg = synth_config(config)
    result = {"clock_ns": clock_ns, "config": cfg.to_dict()}
    kwargs = {"log": log} if log is not None else {}
    started = time.monotonic()
    try:
        rep = synthesize_component(core if core is not None else _synth_core(config), "core", out_dir, params={"config": cfg.name},
                                   liberty=lib, clock_ns=clock_ns, macros=macros, **kwargs)
        timing = rep.get("timing") or {}
        if timing.get("fmax_mhz"):
            result["fmax_mhz"] = timing["fmax_mhz"]
        if timing.get("modules"):            # each distinct module timed alone (synth/hier_timing.py)
            result["timing_per_module"] = {n: {k: t[k] for k in ("instances", "worst_slack_ns", "fmax_mhz", "endpoint")}
                                           for n, t in timing["modules"].items()}
        result["runtime_s"] = rep["runtime_s"]
        result["notes"] = rep["notes"]
        macro_libs = rep["area"].get("macro_liberty") or []
    except UserError as exc:
        log_text = (out_dir / "sta.log").read_text() if (out_dir / "sta.log").exists() else ""
        slack = re.search(r"worst slack\s+(\S+)", log_text)
        if not slack:
            raise
        result["power_missing"] = f"OpenSTA stopped before its power report ({exc})"
        worst = float(slack.group(1))
        result["fmax_mhz"] = 1000.0 / (clock_ns - worst)
        macro_libs = sorted(str(p) for p in (out_dir / "macros").glob("*.lib")) if macros else []
        checks = log_text.split("@@checks", 1)[-1].split("@@slack", 1)[0].strip()
        if checks:
            (out_dir / "timing.rpt").write_text(checks + "\n")
    result["wall_s"] = round(time.monotonic() - started, 1)
    described = _macro_set(lib) if macros else None
    macro_areas = {n: d["area_um2"] for n, d in described["macros"].items()} if described else None
    stat = parse_stat_json(out_dir / "stat.json", macro_areas=macro_areas)
    mods = stat["modules"]
    top = mods["core"]
    total = top["area"]
    result["area_um2"] = total
    result["logic_area_um2"] = top["logic_area"]
    result["macro_area_um2"] = top["macro_area"]
    result["memories"] = f"SRAM macros ({described['set']})" if described else "flip-flops"
    if described:
        result["macros"] = top["macros"]
        result["macro_set"] = described
    if (out_dir / "timing.rpt").exists():
        result["critical_path"] = (out_dir / "timing.rpt").read_text()
    blocks = {}
    for name, n in top["submodules"].items():
        m = mods[name]
        blocks[name.split(".", 1)[1] if "." in name else name] = {
            "area_um2": m["area"] * n, "logic_area_um2": m["logic_area"] * n, "macro_area_um2": m["macro_area"] * n,
            "share": m["area"] * n / total, "sequential": m["sequential_area"] / max(m["area"], 1e-9)}
    result["blocks"] = blocks
    result["files"] = {"report": str(out_dir / "report.md"), "netlist": str(out_dir / "netlist.v"),
                       "netlist_hier": str(out_dir / "netlist_hier.v"),
                       "macro_liberty": macro_libs}      # OpenSTA reads these beside the library
    if power is not None:
        entry = power(result, out_dir)
        if entry is not None:                 # keys a run did not produce are absent
            result["power"] = entry
    return result


def _macro_set(lib):
    """The SRAM macro set the flow maps memories onto with library ``lib`` (its description,
    :meth:`~elmoe3d.synth.macros.MacroFiles.describe` without the files), or None."""
    from ..synth import macros as sram
    from ..synth.flow import resolve_liberty
    from ..synth.yosys_flow import library_name
    key = sram.macro_set_for(library_name(resolve_liberty(lib)))
    if key is None or not sram.available(key):
        return None
    return sram.MacroFiles(key, sram.MACRO_SETS[key], None, None, [], []).describe()


def write_results(out, report):
    """``out/bench_core.json``: ``commit``, ``preset``, ``layer``, ``passes`` (the RTL run) and
    ``synthesis`` ``{library: entry}`` (:func:`synthesize_blocks`), keys a run did not produce
    absent. The system model (``elmoe3d perf --bench-core``) reads it."""
    from ..paths import write_text
    write_text(out / "bench_core.json", json.dumps(report, indent=1, default=str) + "\n")


def format_report(cfg, report):
    lines = []
    if "passes" in report:
        lines += [f"Layer {report['layer']} of the shipped model on the {cfg.name} core (Verilator, no stalls):", "",
                  "| pass | tokens | core cycles | ISS estimate | memory floor | core / floor | PE array busy "
                  "| output = golden layer |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for r in report["passes"]:
            lines.append(f"| {r['name']} | {r['tokens']} | {r['core']:,} | {r['iss']:,} | {r['floor']:,} | "
                         f"{r['core'] / r['floor']:.2f}x | {100 * r['pe_beats'] / r['core']:.1f} % | "
                         f"{'bit-exact' if r.get('golden') else 'DIFFERS'} |")
    for lib, syn in report.get("synthesis", {}).items():
        fmax = f"Fmax {syn['fmax_mhz']:.1f} MHz" if syn.get("fmax_mhz") else "no Fmax (no OpenSTA)"
        macros = syn.get("macros")
        lines += ["", f"Core ({syn['config']['name']} configuration) in {lib} at {syn['clock_ns']} ns: "
                      f"{syn['area_um2']:,.0f} um^2 = logic {syn['logic_area_um2']:,.0f} + macros "
                      f"{syn['macro_area_um2']:,.0f}, {fmax}; memories as {syn['memories']}"
                      + (" (" + ", ".join(f"{n} x {c}" for c, n in sorted(macros.items())) + ")" if macros else "")
                      + (f"; power: {syn['power_missing']}" if "power_missing" in syn else "")
                      + (f"; synthesis wall time {syn['wall_s']:.0f} s" if "wall_s" in syn else ""), "",
                  "| block | area um^2 | logic | macros | share | sequential |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for name, b in sorted(syn["blocks"].items(), key=lambda kv: -kv[1]["area_um2"]):
            lines.append(f"| {name} | {b['area_um2']:,.0f} | {b['logic_area_um2']:,.0f} | {b['macro_area_um2']:,.0f} | "
                         f"{100 * b['share']:.1f} % | {100 * b['sequential']:.0f} % |")
        if syn.get("macro_set", {}).get("dual_port_rule"):
            lines += ["", "Rule: " + syn["macro_set"]["dual_port_rule"] + "."]
        pw = syn.get("power", {})
        if "total_mw" in pw:
            from ._power import format_power
            lines += ["", *format_power(pw)]
        elif "missing" in pw:
            lines += ["", f"Power: {pw['missing']}"]
        path = syn.get("critical_path", "")
        ends = re.findall(r"^(Startpoint|Endpoint): (\S+)", path, flags=re.M)
        if ends:
            lines += ["", "Critical path: " + " -> ".join(e[1] for e in ends) + " (timing.rpt)"]
    return "\n".join(lines)
