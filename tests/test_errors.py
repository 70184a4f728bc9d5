"""Errors, one vocabulary: the ISS stops with the core's Status at the core's index.

- The stream fuzzer (``sim/benches/stream_fuzz.py``): every mutation kind stops the ISS with the
  Status it aims at; the command processor's model (``sim/dispatch.DispatchModel``), answered by
  the ISS's executor results, stops at the same word with the same code.
- The RTL core (``sim/benches/tb_core_errors.py``): the same streams, every Status hit, the same
  code, index and command count as the ISS (one Verilator build of the ``small`` preset with 2
  lanes, as tests/test_core_rtl.py).
- The four edge disagreements, each decided the same at every level (``docs/errors.md``).
"""

import numpy as np
import pytest

from elmoe3d.errors import UserError
from elmoe3d.sim.benches.launch import EXTRA_BENCHES, run_top_bench
from elmoe3d.sim.benches.stream_fuzz import INPUT_EDITS, KINDS, StreamFuzzer, expect
from elmoe3d.sim.benches.tb_command_processor import Policy
from elmoe3d.sim.benches.tb_core_errors import core_limits
from elmoe3d.sim.machine.dispatch import DispatchModel, MachineError, StreamEnd
from elmoe3d.sim.golden.int_moe import check_inputs, fixed, int_moe, quantize_tokens, token_scale
from elmoe3d.sim.machine.iss import Machine
from elmoe3d.spec.isa import Op, Status

EXECUTOR = (Status.REGISTER, Status.RANGE, Status.ADDRESS, Status.INPUT, Status.ORDER)


def _limits(preset, lanes=0, max_k=8):
    return core_limits(dict(preset=preset, lanes=lanes, max_k=max_k))


@pytest.fixture(scope="module")
def tiny():
    cfg, limits = _limits("tiny", max_k=4)
    return cfg, limits, StreamFuzzer(cfg, 5, limits)


@pytest.mark.parametrize("seed", [1, 2])
def test_every_mutation_stops_the_iss_with_its_status(seed):
    cfg, limits = _limits("tiny", max_k=4)
    fz = StreamFuzzer(cfg, seed, limits)
    seen = set()
    for case in fz.cases(2 * len(KINDS)) + fz.edge_cases():
        out = expect(cfg, case, limits)
        if case.want is None:
            assert out.ended and out.status == Status.NONE, f"{case.kind} ({case.detail}): {out.message}"
        else:
            assert (out.status, out.ended) == (case.want, False), f"{case.kind} ({case.detail}): {out.message}"
            if out.status != Status.NONE:
                assert out.message.startswith((f"instruction {out.index} (", f"instruction {out.index}: unknown opcode"))
                assert out.message.endswith(f"[{out.status.name}]")
        seen.add(out.status)
    assert seen == set(Status)


@pytest.mark.parametrize("seed", [3, 4])
def test_the_processor_model_stops_where_the_iss_stops(seed):
    """The dispatch model with the ISS's executor answers (ROUTE masks, the failing dispatch's
    code) reproduces the ISS's stop: the same sequencing rules decide both."""
    cfg, limits = _limits("tiny", max_k=4)
    fz = StreamFuzzer(cfg, seed, limits)
    for case in fz.cases(2 * len(KINDS)):
        out = expect(cfg, case, limits)
        error_at = out.dispatches - 1 if out.status in EXECUTOR else None
        model = DispatchModel(cfg, Policy(out.masks, error_at, out.status)).feed(case.words, one_stream=True)
        assert (model.error, model.index, model.commands) == (out.status, out.index, out.commands), \
            f"{case.kind} ({case.detail}): model {model.error.name} at {model.index}, ISS {out.message}"
        assert model.busy == (out.ended and bool(case.words))


def test_machine_error_is_a_user_error_naming_the_instruction(tiny):
    cfg, limits, fz = tiny
    case = fz.case("order")
    with pytest.raises(MachineError) as info:
        Machine(cfg, case.offchip, case.hb, core=limits).run(case.words)
    exc = info.value
    assert isinstance(exc, UserError) and exc.status == Status.ORDER
    assert str(exc).startswith(f"instruction {exc.index} ({exc.op.name.lower()}): ")
    with pytest.raises(StreamEnd, match="instruction 0: the stream ends without halt") as info:
        Machine(cfg, case.offchip, case.hb).run([])
    assert info.value.status == Status.NONE


