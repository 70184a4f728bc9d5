"""``elmoe3d demo``: the main job on built-in defaults (what the README's first command runs)."""

HELP = "run the main job on built-in defaults (today: the bit-nesting report)"


def add_arguments(p):
    p.add_argument("--quick", action="store_true", help="smaller shapes, for a smoke test")


def run(args):
    from . import numerics
    from ..cli import build_parser

    argv = ["numerics"] + (["--d-model", "256", "--d-ffn", "512", "--no-mixtral"] if args.quick else [])
    print("== elmoe3d demo: golden bit-nesting report ==", flush=True)
    return numerics.run(build_parser().parse_args(argv))
