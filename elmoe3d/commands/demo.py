"""``elmoe3d demo``: the accelerator on built-in defaults (what the README's first command runs).

Steps, each an ordinary sub-command or a function of one (nothing is copied here):

1. the golden bit-nesting report (``numerics``, small shapes);
2. the Verilog of the core, its interface page and C header (``generate --top core --preset
   small --lanes 2``: the ``small`` preset, which holds the shipped model, with the 2 lanes of
   the default core test, the cheapest core to build);
3. a verify pass of layer 0 of the shipped model compiled for that core's configuration, read
   from the JSON ``generate`` wrote (``compile --config core.json``), run on the ISS against the
   integer golden layer;
4. (not with ``--quick``) three passes of that layer on real activations (:func:`demo_plan`:
   one token verified on a cold cache, the next drafted and then verified) replayed on the
   generated core in Verilator (``bench-core``'s :func:`~.bench_core.replay_on_rtl`): output
   bit-exact with the ISS, the ISS bit-exact with the golden layer, cycles beside the memory
   floor; the demo checks that the simulated Verilog is the generated file, byte for byte;
5. (not with ``--quick``) the synthesis of a small configuration of the core in sky130 hd
   (``bench-core``'s :func:`~.bench_core.synthesize_blocks`): area per block, Fmax; it runs
   beside step 4 (Yosys in one process, the Verilator build and run in another);
6. the system model's answer for the full-size configuration (``elmoe3d perf``'s model, one
   line).

It writes ``report.md`` (and ``cycles.png``) into ``-o DIR`` (default ``results/demo``), created
if missing (nested too) and reused by a second run. ``--quick`` runs steps 1-3 and 6 (well under
a minute); ``--no-hw`` only step 1.
"""

import json
import sys
import time

HELP = ("run the main job on built-in defaults: the core generated, a shipped-model layer compiled and "
        "run on it bit-exact in RTL, its area and Fmax, the system model's tokens/s")

CORE = {"preset": "small", "lanes": 2}          # the default core test's configuration
LAYER = 0
SYNTH_LIBERTY, SYNTH_CLOCK_NS = "sky130hd", 10.0
PERF_SYSTEM, PERF_BASELINE, PERF_MODEL, PERF_BATCH = "elmoe3d", "xpu", "mixtral-8x7b", 16


def add_arguments(p):
    p.add_argument("-o", "--out", metavar="DIR", default="results/demo",
                   help="folder for the Verilog, compiled pass, RTL run, synthesis and report.md "
                        "(default %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="skip the Verilator run and the synthesis (well under a minute): numerics, core "
                        "Verilog, compiled pass on the ISS, system model")
    p.add_argument("--no-hw", action="store_true", help="only the numerics report")
    p.add_argument("--results-page", action="store_true",
                   help="also write the figures into docs/results/demo.md of the checkout (with commit and date)")


def _core_args():
    return ["--top", "core", *(a for k, v in CORE.items() for a in (f"--{k}", str(v)))]


def _step(title, argv):
    from ..cli import build_parser
    print(f"\n== elmoe3d {' '.join(argv)}   ({title})", flush=True)
    args = build_parser().parse_args(argv)
    status = args._run(args) or 0
    if status:
        print(f"elmoe3d demo: step '{title}' exited with status {status}", file=sys.stderr)
    return status


def _say(title):
    print(f"\n== {title}", flush=True)


def run(args):
    from ..paths import output_dir

    # created (nested too) and checked before any work; a second run reuses it
    out = None if args.no_hw else output_dir(args.out)
    if args.results_page and not args.no_hw:
        from ..paths import output_dir as check
        from ..results_page import RESULTS_DIR
        check(RESULTS_DIR, "--results-page")
    t0 = time.monotonic()
    status = _step("golden bit-nesting report", ["numerics", "--d-model", "256", "--d-ffn", "512", "--no-mixtral"])
    if args.no_hw:
        return status
    facts = {"quick": args.quick}
    status |= _step("Verilog, interface page and C header of the core", ["generate", *_core_args(),
                                                                          "-o", str(out / "core")])
    status |= _step(f"layer {LAYER} of the shipped model compiled for that core, checked on the ISS",
                    ["compile", "--config", str(out / "core" / "core.json"), "--layer", str(LAYER),
                     "-o", str(out / "compile")])
    facts["compile"] = json.loads((out / "compile" / f"layer{LAYER}_verify.expected.json").read_text())
    if not args.quick:
        from concurrent.futures import ThreadPoolExecutor
        # The synthesis and the RTL run are separate tool processes: run them side by side.
        with ThreadPoolExecutor(max_workers=1) as pool:
            synth = pool.submit(_synth, out, facts)
            status |= _rtl(out, facts)
            status |= synth.result()
    facts["perf"] = system_answer()
    _say("system model (elmoe3d perf)")
    print(facts["perf"]["line"], flush=True)
    facts["seconds"] = time.monotonic() - t0
    report = write_report(out, facts)
    if args.results_page:
        page = _results_page(out, report)
        print(f"elmoe3d demo: wrote {page}", flush=True)
    print(f"\nelmoe3d demo: {report} and the outputs in {out}/ ({facts['seconds']:.0f} s)", flush=True)
    return status


