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


def add_arguments(p):
    from ..config import PRESETS
    p.add_argument("--preset", default="small", choices=[n for n in PRESETS],
                   help="accelerator configuration of the simulated core (default %(default)s: the "
                        "shipped model at batch 16 in one lane group)")
    p.add_argument("--layer", type=int, default=0, help="shipped-model layer (default %(default)s)")
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


def record_passes(cfg, model, layer):
    """Passes of one shipped-model layer on real activations, run on the ISS in order; the
    recording the RTL replays (see ``firmware/engine.py``)."""
    import numpy as np

    from ..firmware.compiler import compile_model, compile_pass
    from ..firmware.layout import read_output, write_input
    from ..sim import corpus
    from ..sim.int_moe import VERIFY, draft_pass, quantize_tokens
    from ..sim.iss import Machine
    from ..sim.lm import TARGET
    G = cfg.buffers.tokens
    held = corpus.load_bytes(corpus.split_files(corpus.stdlib_files())[1])
    windows = list(corpus.heldout_windows(held, 2, G))        # 2 x G tokens of held-out text
    res = model.forward(windows, model.new_cache(len(windows)), TARGET, capture=True)
    h = np.asarray(res.moe_inputs[layer]).reshape(-1, model.cfg.d_model)
    comp = compile_model(cfg, model.int_layers)
    m = Machine(cfg, comp.offchip, comp.hb)
    plan = [("verify, cold cache", VERIFY, h[:G]), ("verify, warm cache", VERIFY, h[G:2 * G]),
            ("draft k_d=1 MSB+aug", draft_pass(1), h[:G]), ("draft k_d=1 MSB+aug", draft_pass(1), h[:1]),
            ("verify", VERIFY, h[G:G + 1])]
    recording = []
    for name, p, x in plan:
        a, xm, xe = quantize_tokens(x)
        write_input(comp.offchip, comp.map, a, xm, xe)
        words = compile_pass(comp, layer, len(a), p)
        stats = m.run(words)
        recording.append(dict(name=name, layer=layer, tokens=len(a), pass_=p, words=list(words), x=a, xm=xm, xe=xe,
                              out=read_output(comp.offchip, comp.map, len(a)), cycles=stats.cycles,
                              cache=[(k.layer, k.expert, k.plane, int(r.hit), int(r.fill)) for k, r in stats.cache],
                              offchip_bytes=stats.offchip_bytes, hb_bytes=stats.hb_bytes))
    return recording


def floor_cycles(cfg, offchip_bytes, hb_bytes):
    """The memory-bound floor: each tier moves one line per cycle, the tiers in parallel."""
    return max(-(-offchip_bytes // cfg.offchip.line_bytes), -(-hb_bytes // cfg.hb.line_bytes))


def run(args):
    import pickle

    from ..config import preset
    from ..errors import UserError
    from ..paths import output_dir, write_text
    from ..sim.lm import MoELM
    from .sd import _default_model
    if args.layer < 0:
        raise UserError(f"--layer must be >= 0, got {args.layer}")
    cfg = preset(args.preset)
    out = output_dir(args.out)
    model_path = _default_model("moe_lm.npz")
    model = MoELM.load(model_path)
    if args.layer >= model.cfg.n_layers:
        raise UserError(f"--layer must be below {model.cfg.n_layers}, got {args.layer}")
    cfg.check_model(n_layers=model.cfg.n_layers, n_experts=model.cfg.n_experts, n_shared=0,
                    d_model=model.cfg.d_model, d_ffn=model.cfg.d_ffn, top_k=model.cfg.top_k,
                    plane_bytes=3 * model.cfg.d_model * model.cfg.d_ffn // 2)
    report = {"preset": cfg.name, "layer": args.layer}
    if not args.no_rtl:
        from ..hw.executor import check_core_config
        from ..sim.benches.launch import run_top_bench
        check_core_config(cfg)
        recording = record_passes(cfg, model, args.layer)
        rec_path = out / "recording.pkl"
        with open(rec_path, "wb") as f:
            pickle.dump(recording, f)
        print(f"recorded {len(recording)} passes of layer {args.layer} on the ISS; building the {cfg.name} core "
              f"in Verilator (minutes)...", flush=True)
        t0 = time.time()
        run_top_bench("core", {"preset": cfg.name}, out / "rtl", seeds=(1,), testcase="core_replays_recorded_passes",
                      replay=str(rec_path.resolve()), model=str(model_path))
        rows = json.loads((out / "rtl" / "cycles.json").read_text())
        for r, rec in zip(rows, recording):
            r["name"] = rec["name"]
            r["floor"] = floor_cycles(cfg, r["offchip_bytes"], r["hb_bytes"])
        report["passes"] = rows
        print(f"RTL run: {time.time() - t0:.0f} s")
    if not args.no_synth:
        from ..hw.core import Core
        from ..synth.flow import synthesize_component
        report["synthesis"] = {}
        for lib in args.liberty:
            clock = SYNTH_CLOCK_NS.get(lib, 5.0)
            print(f"synthesizing the core ({synth_config().name} configuration) with {lib} at {clock} ns...",
                  flush=True)
            report["synthesis"][lib] = synthesize_blocks(lib, clock, out / f"synth_{lib}")
    write_text(out / "bench_core.json", json.dumps(report, indent=1, default=str) + "\n")
    print(format_report(cfg, report))
    return 0


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
                  "| pass | tokens | core cycles | ISS estimate | memory floor | core / floor | PE array busy |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in report["passes"]:
            lines.append(f"| {r['name']} | {r['tokens']} | {r['core']:,} | {r['iss']:,} | {r['floor']:,} | "
                         f"{r['core'] / r['floor']:.2f}x | {100 * r['pe_beats'] / r['core']:.1f} % |")
    for lib, syn in report.get("synthesis", {}).items():
        lines += ["", f"Core ({syn['config']['name']} configuration) in {lib} at {syn['clock_ns']} ns: "
                      f"{syn['area_um2']:,.0f} um^2, Fmax {syn['fmax_mhz']:.1f} MHz"
                      + (f"; power: {syn['power_missing']}" if "power_missing" in syn else ""), "",
                  "| block | area um^2 | share | sequential |", "| --- | ---: | ---: | ---: |"]
        for name, b in sorted(syn["blocks"].items(), key=lambda kv: -kv[1]["area_um2"]):
            lines.append(f"| {name} | {b['area_um2']:,.0f} | {100 * b['share']:.1f} % | {100 * b['sequential']:.0f} % |")
    return "\n".join(lines)
