"""``elmoe3d compile``: command streams, listings and memory images of one MoE layer pass."""

import json
import os
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
    p.add_argument("--layer", type=nonnegative_int, default=None,
                   help="layer of the shipped model (default 0; not with --random)")
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
    """The accelerator configuration ``--config`` names: a preset, or a JSON file holding either
    an :class:`~elmoe3d.config.AccelConfig` (``config.json`` of an earlier ``compile``) or the
    JSON that ``elmoe3d generate`` writes beside a top (its ``accelerator_config`` is taken; the
    other keys, ``top``, ``params``, ``ports``, ... describe the Verilog)."""
    from pathlib import Path

    from ..config import PRESETS, AccelConfig, preset
    from ..errors import UserError
    if text in PRESETS:
        return preset(text)
    path = Path(text)
    if path.suffix != ".json" and not path.exists():
        return preset(text)                      # "unknown accelerator preset ..., choose from"
    if path.is_dir():
        raise UserError(f"--config {text}: is a folder, not a JSON file")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise UserError(f"--config {text}: cannot read it ({exc.strerror or exc})") from None
    except ValueError:                           # UnicodeDecodeError and JSONDecodeError alike
        raise UserError(f"--config {text}: not a JSON file (an accelerator configuration, or the "
                        f"JSON that 'elmoe3d generate --top core' writes)") from None
    if isinstance(data, dict) and "accelerator_config" in data:
        data = data["accelerator_config"]
    try:
        return AccelConfig.from_dict(data)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise UserError(f"--config {text}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


RANDOM_FIELDS = (("d_model", 1, 4096), ("experts", 1, 64), ("top-k", 1, 64), ("d_ffn", 1, 16384), ("shared", 0, 8))


def parse_random(spec):
    """``(d, e, k, f, s)`` of ``--random D,E,K,F,S``, each checked against ``RANDOM_FIELDS``."""
    from ..errors import UserError
    parts = [v.strip() for v in spec.split(",")]
    try:
        if len(parts) != 5:
            raise ValueError
        values = tuple(int(v) for v in parts)
    except ValueError:
        raise UserError(f"--random takes five integers D,E,K,F,S (d_model, experts, top-k, d_ffn, shared), "
                        f"got {spec!r}") from None
    for (name, lo, hi), v in zip(RANDOM_FIELDS, values):
        if not lo <= v <= hi:
            raise UserError(f"--random {name} must be in [{lo}, {hi}], got {v}")
    d, e, k, f, s = values
    if k > e:
        raise UserError(f"--random top-k {k} exceeds the {e} experts")
    return values


def _random_layer(values, seed, store=None):
    """The random layer of ``--random D,E,K,F,S`` (:func:`~elmoe3d.sim.golden.int_moe.random_int_layer`:
    the same layer as ``random_moe`` + ``quantized`` + ``calibrate_layer`` + ``fold_layer`` with
    ``default_rng(seed)``), its INT8 weights in ``store``'s file when given."""
    from ..sim.golden.int_moe import random_int_layer
    from ..sim.golden.moe_layer import MoEShape
    d, e, k, f, s = values
    return [random_int_layer(MoEShape(d_model=d, n_experts=e, top_k=k, d_ffn=f, n_shared=s), seed, store)]


def _layer_shape(layer):
    """``(n_experts, n_shared, d_model, d_ffn, top_k)`` of a folded integer layer."""
    return layer.n_experts, len(layer.shared), layer.d_model, layer.d_ffn, layer.top_k


SCRATCH = ".compile-scratch-"      # + the compiling process's id + "-" + a random suffix


def _remove_stale_scratch(out):
    """Delete scratch folders that a compile killed before it could clean up (SIGKILL, power loss)
    left in ``out``: those whose process no longer runs. A random layer's weights there can take
    gigabytes (5.9 GiB for a Mixtral layer)."""
    import shutil
    for d in out.glob(SCRATCH + "*"):
        pid = d.name[len(SCRATCH):].split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
            print(f"elmoe3d compile: removed {d.name}, the scratch of an earlier compile that was stopped", file=sys.stderr)
        except PermissionError:            # another user's live process
            pass


def run(args):
    import numpy as np

    from ..errors import UserError
    from ..firmware.asm import disassemble, listing
    from ..firmware.cheader import c_header
    import tempfile
    from pathlib import Path

    from ..firmware.compiler import compile_pass, compile_to_files
    from ..firmware.layout import model_map, read_output, write_input
    from ..limits import check_disk, check_memory, compile_disk_bytes, compile_random_bytes
    from ..paths import output_dir, write_text
    from ..sim.lm.blas_threads import single_threaded
    from ..sim.golden.int_moe import VERIFY, draft_pass, int_moe, quantize_tokens
    from ..sim.machine.iss import Machine
    from ..sim.lm.model import MoELM
    from ..sim.golden.stored import FileImage, MatrixStore, create_image

    # Everything the request can be refused for is checked before the output folder exists.
    cfg = _config(args.config)
    if not 1 <= args.tokens <= cfg.buffers.tokens:
        raise UserError(f"--tokens must be in [1, {cfg.buffers.tokens}] (buffers.tokens of {cfg.name}), "
                        f"got {args.tokens}")
    if args.random is not None and args.layer is not None:
        raise UserError("--layer picks a layer of the shipped model; --random compiles one random layer: give one of them")
    model = None
    if args.random is not None:
        d, e, k, f, s = parse_random(args.random)
        shape, layer = (e, s, d, f, k), 0
    else:
        from .sd import _default_model
        model = MoELM.load(_default_model("moe_lm.npz"))
        layer = args.layer or 0
        if layer >= model.cfg.n_layers:
            raise UserError(f"--layer must be below {model.cfg.n_layers} (the shipped model's layers), got {layer}")
        shape = _layer_shape(model.int_layers[layer])
    n_experts, n_shared, d_model, d_ffn, top_k = shape
    moe_pass = VERIFY if args.kind == "verify" else draft_pass(args.k_d, args.bits, args.choice)
    if moe_pass.k is not None and moe_pass.k > top_k:
        raise UserError(f"--k-d must be at most the layer's top-k {top_k}, got {moe_pass.k}")
    n_layers = 1 if model is None else model.cfg.n_layers
    try:
        mm = model_map(cfg, n_layers, n_experts, n_shared, d_model, d_ffn, top_k)
    except UserError as exc:
        raise UserError(f"--config {args.config}: {exc}") from None
    what = f"compile --random {args.random}" if model is None else f"compile --config {args.config}"
    if model is None:
        check_memory(what, compile_random_bytes(d_model, n_experts, d_ffn, n_shared))
    plane = mm.layers[0].plane_lines * mm.line_bytes
    weights = (n_experts + n_shared) * 3 * d_model * d_ffn if model is None else 0
    check_disk(what, compile_disk_bytes(mm.offchip_lines * mm.line_bytes, mm.hb_lines * mm.line_bytes, weights,
                                        min(cfg.cache.entries, n_experts + n_shared) * plane), args.out)
    out = output_dir(args.out)

    # The layer's INT8 weights (a random layer's, in a scratch file) and the images stay in files;
    # what is in memory at any time is a block of them (docs/scale.md, "Compiler and ISS memory").
    # BLAS on one thread: the GEMVs are a few tokens wide, and OpenBLAS's spinning threads only
    # cost time on a shared machine (sim/lm/blas_threads.py).
    _remove_stale_scratch(out)
    with tempfile.TemporaryDirectory(prefix=f"{SCRATCH}{os.getpid()}-", dir=out) as scratch, single_threaded():
        store = MatrixStore(Path(scratch) / "weights.int8") if model is None else None
        try:
            layers = model.int_layers if model is not None else \
                _random_layer((d_model, n_experts, top_k, d_ffn, n_shared), args.seed, store)
            comp = compile_to_files(cfg, layers, out / "offchip.img", out / "hb.img")
            words = compile_pass(comp, layer, args.tokens, moe_pass)
            rng = np.random.default_rng(args.seed)
            a, xm, xe = quantize_tokens(rng.standard_normal((args.tokens, d_model)))
            write_input(comp.offchip, comp.map, a, xm, xe)
            stem = f"layer{layer}_{args.kind}"
            (out / f"{stem}.bin").write_bytes(comp.isa.to_bytes(words))
            write_text(out / f"{stem}.asm", disassemble(comp.isa, words))
            write_text(out / f"{stem}.lst", listing(comp.isa, words))
            write_text(out / "commands.h", c_header(comp.isa))
            write_text(out / "config.json", cfg.to_json() + "\n")
            write_text(out / "memory_map.json", json.dumps(comp.map.to_dict(), indent=1) + "\n")
            # Run it once on the ISS and check it against the golden layer before reporting. The
            # ISS starts with an empty expert cache, as the core does after reset: a cached-choice
            # draft then finds no routed expert resident (the golden layer is told the same:
            # nothing allowed). It runs on the written images without changing them: its output
            # block stays in memory (a private view), its cache fills go to a scratch HB image.
            cached = moe_pass.choice == "cached"
            allowed = np.zeros(n_experts, bool) if cached else None
            offchip = FileImage(out / "offchip.img", private=True)
            stats = Machine(cfg, offchip, create_image(Path(scratch) / "hb.img", len(comp.hb))).run(words)
            want = int_moe(layers[layer], a, xm, xe, moe_pass, allowed)
            got = read_output(offchip, comp.map, args.tokens)
        finally:
            if store is not None:
                store.close()
    same = np.array_equal(got, want.out)
    write_expected(out, stem, comp.map, want.out, stats)
    print(f"{len(words)} commands, off-chip image {len(comp.offchip):,} bytes, HB image {len(comp.hb):,} bytes -> {out}")
    print(f"ISS: {stats.cycles:,} cycles (estimate), {stats.offchip_bytes:,} off-chip and {stats.hb_bytes:,} HB bytes; "
          f"output {'equals' if same else 'DIFFERS from'} the integer golden layer "
          f"(expected Y block in {stem}.expected_y.bin, cache events in {stem}.expected.json)")
    if cached:
        print("note: the ISS check ran on an empty expert cache (as after reset), so --choice cached "
              "ran no routed expert; on a warm cache the choice depends on what the cache holds")
    if args.bench:
        from .sd import _default_model
        _bench(cfg, model or MoELM.load(_default_model("moe_lm.npz")))
    return 0 if same else 1


def write_expected(out, stem, mm, y, stats):
    """The golden answer beside the images, for a test bench that runs ``<stem>.bin``.

    ``<stem>.expected_y.bin``: the Y block the pass must leave in the off-chip image, byte for
    byte (``tokens x d_model`` little-endian int32, at byte ``y_addr * line_bytes`` of
    ``offchip.img``). ``<stem>.expected.json``: where that block lies, and the expert-cache
    decisions of the pass in order (one per LOOKUP: layer, expert, plane 0 MSB / 1 LSB, hit,
    fill), on a cache that starts empty.
    """
    import numpy as np

    from ..paths import write_text
    y = np.asarray(y)
    (out / f"{stem}.expected_y.bin").write_bytes(y.astype("<i4").tobytes())
    meta = {"y_block": {"file": f"{stem}.expected_y.bin", "offchip_byte": mm.y_addr * mm.line_bytes,
                        "tokens": int(y.shape[0]), "d_model": int(y.shape[1]), "element": "int32, little-endian",
                        "order": "token-major: token t, channel i at byte 4 * (t * d_model + i)"},
            "cache_at_start": "empty",
            "cache_event_fields": ["layer", "expert", "plane", "hit", "fill"],
            "iss_cycles": stats.cycles, "offchip_bytes": stats.offchip_bytes, "hb_bytes": stats.hb_bytes}
    rows = [json.dumps([k.layer, k.expert, int(k.plane), int(r.hit), int(r.fill)]) for k, r in stats.cache]
    # one cache event per line (json.dumps with indent would spread each over seven)
    text = json.dumps(meta, indent=1)[:-2] + ',\n "cache_events": [' + ",".join(f"\n  {r}" for r in rows) + "\n ]\n}"
    write_text(out / f"{stem}.expected.json", text + "\n")


def _bench(cfg, model):
    """ISS layer passes per second (shipped layer 0, batch 1 and 16) and decode speed ratio."""
    import numpy as np

    from ..firmware.compiler import compile_model, compile_pass
    from ..firmware.engine import IssEngine
    from ..firmware.layout import write_input
    from ..sim.lm.blas_threads import single_threaded
    from ..sim.sd.elastic_sd import SDSettings, generate
    from ..sim.golden.int_moe import VERIFY, int_moe, quantize_tokens
    from ..sim.machine.iss import Machine
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
