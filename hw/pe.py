"""Bit-sliced processing element: ``terms`` 8-bit x 5-bit signed products into one accumulator.

Micro-architecture
------------------
A PE computes one output channel's dot product for one token. Each enabled cycle it forms
``terms`` products ``a_t * w_t`` (8-bit signed activation x ``operand_bits``-bit signed
operand), sums them with a balanced adder tree, applies the bit-nesting shift (:func:`nest
<elmoe3d.hw.lsb_augment.nest>`: ``<< 3`` for a draft/MSB term) and adds the term to a signed
``acc_bits`` accumulator::

    stage 0 (comb)            | stage 1 (pipeline=1)  | accumulator
    a_t * w_t -> tree -> nest -> term register       -> acc <= acc + term

- ``operand_bits = 5`` is the bit-sliced PE (operand ``m`` or ``c``, SPEC section 2);
  ``operand_bits = 8`` is the plain INT8 MAC of the baseline array (no nesting shift). Both are
  built by this one class, so the baseline differs only in what the bit slicing changes.
- ``pipeline = 1`` registers the nested term (multiplier + tree in one stage, the accumulate in
  the next); ``pipeline = 0`` accumulates in the cycle of the inputs.
- ``i_clear`` zeroes the accumulator ``pipeline`` cycles later, like a term (the array raises
  it when it accepts a command, with ``i_valid`` low); a term that follows the clear is added
  after it. Registering it per PE keeps the array's clear net at one load per PE.

With ``terms = 1`` this is the single MAC that ``tests/test_formal_pe.py`` proves: in FULL mode
(an MSB cycle then an LSB cycle) it adds exactly ``a * q``; in DRAFT mode ``8 * a * m``.

Overflow rule: every nested term of one weight obeys ``|8am| <= 15240`` and ``|8am + ac| =
|aq| <= 127*128``, so the accumulator holds any dot product of up to ``max_k`` inputs iff
:func:`elmoe3d.sim.gemv.max_k` of ``acc_bits`` is at least ``max_k``; the constructor refuses
otherwise, naming the narrowest width that would do.
"""

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..errors import UserError
from ..sim.gemv import ACC_BITS, max_k as gemv_max_k
from ..sim.slices import OPERAND_BITS
from .layouts import ACT, WEIGHT_BITS
from .lsb_augment import check_positive, nest
from .tops import Param, Top

OPERAND_CHOICES = (OPERAND_BITS, WEIGHT_BITS)   # bit-sliced (5) or the INT8 baseline (8)
DEFAULT_MAX_K = 4096
MAX_ACC_BITS = 64


def check_pipeline(pipeline):
    if isinstance(pipeline, bool) or pipeline not in (0, 1):
        raise UserError(f"pipeline must be 0 or 1, got {pipeline!r}")
    return pipeline


def check_acc(acc_bits, max_k):
    """Validate the accumulator width against the overflow rule for ``max_k`` inputs."""
    check_positive("max_k", max_k)
    if isinstance(acc_bits, bool) or not isinstance(acc_bits, int):
        raise UserError(f"acc_bits must be an integer, got {acc_bits!r}")
    if acc_bits > MAX_ACC_BITS:
        raise UserError(f"acc_bits must be at most {MAX_ACC_BITS}, got {acc_bits}")
    gemv_max_k(acc_bits)         # UserError: too narrow even for K = 1
    if max_k > gemv_max_k(MAX_ACC_BITS):
        raise UserError(f"max_k must be at most {gemv_max_k(MAX_ACC_BITS)} (a {MAX_ACC_BITS}-bit "
                        f"accumulator), got {max_k}")
    if gemv_max_k(acc_bits) < max_k:
        need = next(b for b in range(acc_bits, MAX_ACC_BITS + 1) if gemv_max_k(b) >= max_k)
        raise UserError(f"acc_bits = {acc_bits} can overflow for max_k = {max_k}: a {acc_bits}-bit "
                        f"accumulator holds at most {gemv_max_k(acc_bits)} inputs; use acc_bits >= {need}")
    return acc_bits, max_k