def _results_page(out, report):
    """``docs/results/demo.md`` (and ``demo.png``): the report, its figure beside it, paths of the
    output folder named as such."""
    import shutil

    from ..results_page import RESULTS_DIR, write_page
    body = report.read_text().split("\n", 2)[2]
    if (out / "cycles.png").is_file():
        shutil.copyfile(out / "cycles.png", RESULTS_DIR / "demo.png")
        body = body.replace("](cycles.png)", "](demo.png)")
    body = "Paths in backquotes are inside the demo's output folder (`-o`, default `results/demo`).\n\n" + body
    return write_page("demo", "The demo: the core on a shipped-model layer", "elmoe3d demo --results-page", body)


def _rtl(out, facts):
    """Step 4: the recorded passes on the generated core in Verilator; 1 when anything differs."""
    from ..sim.lm.model import MoELM
    from .bench_core import replay_on_rtl
    from .sd import _default_model
    _say(f"layer {LAYER} passes on the {CORE['preset']} core ({CORE['lanes']} lanes) in Verilator, "
         "against the ISS and the golden layer")
    model_path = _default_model("moe_lm.npz")
    try:
        rows = replay_on_rtl(CORE, MoELM.load(model_path), model_path, LAYER, out / "rtl", quick_build=True,
                             plan=demo_plan)
    except AssertionError as exc:
        print(f"elmoe3d demo: the RTL core differs: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    facts["passes"] = rows
    for r in rows:
        print(f"  {r['name']:<22} {r['tokens']:>2} tokens: core {r['core']:>7,} cycles, ISS estimate {r['iss']:>7,}, "
              f"memory floor {r['floor']:>7,} ({r['core'] / r['floor']:.2f}x); output = ISS = golden layer: "
              f"{'yes' if r['golden'] else 'NO'}", flush=True)
    generated = (out / "core" / "core.v").read_bytes()
    simulated = out / "rtl" / "rtl" / "core.v"
    facts["same_verilog"] = simulated.is_file() and simulated.read_bytes() == generated
    print(f"elmoe3d demo: the RTL run simulated {out / 'core' / 'core.v'} byte for byte: "
          f"{'yes' if facts['same_verilog'] else 'NO'}", flush=True)
    return 0 if facts["same_verilog"] and all(r["golden"] for r in rows) else 1


def demo_plan(G, verify, draft_pass):
    """The passes the demo replays on the RTL core (see ``bench_core.record_passes``): token 0
    verified on a cold cache, then token 1 drafted (k_d = 1, MSB planes + augmentation) and
    verified, as Elastic-SD does; single tokens keep the Verilator run short (bench-core runs
    whole groups of ``G``)."""
    return [("verify, cold cache", verify, 0, 1), ("draft k_d=1 MSB+aug", draft_pass(1), 1, 1),
            ("verify, warm cache", verify, 1, 1)]


def _synth(out, facts):
    """Step 5: area per block and Fmax of bench-core's synthesis configuration in sky130 hd."""
    from ..toolchain import shipped_liberty
    from .bench_core import synth_config, synthesize_blocks
    if not shipped_liberty(SYNTH_LIBERTY):
        print(f"elmoe3d demo: no shipped {SYNTH_LIBERTY} Liberty (../shared/pdk): synthesis skipped", flush=True)
        return 0
    cfg = synth_config()
    _say(f"synthesis of the core ({cfg.name} configuration: {cfg.array.rows}x{cfg.array.cols} array, "
         f"{cfg.array.lanes} lanes) in {SYNTH_LIBERTY} at {SYNTH_CLOCK_NS} ns (minutes)")
    syn = synthesize_blocks(SYNTH_LIBERTY, SYNTH_CLOCK_NS, out / "synth", macros=False)   # as before: flip-flops
    facts["synth"] = {k: syn[k] for k in ("clock_ns", "area_um2", "fmax_mhz", "blocks")}
    facts["synth"]["config"] = cfg.name
    print(f"core ({cfg.name}): {syn['area_um2']:,.0f} um^2, Fmax {syn['fmax_mhz']:.0f} MHz", flush=True)
    return 0


def system_answer():
    """The system model's one line: ``PERF_SYSTEM`` serving ``PERF_MODEL`` at ``PERF_BATCH``,
    tokens/s and J/token beside the naive xPU (``elmoe3d perf`` with its defaults)."""
    from ..perf import config_file
    from ..perf.decode import Settings, sweep
    systems, models = config_file.load(None)
    rows = sweep([systems[PERF_BASELINE], systems[PERF_SYSTEM]], [models[PERF_MODEL]], Settings(), [PERF_BATCH])
    r = next(r for r in rows if r["system"] == PERF_SYSTEM)
    line = (f"{systems[PERF_SYSTEM].label.split(':')[0]} serving {PERF_MODEL} at batch {PERF_BATCH}: "
            f"{r['tokens_per_s']:,.0f} tokens/s, {1e3 * r['j_per_token']:.2f} mJ/token, "
            f"{r['speedup_vs_xpu']:.2f}x the tokens/s of the naive xPU ({r['bound']}-bound)")
    return {"line": line, "tokens_per_s": r["tokens_per_s"], "j_per_token": r["j_per_token"],
            "speedup_vs_xpu": r["speedup_vs_xpu"]}


def write_report(out, facts):
    """``out/report.md`` (and ``out/cycles.png`` after an RTL run): what the demo ran and found."""
    from ..paths import write_text
    c = facts["compile"]
    lines = ["# elmoe3d demo", "",
             f"Layer {LAYER} of the shipped model on the `{CORE['preset']}` core with {CORE['lanes']} lanes "
             f"(`core/core.v`, interface page `core/core.md`, C header `core/core_commands.h`).", "",
             f"- Compiled for that core (`compile/`): a verify pass of {c['y_block']['tokens']} tokens, ISS estimate "
             f"{c['iss_cycles']:,} cycles, {c['offchip_bytes']:,} off-chip bytes; output equal to the integer golden "
             f"layer (expected Y block `compile/layer{LAYER}_verify.expected_y.bin`)."]
    if "passes" in facts:
        lines += ["", "## Passes on the RTL core (Verilator, one token each: cold-cache verify, then draft and verify)", "",
                  "| pass | tokens | core cycles | ISS estimate | memory floor | core / floor | output bit-exact |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
        for r in facts["passes"]:
            lines.append(f"| {r['name']} | {r['tokens']} | {r['core']:,} | {r['iss']:,} | {r['floor']:,} | "
                         f"{r['core'] / r['floor']:.2f}x | {'yes' if r['golden'] else 'NO'} |")
        lines += ["", "Bit-exact: the core's output equals the ISS's and the ISS's the golden layer's. The memory "
                      "floor is the bytes each memory tier moves over its peak bytes per cycle, tiers in parallel.",
                  "", "![cycles per pass](cycles.png)"]
        _plot(out / "cycles.png", facts["passes"])
    if "synth" in facts:
        s = facts["synth"]
        lines += ["", f"## Synthesis ({SYNTH_LIBERTY}, {s['clock_ns']} ns clock, `{s['config']}` configuration)", "",
                  f"{s['area_um2']:,.0f} um^2, Fmax {s['fmax_mhz']:.0f} MHz (pre-layout; every buffer is "
                  f"flip-flops in this flow, see docs/core.md).", "",
                  "| block | area um^2 | share |", "| --- | ---: | ---: |"]
        for name, b in sorted(s["blocks"].items(), key=lambda kv: -kv[1]["area_um2"])[:8]:
            lines.append(f"| {name} | {b['area_um2']:,.0f} | {100 * b['share']:.1f} % |")
    lines += ["", "## System model", "", facts["perf"]["line"] + " (`elmoe3d perf` for the whole sweep).", "",
              f"Demo run in {facts['seconds']:.0f} s" + (" (`--quick`: no RTL run, no synthesis)." if facts["quick"]
                                                          else ".")]
    return write_text(out / "report.md", "\n".join(lines) + "\n")


def _plot(path, rows):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    names = [f"{r['name']}\n{r['tokens']} tok" for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for i, (key, label) in enumerate((("core", "RTL core"), ("iss", "ISS estimate"), ("floor", "memory floor"))):
        ax.bar(x + (i - 1) * 0.27, [r[key] for r in rows], 0.27, label=label)
    ax.set_xticks(x, names, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("cycles")
    ax.set_title("Shipped-model layer passes on the core")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
