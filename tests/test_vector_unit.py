"""Vector unit (``hw/vector_*.py``): refusals, layouts, the cycle model, the golden decomposition,
and the cocotb regression of every block against ``sim/golden/int_moe.py``.

One Verilator build per (top, parameter set) runs every cocotb test of
``sim/benches/tb_vector_unit.py`` (corner cases, random cases over several seeds, latency and
cycle counts), with random idle cycles on every source and random backpressure on every sink;
each pytest node builds in its own folder. The default run keeps one small parameter set per
top (the CPU budget of the suite); the others, the generator defaults included, are ``slow``.
"""

import numpy as np
import pytest
from amaranth.lib import data

from elmoe3d.errors import UserError
from elmoe3d.hw.tops import get_top
from elmoe3d.hw.vector_combine import VectorCombine
from elmoe3d.hw.vector_requant import VectorRequant
from elmoe3d.hw.vector_router import VectorRouter, router_cycles
from elmoe3d.hw.vector_swiglu import VectorSwiGLU
from elmoe3d.hw.vector_unit import VectorUnit
from elmoe3d.hw.vector_common import COMBINE_BITS, OutBits, requant_in_layout, router_cmd_layout
from elmoe3d.sim.benches.launch import BENCHES, run_top_bench
from elmoe3d.sim.golden.int_moe import IntExpert, requant, swiglu



def run_vector_bench(top_name, params, build_dir, *, seeds=(1, 2, 3), **extra):
    """The vector-unit bench on ``top_name`` through the one bench registry (``BENCHES``)."""
    return run_top_bench(top_name, params, build_dir, seeds=seeds, **extra)


# The default run builds the whole unit (all four blocks, one Verilator build each) at two small
# parameter sets; the bench drives each block alone through its prefixed ports.
FAST = [
    pytest.param("vector_unit", dict(width=2, max_experts=6, max_k=3), id="unit-w2-e6-k3"),
    pytest.param("vector_unit", dict(width=3, max_experts=4, max_k=4), id="unit-w3-e4-k4"),
]
SLOW = [
    pytest.param("vector_requant", dict(width=1), id="requant-w1"),
    pytest.param("vector_requant", dict(), id="requant-default"),
    pytest.param("vector_swiglu", dict(width=5), id="swiglu-w5"),
    pytest.param("vector_swiglu", dict(), id="swiglu-default"),
    pytest.param("vector_combine", dict(width=1), id="combine-w1"),
    pytest.param("vector_combine", dict(), id="combine-default"),
    pytest.param("vector_router", dict(max_experts=2, max_k=1), id="router-e2-k1"),
    pytest.param("vector_router", dict(max_experts=8, max_k=8), id="router-e8-k8"),
    pytest.param("vector_router", dict(), id="router-default"),
]


@pytest.mark.parametrize("name, params", FAST)
def test_vector_unit_regression_verilator(name, params, tmp_path):
    run_vector_bench(name, params, tmp_path, seeds=(1, 2))


@pytest.mark.icarus
def test_vector_unit_smoke_icarus(tmp_path):
    run_vector_bench("vector_unit", dict(width=2, max_experts=4, max_k=2), tmp_path, seeds=(5,), quick=True,
                     simulator="icarus")


@pytest.mark.slow
@pytest.mark.parametrize("name, params", SLOW)
def test_vector_unit_regression_more_params(name, params, tmp_path):
    run_vector_bench(name, params, tmp_path, seeds=(3, 4, 5))


# -- refusals --------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls, kwargs, message", [
    (VectorRequant, dict(width=0), "width must be in [1, 256], got 0"),
    (VectorRequant, dict(width=257), "width must be in [1, 256], got 257"),
    (VectorRequant, dict(width=2.0), "width must be an integer, got 2.0"),
    (VectorSwiGLU, dict(width=True), "width must be an integer, got True"),
    (VectorSwiGLU, dict(width=-3), "width must be in [1, 256], got -3"),
    (VectorCombine, dict(width="4"), "width must be an integer, got '4'"),
    (VectorRouter, dict(max_experts=1), "max_experts must be in [2, 1024], got 1"),
    (VectorRouter, dict(max_experts=2000), "max_experts must be in [2, 1024], got 2000"),
    (VectorRouter, dict(max_k=0), "max_k must be in [1, 64], got 0"),
    (VectorRouter, dict(max_k=65, max_experts=128), "max_k must be in [1, 64], got 65"),
    (VectorRouter, dict(max_experts=4, max_k=5), "max_k must be at most max_experts (4), got 5"),
    (VectorRouter, dict(max_experts=4.5), "max_experts must be an integer, got 4.5"),
    (VectorUnit, dict(width=0), "width must be in [1, 256], got 0"),
    (VectorUnit, dict(max_experts=3, max_k=4), "max_k must be at most max_experts (3), got 4"),
])
def test_refusals(cls, kwargs, message):
    with pytest.raises(UserError) as info:
        cls(**kwargs)
    assert str(info.value) == message


def test_keyword_only():
    for cls in (VectorRequant, VectorSwiGLU, VectorCombine, VectorUnit):
        with pytest.raises(TypeError):
            cls(4)
    with pytest.raises(TypeError):
        VectorRouter(8, 2)


