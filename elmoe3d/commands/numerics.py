"""``elmoe3d numerics``: the golden model's bit-nesting report."""

import json
import sys

from ..cli import nonnegative_int, positive_int

HELP = "golden-model bit-nesting report: draft vs full accuracy, bytes and GEMV speed"


def add_arguments(p):
    from ..sim.golden.moe_layer import DEFAULT, WEIGHT_DISTRIBUTIONS
    p.add_argument("--d-model", type=positive_int, default=DEFAULT.d_model, help="model width (default %(default)s)")
    p.add_argument("--experts", type=positive_int, default=DEFAULT.n_experts, help="routed experts (default %(default)s)")
    p.add_argument("--top-k", type=positive_int, default=DEFAULT.top_k, help="experts per token (default %(default)s)")
    p.add_argument("--d-ffn", type=positive_int, default=DEFAULT.d_ffn, help="expert hidden width (default %(default)s)")
    p.add_argument("--shared", type=nonnegative_int, default=0, help="shared experts (default 0)")
    p.add_argument("--tokens", type=positive_int, default=64, help="tokens per measurement (default %(default)s)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="random seed (default %(default)s)")
    p.add_argument("--weights", choices=WEIGHT_DISTRIBUTIONS, default="outlier",
                   help="weight distribution (default %(default)s: Gaussian with 0.2%% outliers at 4x)")
    p.add_argument("--no-mixtral", action="store_true",
                   help="skip the column for one Mixtral-8x7B expert (d 4096, FFN 14336; ~10 s, ~5 GB RAM)")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")


# Peak memory of the report, measured with ru_maxrss on shapes from d 256-1024, E 8-32, T 64-16384:
# about 21-26 bytes per weight (float64 weights, their INT8 copy and quantization temporaries)
# and under 3 bytes per (token, d_model + d_ffn, expert); the estimate below rounds both up.
BYTES_PER_WEIGHT, BYTES_PER_TOKEN_ACT = 32, 4
MIXTRAL_TOKENS = 16


def memory_estimate(shape, tokens):
    """Bytes the layer report of ``shape`` over ``tokens`` tokens needs, at most (see above)."""
    experts = shape.n_experts + shape.n_shared
    return (BYTES_PER_WEIGHT * experts * shape.expert_params
            + BYTES_PER_TOKEN_ACT * tokens * (shape.d_model + shape.d_ffn) * experts)


def run(args):
    from ..limits import check_memory
    from ..sim.golden.bit_nesting_report import expert_report, format_report, layer_report
    from ..sim.golden.moe_layer import MIXTRAL_8X7B, MoEShape

    from ..paths import output_file, write_text
    if args.json is not None:
        output_file(args.json, "--json")
    shape = MoEShape(d_model=args.d_model, n_experts=args.experts, top_k=args.top_k,
                     d_ffn=args.d_ffn, n_shared=args.shared)
    need = memory_estimate(shape, args.tokens)
    if not args.no_mixtral:     # one expert materialized, at most 16 tokens
        need = max(need, memory_estimate(MoEShape(d_model=MIXTRAL_8X7B.d_model, n_experts=1, top_k=1,
                                                  d_ffn=MIXTRAL_8X7B.d_ffn), MIXTRAL_TOKENS))
    check_memory(f"numerics with d_model {shape.d_model}, {shape.n_experts} + {shape.n_shared} experts of "
                 f"FFN {shape.d_ffn}, {args.tokens} tokens" + ("" if args.no_mixtral else " (and the Mixtral column)"),
                 need)
    print(f"elmoe3d numerics: layer {shape}, {args.weights} weights, seed {args.seed}", file=sys.stderr)
    rows = [layer_report(shape, args.seed, args.weights, args.tokens)]
    if not args.no_mixtral:
        print("elmoe3d numerics: one Mixtral-8x7B expert ...", file=sys.stderr)
        rows.append(expert_report(MIXTRAL_8X7B, args.seed, args.weights, min(args.tokens, MIXTRAL_TOKENS)))
    print(format_report(rows))
    if args.json is not None:
        write_text(args.json, json.dumps(rows, indent=2))
    return 0
