"""What a person reads after a sweep: a table sorted by the objective, the Pareto front (tokens/s
vs J/token vs area) and its plots, the best point per workload, and each listed point's
``elmoe3d generate`` / ``synth`` / ``perf`` command lines.
"""

import json
import shlex
from pathlib import Path

from . import blocks as blk
from .space import OBJECTIVES

TABLE_ROWS = 20
# The three axes of the front: (field, "max" or "min")
FRONT_AXES = (("tokens_per_s", "max"), ("j_per_token", "min"), ("area_mm2", "min"))


def ok(records):
    return [r for r in records if r.get("status") == "ok"]


def sort_key(objective):
    sign = -1 if OBJECTIVES[objective] == "max" else 1
    return lambda r: (sign * r[objective], r["key"])


def dominates(a, b):
    """``a`` is at least as good as ``b`` on every front axis and better on one."""
    better = False
    for name, sense in FRONT_AXES:
        x, y = (a[name], b[name]) if sense == "min" else (-a[name], -b[name])
        if x > y:
            return False
        better |= x < y
    return better


def pareto(records):
    """The non-dominated records (tokens/s up, J/token down, area down), fastest first."""
    good = ok(records)
    front = [r for r in good if not any(dominates(o, r) for o in good if o is not r)]
    return sorted(front, key=lambda r: (-r["tokens_per_s"], r["key"]))


def best_per_workload(records, space):
    """``{workload: record}``: the best point on each workload by the objective (area: least
    area, then most tokens/s on that workload)."""
    objective = space.search["objective"]
    out = {}
    for w in space.workload_names():
        def value(r):
            fig = r["workloads"][w]
            if objective == "area_mm2":
                return (r["area_mm2"], -fig["tokens_per_s"], r["key"])
            v = {"tokens_per_s": fig["tokens_per_s"], "j_per_token": fig["j_per_token"],
                 "tokens_per_s_per_mm2": fig["tokens_per_s"] / r["area_mm2"]}[objective]
            return (-v if OBJECTIVES[objective] == "max" else v, r["key"])
        good = ok(records)
        if good:
            out[w] = min(good, key=value)
    return out


def _opts(params):
    from ..hw.tops import option_name
    return " ".join(f"{option_name(k)} {shlex.quote(str(v))}" for k, v in params.items())


def commands(rec, space, config_path, out="out"):
    """The command lines that rebuild a point: Verilog and synthesis of each block, and the
    system model on each workload with the point's system (``config_path``, a perf --config)."""
    s = space.synth
    lines = []
    for name, (top, params) in blk.point_blocks(rec["params"]).items():
        lines.append(f"elmoe3d generate --top {top} {_opts(params)} -o {out}/{rec['key']}/{name}")
        lines.append(f"elmoe3d synth --top {top} {_opts(params)} --liberty {shlex.quote(s['liberty'])} "
                     f"--clock-ns {s['clock_ns']:g} --activity {s['activity']:g} -o {out}/{rec['key']}/synth_{name}")
    for w, fig in rec["workloads"].items():
        lines.append(f"elmoe3d perf --config {shlex.quote(str(config_path))} {' '.join(map(shlex.quote, fig['perf_args']))} "
                     f"--no-sensitivity --no-plot -o {out}/{rec['key']}/perf")
    return lines