# -- layouts and derived widths ----------------------------------------------------------------------
def test_widths_derive_from_the_golden_constants():
    r = VectorRequant(width=3)
    assert r.in_layout.size == 2 + 3 * (32 + 30 + 7) and r.out_layout.size == 3 * 32
    s = VectorSwiGLU(width=2)
    assert s.in_layout.size == 15 + 7 + 2 * (8 + 16) and s.out_layout.size == 2 * 8
    assert s.table_layout.size == 8 + 16
    c = VectorCombine(width=2)
    assert COMBINE_BITS == 37 and c.in_layout.size == 16 + 1 + 1 + 2 * (32 + 37)
    assert c.out_layout.size == 2 * 37
    v = VectorRouter(max_experts=8, max_k=2)
    assert v.cmd_layout.size == 4 + 2 + 1 + 8 + 15 + 6 + 15 + 6
    assert v.result_layout.size == 2 + 2 * 3 + 2 * 16
    assert (r.LATENCY, s.LATENCY, c.LATENCY) == (5, 7, 5)     # docs/vector-unit.md


def test_layouts_round_trip():
    lay = requant_in_layout(2)
    beat = {"bits": OutBits.B16, "elem": [{"acc": -(2**31), "m": 2**30 - 1, "e": 127}, {"acc": 5, "m": 0, "e": 1}]}
    view = data.Const(lay, lay.const(beat).as_value().value)
    assert view.bits == OutBits.B16 and view.elem[0].acc == -(2**31) and view.elem[0].e == 127
    cmd = router_cmd_layout(6, 3)
    word = cmd.const({"n": 6, "k": 3, "cached": 1, "allowed": [1, 0, 0, 0, 0, 1], "xm": 1, "xe": 48,
                      "rm": 2**15 - 1, "re": 62}).as_value().value
    view = data.Const(cmd, word)
    assert (view.n, view.k, view.cached, list(view.allowed), view.xe, view.re) == (6, 3, 1, [1, 0, 0, 0, 0, 1], 48, 62)


@pytest.mark.parametrize("n, count, cycles", [(8, 2, 1 + 8 + 2 + 6 + 16 + 1), (8, 0, 1 + 8 + 1 + 1), (0, 0, 3),
                                              (64, 8, 1 + 64 + 8 + 6 + 16 + 1)])
def test_router_cycle_model(n, count, cycles):
    assert router_cycles(n, count) == cycles == VectorRouter(max_experts=64, max_k=8).cycles(n, count)


def test_registry_entries():
    for name, params in [("vector_requant", {"width": 16}), ("vector_swiglu", {"width": 16}),
                         ("vector_combine", {"width": 16}), ("vector_router", {"max_experts": 64, "max_k": 8}),
                         ("vector_unit", {"width": 16, "max_experts": 64, "max_k": 8})]:
        top = get_top(name)
        assert top.resolve({}) == params
        assert BENCHES[name] == "elmoe3d.sim.benches.tb_vector_unit"     # `elmoe3d regress` knows it
    with pytest.raises(UserError, match="takes no parameter rows"):
        get_top("vector_router").resolve({"rows": 2})


def test_unit_forwards_every_block_port():
    unit = VectorUnit(width=2, max_experts=4, max_k=2)
    names = {"__".join(map(str, path)) for path, _, _ in unit.signature.flatten(unit)}
    for block in ("requant", "swiglu", "router", "combine"):
        sub = getattr(unit, f"{block}_block")
        for path, _, _ in sub.signature.flatten(sub):
            assert f"{block}__" + "__".join(map(str, path)) in names


def test_swiglu_block_is_the_last_step_of_the_golden_swiglu():
    """``int_moe.swiglu`` = requant (gate, 8) -> table -> requant (up, 16) -> the SwiGLU block's
    ``requant(SILU[g + 128] * v, hm, he, 8)``: the vector unit's decomposition is the golden one."""
    rng = np.random.default_rng(0)
    n, F = 3, 7
    gm, ge = rng.integers(1 << 14, 1 << 15, F), rng.integers(1, 30, F)
    um, ue = rng.integers(1 << 14, 1 << 15, F), rng.integers(1, 30, F)
    e = IntExpert(None, None, None, gm, ge, um, ue, None, None)
    layer = type("L", (), {"silu": rng.integers(-32768, 32768, 256).astype(np.int16), "hid_m": 20000, "hid_e": 30})
    G, U = rng.integers(-(2**31), 2**31, (n, F)), rng.integers(-(2**31), 2**31, (n, F))
    xm, xe = rng.integers(1 << 14, 1 << 15, n), rng.integers(1, 48, n)
    g = requant(G, xm[:, None] * gm, xe[:, None] + ge, 8)
    v = requant(U, xm[:, None] * um, xe[:, None] + ue, 16)
    h = requant(layer.silu.astype(np.int64)[g + 128] * v, layer.hid_m, layer.hid_e, 8)
    np.testing.assert_array_equal(h, swiglu(layer, e, G, U, xm, xe))