def tree_sum(values):
    """Balanced adder tree (widths grow by one bit per level, never truncated)."""
    values = list(values)
    while len(values) > 1:
        values = [values[i] + values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


class PE(wiring.Component):
    """A multiply-accumulate PE over ``terms`` parallel products.

    Parameters
    ----------
    terms : int
        Products summed per cycle (the array's columns); 1 for a single MAC.
    operand_bits : int
        5 (bit-sliced operand, with the nesting shift) or 8 (INT8 baseline, no shift).
    acc_bits : int
        Signed accumulator width (default 32).
    max_k : int
        Longest dot product the PE must hold without overflow (default 4096).
    pipeline : int
        0 or 1 register stages between the products and the accumulator.

    Members
    -------
    i_act : In(ArrayLayout(signed(8), terms))
    i_operand : In(ArrayLayout(signed(operand_bits), terms))
    i_valid : In(1)       accumulate this cycle's term
    i_shift : In(1)       (5-bit operands only) the term is a draft term: shift it by 3
    i_clear : In(1)       zero the accumulator, flush the pipeline
    o_acc : Out(signed(acc_bits))

    Raises
    ------
    UserError
        A size below 1, an operand width other than 5 or 8, a pipeline other than 0/1, or an
        accumulator that can overflow for ``max_k`` inputs.
    """

    def __init__(self, *, terms=1, operand_bits=OPERAND_BITS, acc_bits=ACC_BITS,
                 max_k=DEFAULT_MAX_K, pipeline=1):
        self.terms = check_positive("terms", terms)
        if operand_bits not in OPERAND_CHOICES or isinstance(operand_bits, bool):
            raise UserError(f"operand_bits must be {OPERAND_CHOICES[0]} (bit-sliced) or "
                            f"{OPERAND_CHOICES[1]} (INT8 baseline), got {operand_bits!r}")
        self.operand_bits = operand_bits
        self.nested = operand_bits == OPERAND_BITS
        self.acc_bits, self.max_k = check_acc(acc_bits, max_k)
        self.pipeline = check_pipeline(pipeline)
        members = {
            "i_act": In(data.ArrayLayout(ACT, self.terms)),
            "i_operand": In(data.ArrayLayout(signed(operand_bits), self.terms)),
            "i_valid": In(1),
            "i_clear": In(1),
            "o_acc": Out(signed(self.acc_bits)),
        }
        if self.nested:
            members["i_shift"] = In(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        products = []
        for t in range(self.terms):
            prod = Signal(signed(ACT.width + self.operand_bits), name=f"prod_{t}")
            m.d.comb += prod.eq(self.i_act[t] * self.i_operand[t])
            products.append(prod)
        total = tree_sum(products)
        term_value = nest(total, self.i_shift) if self.nested else total
        term = Signal(signed(len(term_value)), name="term")
        m.d.comb += term.eq(term_value)

        if self.pipeline:
            s1_term = Signal.like(term, name="s1_term", reset_less=True)  # guarded by s1_valid
            s1_valid = Signal(name="s1_valid")
            # The clear travels with the pipeline too: each PE's own register drives its
            # accumulator's reset, so the array's clear net fans out to one flop per PE.
            s1_clear = Signal(name="s1_clear")
            m.d.sync += [s1_term.eq(term), s1_valid.eq(self.i_valid & ~self.i_clear),
                         s1_clear.eq(self.i_clear)]
            add_term, add_valid, clear = s1_term, s1_valid, s1_clear
        else:
            add_term, add_valid, clear = term, self.i_valid, self.i_clear

        acc = Signal(signed(self.acc_bits), name="acc")
        with m.If(clear):
            m.d.sync += acc.eq(0)
        with m.Elif(add_valid):
            m.d.sync += acc.eq(acc + add_term)
        m.d.comb += self.o_acc.eq(acc)
        return m


def _pe_macs(*, terms, acc_bits, max_k, pipeline):
    return {"draft": terms, "full": terms / 2}


GENERATE_TOPS = [
    Top(name="pe", help="bit-sliced PE: terms x (8-bit act * 5-bit slice operand) -> accumulator",
        build=lambda **p: PE(**p),
        params=(Param("terms", int, 1, "products summed per cycle"),
                Param("acc_bits", int, ACC_BITS, "signed accumulator width"),
                Param("max_k", int, DEFAULT_MAX_K, "longest dot product (overflow rule)"),
                Param("pipeline", int, 1, "register stages before the accumulator", (0, 1))),
        macs_per_cycle=_pe_macs),
]
