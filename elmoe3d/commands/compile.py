"""``elmoe3d compile``: command streams, listings and memory images of one MoE layer pass."""

import json
import sys
import time

from ..cli import nonnegative_int, positive_int

HELP = "compile a layer pass (shipped model or a random layer) into a command stream, listing and images"


def add_arguments(p):
    from ..config import PRESETS
    p.add_argument("-o", "--out", metavar="DIR", default="results/compile",
                   help="output folder, created if missing (default %(default)s)")
    p.add_argument("--config", metavar="NAME|FILE", default="default",
                   help=f"accelerator preset ({', '.join(PRESETS)}) or a JSON file (default %(default)s)")
    p.add_argument("--layer", type=nonnegative_int, default=0, help="layer of the shipped model (default 0)")
    p.add_argument("--random", metavar="D,E,K,F,S", default=None,
                   help="compile a random layer instead: d_model, experts, top-k, d_ffn, shared experts")
    p.add_argument("--pass", dest="kind", choices=("verify", "draft"), default="verify",
                   help="verify (the target: k, full bits, cache lookups) or draft (default %(default)s)")
    p.add_argument("--k-d", type=positive_int, default=1, help="draft experts per token (default 1)")
    p.add_argument("--bits", choices=("draft", "full"), default="draft", help="draft pass expert bits (default draft)")
    p.add_argument("--choice", choices=("topk", "cached"), default="topk", help="draft expert choice (default topk)")
    p.add_argument("--tokens", type=positive_int, default=16, help="tokens in the group (default 16)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="random seed (default 0)")
    p.add_argument("--bench", action="store_true",
                   help="also measure ISS layer passes per second at batch 1 and 16, and decoding on the ISS "
                        "against the golden integer model (shipped model)")


def _config(text):
    from pathlib import Path

    from ..config import PRESETS, load_config, preset
    if text in PRESETS:
        return preset(text)
    if Path(text).suffix == ".json" or Path(text).exists():
        return load_config(text)
    return preset(text)


def _random_layer(spec, seed):
    import numpy as np

    from ..errors import UserError
    from ..sim.int_moe import calibrate_layer, fold_layer
    from ..sim.moe_layer import MoEShape, random_moe
    try:
        d, e, k, f, s = (int(v) for v in spec.split(","))
    except ValueError:
        raise UserError(f"--random takes five integers D,E,K,F,S, got {spec!r}") from None
    for name, v, hi in (("d_model", d, 4096), ("experts", e, 64), ("top-k", k, 64), ("d_ffn", f, 16384),
                        ("shared", s, 8)):
        if not (0 if name == "shared" else 1) <= v <= hi:
            raise UserError(f"--random {name} must be in [{0 if name == 'shared' else 1}, {hi}], got {v}")
    rng = np.random.default_rng(seed)
    qw = random_moe(MoEShape(d_model=d, n_experts=e, top_k=k, d_ffn=f, n_shared=s), rng).quantized()
    return [fold_layer(qw, calibrate_layer(qw, rng.standard_normal((64, d)), k), k)]


def run(args):
    import numpy as np

    from ..errors import UserError
    from ..firmware.asm import disassemble, listing
    from ..firmware.cheader import c_header
    from ..firmware.compiler import compile_model, compile_pass
    from ..firmware.layout import read_output, write_input
    from ..paths import output_dir, write_text
    from ..sim.int_moe import VERIFY, draft_pass, int_moe, quantize_tokens
    from ..sim.iss import Machine
    from ..sim.lm import MoELM

    cfg = _config(args.config)
    if not 1 <= args.tokens <= cfg.buffers.tokens:
        raise UserError(f"--tokens must be in [1, {cfg.buffers.tokens}] (buffers.tokens), got {args.tokens}")
    out = output_dir(args.out)
    model = None
    if args.random:
        layers, layer = _random_layer(args.random, args.seed), 0
    else:
        from .sd import _default_model
        model = MoELM.load(_default_model("moe_lm.npz"))
        if args.layer >= model.cfg.n_layers:
            raise UserError(f"--layer must be below {model.cfg.n_layers}, got {args.layer}")
        layers, layer = model.int_layers, args.layer
    moe_pass = VERIFY if args.kind == "verify" else draft_pass(args.k_d, args.bits, args.choice)
    if moe_pass.k is not None and moe_pass.k > layers[0].top_k:
        raise UserError(f"--k-d must be at most the layer's top-k {layers[0].top_k}, got {moe_pass.k}")
    comp = compile_model(cfg, layers)
    words = compile_pass(comp, layer, args.tokens, moe_pass)
    rng = np.random.default_rng(args.seed)
    a, xm, xe = quantize_tokens(rng.standard_normal((args.tokens, layers[0].d_model)))
    write_input(comp.offchip, comp.map, a, xm, xe)
    stem = f"layer{layer}_{args.kind}"
    (out / f"{stem}.bin").write_bytes(comp.isa.to_bytes(words))
    write_text(out / f"{stem}.asm", disassemble(comp.isa, words))
    write_text(out / f"{stem}.lst", listing(comp.isa, words))
    (out / "offchip.img").write_bytes(comp.offchip.tobytes())
    (out / "hb.img").write_bytes(comp.hb.tobytes())
    write_text(out / "commands.h", c_header(comp.isa))
    write_text(out / "config.json", cfg.to_json() + "\n")
    write_text(out / "memory_map.json", json.dumps(comp.map.to_dict(), indent=1) + "\n")
    # Run it once on the ISS and check it against the golden layer before reporting.
    allowed = np.zeros(layers[0].n_experts, bool) if moe_pass.choice == "cached" else None
    stats = Machine(cfg, comp.offchip, comp.hb).run(words)
    want = int_moe(layers[layer], a, xm, xe, moe_pass, allowed)
    same = np.array_equal(read_output(comp.offchip, comp.map, args.tokens), want.out)
    print(f"{len(words)} commands, off-chip image {len(comp.offchip):,} bytes, HB image {len(comp.hb):,} bytes -> {out}")
    print(f"ISS: {stats.cycles:,} cycles (estimate), {stats.offchip_bytes:,} off-chip and {stats.hb_bytes:,} HB bytes; "
          f"output {'equals' if same else 'DIFFERS from'} the integer golden layer")
    if args.bench:
        from .sd import _default_model
        _bench(cfg, model or MoELM.load(_default_model("moe_lm.npz")))
    return 0 if same else 1


def _bench(cfg, model):
    """ISS layer passes per second (shipped layer 0, batch 1 and 16) and decode speed ratio."""
    import numpy as np

    from ..firmware.compiler import compile_model, compile_pass
    from ..firmware.engine import IssEngine
    from ..firmware.layout import write_input
    from ..sim.blas_threads import single_threaded
    from ..sim.elastic_sd import SDSettings, generate
    from ..sim.int_moe import VERIFY, int_moe, quantize_tokens
    from ..sim.iss import Machine
    comp = compile_model(cfg, model.int_layers)
    m = Machine(cfg, comp.offchip, comp.hb)
    rng = np.random.default_rng(0)
    with single_threaded():
        for T in (1, 16):
            a, xm, xe = quantize_tokens(rng.standard_normal((T, model.cfg.d_model)))
            write_input(comp.offchip, comp.map, a, xm, xe)
            words = compile_pass(comp, 0, T, VERIFY)
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < 2.0:
                m.run(words)
                n += 1
            iss = n / (time.perf_counter() - t0)
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < 2.0:
                int_moe(model.int_layers[0], a, xm, xe)
                n += 1
            gold = n / (time.perf_counter() - t0)
            print(f"batch {T:2d}: ISS {iss:7.1f} layer passes/s, golden integer layer {gold:7.1f}/s "
                  f"(ISS {gold / iss:.1f}x slower)")
        prompts = [list(b"def main(argv):\n    "), list(b"import os\nimport sys\n"),
                   list(b"class Foo(object):\n    def "), list(b"    return self._")]
        settings = SDSettings(method="elastic", k_d=1, integer=True)
        times = {}
        for name in ("golden", "iss"):
            model.moe_engine = model.golden_engine if name == "golden" else IssEngine(model, cfg)
            t0 = time.perf_counter()
            toks = generate(model, prompts, 32, settings).tokens
            times[name] = (time.perf_counter() - t0, toks)
        model.moe_engine = model.golden_engine
        same = all(np.array_equal(x, y) for x, y in zip(times["golden"][1], times["iss"][1]))
        print(f"Elastic-SD decode (greedy, k_d 1, batch 4, 32 bytes): golden {times['golden'][0]:.2f} s, "
              f"ISS {times['iss'][0]:.2f} s ({times['iss'][0] / times['golden'][0]:.2f}x); same bytes: {same}")
    sys.stdout.flush()
