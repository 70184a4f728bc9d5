"""Imports run one way: definitions <- golden model / ISS <- firmware <- hw <- benches, synthesis,
exploration <- commands; inside sim/: numerics <- golden blocks <- cache model, ISS <- language
model, Elastic-SD.

Every ``import`` and ``from ... import`` of every module of the package (module level and inside
functions alike, since a lazy import is still a dependency) is resolved to its ``elmoe3d.*`` target
and checked against the layer table below. A wrong-way import fails with the file, the line and
the rule it breaks.
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# folder -> package, as pyproject.toml maps them
FOLDERS = {"elmoe3d": "elmoe3d", "hw": "elmoe3d.hw", "sim": "elmoe3d.sim", "firmware": "elmoe3d.firmware",
           "synth": "elmoe3d.synth", "perf": "elmoe3d.perf", "explore": "elmoe3d.explore"}

# Layers, bottom first. A module may import its own layer and the layers below it.
# The utilities (errors, paths, limits, toolchain, results_page) sit at the bottom with the definitions.
LAYERS = [
    ("definitions", ["elmoe3d.spec", "elmoe3d.config", "elmoe3d.errors", "elmoe3d.paths", "elmoe3d.limits",
                     "elmoe3d.toolchain", "elmoe3d.results_page"]),
    # sim/ by concept, bottom first (elmoe3d.sim itself holds only the data folder's path)
    ("numerics", ["elmoe3d.sim.numerics", "elmoe3d.sim"]),
    ("golden blocks", ["elmoe3d.sim.golden"]),
    ("expert-cache model and ISS", ["elmoe3d.sim.cache", "elmoe3d.sim.machine"]),
    ("language model and Elastic-SD", ["elmoe3d.sim.lm", "elmoe3d.sim.sd"]),
    ("firmware", ["elmoe3d.firmware"]),
    ("system model", ["elmoe3d.perf"]),
    ("hardware", ["elmoe3d.hw"]),
    ("benches and synthesis", ["elmoe3d.sim.benches", "elmoe3d.synth"]),
    ("exploration", ["elmoe3d.explore"]),
    ("commands", ["elmoe3d.commands", "elmoe3d.cli", "elmoe3d.__main__", "elmoe3d"]),
]
# Pairs that must never meet even though the table would allow it: the generator does not
# depend on the compiler or the image builders, nor on the system model.
FORBIDDEN = [("elmoe3d.hw", "elmoe3d.firmware"), ("elmoe3d.hw", "elmoe3d.perf")]


def layer_of(module):
    """Index of the most specific layer prefix that owns ``module``."""
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    return best


def modules():
    for folder, package in FOLDERS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            yield name, path, path.name == "__init__.py"


def imports(name, path, is_package):
    """``(line, target)`` of every elmoe3d import in a file."""
    tree = ast.parse(path.read_text(), str(path))
    here = name.split(".") if is_package else name.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("elmoe3d"):
                    yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("elmoe3d"):
                continue
            if node.module is None or mod in ("elmoe3d",):
                # `from . import x`: the target is the sub-module x
                for a in node.names:
                    yield node.lineno, f"{mod}.{a.name}"
            else:
                yield node.lineno, mod


def violations():
    out = []
    for name, path, is_pkg in modules():
        src = layer_of(name)
        for line, target in imports(name, path, is_pkg):
            dst = layer_of(target)
            where = f"{path.relative_to(REPO)}:{line}"
            if src is None or dst is None:
                continue
            if dst > src:
                out.append(f"{where}: {name} ({LAYERS[src][0]}) imports {target} ({LAYERS[dst][0]}, a layer above)")
            for a, b in FORBIDDEN:
                if (name == a or name.startswith(a + ".")) and (target == b or target.startswith(b + ".")):
                    out.append(f"{where}: {name} imports {target} ({a} must not depend on {b})")
    return out


def test_imports_run_one_way():
    bad = violations()
    assert not bad, "wrong-way imports:\n" + "\n".join(bad)


def test_the_layer_table_covers_every_module():
    missing = [name for name, _, _ in modules() if layer_of(name) is None]
    assert not missing, f"modules outside every layer: {missing}"


@pytest.mark.parametrize("src,target,bad", [
    ("elmoe3d.sim.machine.iss", "elmoe3d.hw.pe_array", True),
    ("elmoe3d.spec.isa", "elmoe3d.sim.golden.int_moe", True),
    ("elmoe3d.hw.executor", "elmoe3d.firmware.layout", True),
    ("elmoe3d.hw.executor", "elmoe3d.spec.image", False),
    ("elmoe3d.sim.benches.tb_core", "elmoe3d.hw.core", False),
    ("elmoe3d.firmware.compiler", "elmoe3d.sim.golden.int_moe", False),
    ("elmoe3d.sim.numerics.gemv", "elmoe3d.sim.golden.int_moe", True),
    ("elmoe3d.sim.machine.iss", "elmoe3d.sim.lm.model", True),
    ("elmoe3d.sim.sd.elastic_sd", "elmoe3d.sim.cache.expert_cache", False),
])
def test_the_rule_itself(src, target, bad):
    """The checker flags a known wrong-way import and passes a right-way one."""
    s, d = layer_of(src), layer_of(target)
    forbidden = any(src.startswith(a) and target.startswith(b) for a, b in FORBIDDEN)
    assert (d > s or forbidden) == bad


def test_every_package_folder_is_listed_in_pyproject():
    """A sub-package missing from pyproject's ``packages`` works in the editable install and is
    left out of a wheel (elmoe3d.hw.executor was, for a while)."""
    import tomllib
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for folder, package in FOLDERS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            found.add(".".join([package, *rel.parts]))
    assert not found - listed, f"packages missing from pyproject.toml: {sorted(found - listed)}"