# -- the four edges ----------------------------------------------------------------------------
def _run(fz, what):
    case = fz.case("input", what)
    with pytest.raises(MachineError) as info:
        Machine(fz.config, case.offchip, case.hb, core=fz.limits).run(case.words)
    return info.value, case


def test_token_scale_mantissa_of_2_15_is_an_input_error_everywhere(tiny):
    """Golden refuses xm >= 2**15; the ISS stops at LOADX with INPUT (the RTL: tb_core_errors)."""
    cfg, limits, fz = tiny
    exc, case = _run(fz, "xm")
    assert exc.status == Status.INPUT and exc.op == Op.LOADX and "mantissa" in str(exc)
    x = np.zeros((1, fz.shape.d_model), dtype=np.int8)
    with pytest.raises(UserError, match=r"0 <= xm < 2\*\*15"):
        check_inputs(fz.layer, x, np.array([1 << 15]), np.array([8]))


@pytest.mark.parametrize("x", [16383.75, 16383.9, 16384 - 1e-9])
def test_scales_that_round_to_exponent_0_are_refused(x):
    """``fixed`` and ``token_scale`` never return exponent 0 (which every level refuses)."""
    with pytest.raises(UserError, match="too large for a fixed-point multiplier"):
        fixed(x)
    with pytest.raises(UserError, match="too large"):
        token_scale(np.array([1.0, x]))


def test_scales_just_below_the_rounding_edge_keep_exponent_1():
    m, e = fixed(16383.74)
    assert (int(m), int(e)) == ((1 << 15) - 1, 1)
    with pytest.raises(UserError):
        quantize_tokens(np.full((1, 4), 127 * 16383.8))


@pytest.mark.parametrize("what", ["router_e", "hid_e"])
def test_a_zero_layer_exponent_is_an_input_error_at_loadp(tiny, what):
    """Golden refuses the layer; the ISS stops at LOADP with INPUT naming it (not at SWIGLU or
    inside the golden arithmetic); the RTL likewise (tb_core_errors' edge cases)."""
    cfg, limits, fz = tiny
    exc, case = _run(fz, what)
    assert exc.status == Status.INPUT and exc.op == Op.LOADP and what in str(exc), str(exc)
    assert str(exc).startswith(f"instruction {exc.index} (loadp): ")
    from dataclasses import replace
    bad = replace(fz.layer, **{what: 0})
    a, xm, xe = quantize_tokens(np.random.default_rng(0).standard_normal((2, fz.shape.d_model)))
    with pytest.raises(UserError, match="exponents must be >= 1"):
        int_moe(bad, a, xm, xe)


def test_the_edge_cases_cover_every_input_edit(tiny):
    cfg, limits, fz = tiny
    cases = fz.edge_cases()
    assert [c.detail for c in cases] and len(cases) == len(INPUT_EDITS)
    for c in cases:
        assert expect(cfg, c, limits).status == Status.INPUT, c.detail


# -- the RTL core -------------------------------------------------------------------------------
def test_the_error_bench_is_registered():
    assert "elmoe3d.sim.benches.tb_core_errors" in EXTRA_BENCHES["core"]
    with pytest.raises(UserError, match="has no bench"):
        run_top_bench("pe", {}, "/nonexistent", module="elmoe3d.sim.benches.tb_core_errors")


@pytest.mark.slow     # its own core build (about 3 CPU minutes); the default run covers error stops on the native bench
def test_core_stops_where_the_iss_stops(tmp_path):
    """Every error kind and a truncation once, INPUT from the three edge mutations (13 short
    streams), every other one with random stalls: every Status hit in RTL, with the ISS's
    code, index and command count."""
    run_top_bench("core", dict(preset="small", lanes=2), tmp_path, seeds=(1,), quick=True, quick_build=True,
                  module="elmoe3d.sim.benches.tb_core_errors")