def _varied(space):
    return space.varied or list(space.params)[:1]


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def table(records, space, rows=TABLE_ROWS, front_keys=()):
    """Markdown table of the best ``rows`` points by the objective (front points marked *)."""
    objective = space.search["objective"]
    names = _varied(space)
    head = (["", "key"] + names + ["tokens/s", "J/token", "area mm^2", "tokens/s/mm^2", "Fmax MHz", "mW"])
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(ok(records), key=sort_key(objective))[:rows]:
        hw = r["hw"]
        cells = ["*" if r["key"] in front_keys else "", f"`{r['key'][:8]}`"] + [_fmt(r["params"][n]) for n in names] + [
            f"{r['tokens_per_s']:.1f}", f"{r['j_per_token']:.4f}", f"{r['area_mm2']:.3f}",
            f"{r['tokens_per_s_per_mm2']:.1f}", _fmt(hw["fmax_mhz"]), _fmt(hw["power_mw"])]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def plot_front(records, front, path):
    """Two panels: J/token against tokens/s (colour: area) and area against tokens/s; the front
    is drawn in red. Written with matplotlib's Agg back end."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    good = ok(records)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=80)
    fk = {r["key"] for r in front}
    rest = [r for r in good if r["key"] not in fk]
    sc = axes[0].scatter([r["tokens_per_s"] for r in rest], [r["j_per_token"] for r in rest],
                         c=[r["area_mm2"] for r in rest], s=12, cmap="viridis", label="points")
    axes[0].scatter([r["tokens_per_s"] for r in front], [r["j_per_token"] for r in front], s=30,
                    facecolors="none", edgecolors="red", label="Pareto front")
    axes[0].set_xlabel("tokens/s (geometric mean over workloads)")
    axes[0].set_ylabel("J/token (geometric mean)")
    axes[0].legend(fontsize=8)
    fig.colorbar(sc, ax=axes[0], label="area mm^2")
    axes[1].scatter([r["tokens_per_s"] for r in rest], [r["area_mm2"] for r in rest], s=12, c="grey")
    axes[1].scatter([r["tokens_per_s"] for r in front], [r["area_mm2"] for r in front], s=30,
                    facecolors="none", edgecolors="red")
    axes[1].set_xlabel("tokens/s (geometric mean)")
    axes[1].set_ylabel("area mm^2 (PE arrays + expert cache)")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def summary(records, space, command, config_dir, stats=None):
    """The report as Markdown: counts, table, front, best per workload, command lines; ``stats``
    (from :func:`elmoe3d.explore.run.explore`) adds the run's wall time and cache use."""
    objective = space.search["objective"]
    good, failed = ok(records), [r for r in records if r.get("status") != "ok"]
    front = pareto(records)
    best = best_per_workload(records, space)
    nodes = sorted({r.get("node") for r in records if r.get("node")})
    s = space.synth
    parts = [
        f"Space `{space.path}`: {len(records)} points evaluated ({space.search['method']} search, "
        f"{space.size} in the grid), {len(good)} ok, {len(failed)} failed; objective `{objective}` "
        f"({OBJECTIVES[objective]}imize); {len(nodes) or 'no'} Ray node(s).",
        f"Workloads: {', '.join(space.workload_names())}. Blocks synthesized in `{s['liberty']}` at "
        f"{s['clock_ns']:g} ns, activity {s['activity']:g}; area = arrays x PE array + expert cache; "
        "tokens/s and J/token from `elmoe3d perf` with the point's array, HB and energy per MAC "
        "(geometric means over the workloads in the table).",
        *([f"This run: {stats['evaluated']} points evaluated in {stats['seconds']:g} s on "
           f"{stats['nodes'] or 'no'} Ray node(s) ({'serial' if not stats['nodes'] else 'Ray tasks'}); "
           f"blocks: {stats['blocks_run']} synthesized, {stats['blocks_cached']} read from the cache."]
          if stats else []),
        f"## Best {min(TABLE_ROWS, len(good))} points by {objective} (* on the Pareto front)",
        table(records, space, front_keys={r['key'] for r in front}),
        f"## Pareto front: tokens/s up, J/token down, area down ({len(front)} points)",
        table(front, space, rows=len(front)),
        "## Best point per workload",
    ]
    rows = ["| workload | key | " + " | ".join(_varied(space)) + " | tokens/s | J/token | area mm^2 |",
            "|" + "---|" * (6 + len(_varied(space)))]
    for w, r in best.items():
        fig = r["workloads"][w]
        rows.append(f"| {w} | `{r['key'][:8]}` | " + " | ".join(_fmt(r["params"][n]) for n in _varied(space))
                    + f" | {fig['tokens_per_s']:.1f} | {fig['j_per_token']:.4f} | {r['area_mm2']:.3f} |")
    parts.append("\n".join(rows))
    if failed:
        parts += ["## Failed points", *[f"- `{r['key'][:8]}` {r['params']}: {r['error']}" for r in failed[:20]]]
    show = {r["key"]: r for r in [*front[:3], *best.values()]}
    parts.append("## Reproducing a point")
    for key, r in show.items():
        shown = ", ".join(f"{n}={r['params'][n]}" for n in _varied(space))
        parts.append(f"Point `{key}` ({shown}):\n\n```sh\n"
                     + "\n".join(commands(r, space, Path(config_dir) / f"{key}.json")) + "\n```")
    if command:
        parts.append(f"Command: `{command}`")
    return "\n\n".join(parts)


def write(out_dir, space, records, command="", stats=None):
    """Write ``report.md``, ``results.json``, ``front.png`` and one ``configs/<key>.json`` (an
    ``elmoe3d perf --config`` file) per ok point into ``out_dir``; returns the Markdown."""
    out_dir = Path(out_dir)
    configs = out_dir / "configs"
    configs.mkdir(exist_ok=True)
    for r in ok(records):
        (configs / f"{r['key']}.json").write_text(json.dumps({"systems": {"explore": r["perf_system"]}}, indent=1))
    text = summary(records, space, command, configs, stats)
    (out_dir / "report.md").write_text("# elmoe3d explore\n\n" + text + "\n")
    if ok(records):
        plot_front(records, pareto(records), out_dir / "front.png")
    return text


def payload(records, space):
    """Everything as one JSON-able object (``--json``)."""
    front = pareto(records)
    return {"space": {"path": space.path, "params": space.params, "workloads": list(space.workloads),
                      "synth": space.synth, "system": space.system, "search": space.search},
            "points": records, "front": [r["key"] for r in front],
            "best_per_workload": {w: r["key"] for w, r in best_per_workload(records, space).items()}}
