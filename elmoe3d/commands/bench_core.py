"""``elmoe3d bench-core``: the RTL core on the shipped model's layer, and its synthesis per block.

Figures (README, "The core"): cycles of verify and draft passes of a shipped-model layer measured
in Verilator against the memory-bound floor (bytes moved per tier / that tier's peak bytes per
cycle, the tiers working in parallel) and against the ISS's estimate, the PE array's busy
fraction, and area per block, Fmax and power of the core in sky130 hd and Nangate 45.
"""

import json
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
    p.add_argument("-o", "--out", default="results/bench_core", help="output folder (default %(default)s)")


def synth_config():
    """The configuration synthesized: the tiny preset's array, vector unit, cache and memory
    interfaces with buffers cut to 4 tokens of d <= 32, F <= 64 (buffers are flip-flops in this
    flow; an SRAM compiler would replace them)."""
    from dataclasses import replace

    from ..config import BufferConfig, preset
    return replace(preset("tiny"), name="synth", buffers=BufferConfig(tokens=4, d_max=32, f_max=64))


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
    from ..sim import corpus
    from ..sim.int_moe import VERIFY, draft_pass, int_moe, quantize_tokens
    from ..sim.iss import Machine
    from ..sim.lm import TARGET
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
    from ..paths import output_dir, write_text
    from ..sim.lm import MoELM
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
    out = output_dir(args.out)
    report = {"preset": cfg.name, "layer": args.layer}
    if not args.no_rtl:
        report["passes"] = replay_on_rtl(dict(preset=args.preset, lanes=args.lanes), model, model_path,
                                         args.layer, out)
    if not args.no_synth:
        report["synthesis"] = {}
        for lib in args.liberty:
            clock = SYNTH_CLOCK_NS.get(lib, 5.0)
            print(f"synthesizing the core ({synth_config().name} configuration) with {lib} at {clock} ns...",
                  flush=True)
            report["synthesis"][lib] = synthesize_blocks(lib, clock, out / f"synth_{lib}")
    write_text(out / "bench_core.json", json.dumps(report, indent=1, default=str) + "\n")
    print(format_report(cfg, report))
    return 0


def replay_on_rtl(params, model, model_path, layer, out, progress=print, quick_build=False, plan=None):
    """Record the passes of ``layer`` on the ISS (:func:`record_passes`), replay them on the RTL
    core of ``params`` (``{"preset", "lanes"}``, as ``generate --top core`` takes them) in
    Verilator, and return one row per pass: its name, tokens, core cycles, ISS estimate, memory
    floor (:func:`floor_cycles`), bytes per tier, PE-array busy beats and ``golden`` (the ISS's
    output equals the golden layer's; the bench asserts the core's equals the ISS's). The
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
    progress(f"RTL run: {time.time() - t0:.0f} s", flush=True)
    return rows


def synthesize_blocks(lib, clock_ns, out_dir):
    """Area per block of the core (``synth_config``), worst slack / Fmax and power at ``clock_ns``.

    The whole core's netlist is large: when OpenSTA stops before its power report (it has crashed
    in ``report_power`` on it), the area and the timing it printed are still reported, with the
    power marked as missing and why."""
    import re

    from ..errors import UserError
    from ..hw.core import Core
    from ..synth.flow import synthesize_component
    from ..synth.yosys_flow import parse_stat_json
    result = {"clock_ns": clock_ns, "config": synth_config().to_dict()}
    try:
        rep = synthesize_component(Core(synth_config(), max_k=4), "core", out_dir, params={"config": "synth"},
                                   liberty=lib, clock_ns=clock_ns)
        result.update(fmax_mhz=rep.get("fmax_mhz") or rep.get("timing", {}).get("fmax_mhz"), report=rep)
    except UserError as exc:
        log = (out_dir / "sta.log").read_text() if (out_dir / "sta.log").exists() else ""
        slack = re.search(r"worst slack\s+(\S+)", log)
        if not slack:
            raise
        result["power_missing"] = f"OpenSTA stopped before its power report ({exc})"
        worst = float(slack.group(1))
        result.update(worst_slack_ns=worst, fmax_mhz=1000.0 / (clock_ns - worst))
    stat = parse_stat_json(out_dir / "stat.json")
    mods = stat["modules"]
    total = mods["core"]["area"]
    result["area_um2"] = total
    result["blocks"] = {name.split(".", 1)[1]: {"area_um2": mods[name]["area"], "share": mods[name]["area"] / total,
                                                 "sequential": mods[name]["sequential_area"] / max(mods[name]["area"], 1e-9)}
                        for name in mods["core"]["submodules"]}
    return result


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
        lines += ["", f"Core ({syn['config']['name']} configuration) in {lib} at {syn['clock_ns']} ns: "
                      f"{syn['area_um2']:,.0f} um^2, Fmax {syn['fmax_mhz']:.1f} MHz"
                      + (f"; power: {syn['power_missing']}" if "power_missing" in syn else ""), "",
                  "| block | area um^2 | share | sequential |", "| --- | ---: | ---: | ---: |"]
        for name, b in sorted(syn["blocks"].items(), key=lambda kv: -kv[1]["area_um2"]):
            lines.append(f"| {name} | {b['area_um2']:,.0f} | {100 * b['share']:.1f} % | {100 * b['sequential']:.0f} % |")
    return "\n".join(lines)
