"""Bit-sliced processing element: ``terms`` 8-bit x 5-bit signed products into one accumulator.

Micro-architecture
------------------
A PE computes one output channel's dot product for one token. Each enabled cycle it forms
``terms`` products ``a_t * w_t`` (8-bit signed activation x ``operand_bits``-bit signed
operand), sums them with a balanced adder tree, applies the bit-nesting shift (:func:`nest
<elmoe3d.hw.lsb_augment.nest>`: ``<< 3`` for a draft/MSB term) and adds the term to a signed
``acc_bits`` accumulator. ``pipeline`` (0 .. :data:`MAX_PIPELINE`) register stages sit between
the inputs and the accumulator; each depth adds one cut to the previous one::

    pipeline | in_* (inputs) | products, tree levels 1..L/2 | mid_* | levels L/2+1..L, nest | term | acc
    0        |               |          comb                 |       |          comb          |      | acc
    1        |               |          comb                 |       |          comb          | reg  | acc
    2        |     reg       |          comb                 |       |          comb          | reg  | acc
    3        |     reg       |          comb                 |  reg  |          comb          | reg  | acc

- ``pipeline = 1`` registers the nested term (multiplier + tree in one stage, the accumulate in
  the next); ``pipeline = 0`` accumulates in the cycle of the inputs.
- ``pipeline >= 2`` registers the PE's inputs (activations, operands, shift, valid, clear) in the
  PE itself: an activation bit of the array feeds ``rows x lanes`` PEs, and inside each PE
  5 (or 8) partial-product gates; the register gives each PE its own copy, so no net crosses
  from the array into the multipliers with hundreds of loads (the synthesis flow buffers within
  a module only).
- ``pipeline = 3`` also cuts the adder tree after ``ceil(L / 2)`` of its ``L = ceil(log2 terms)``
  levels (one level fewer with 8-bit operands, whose 8 x 8 multipliers make the first half the
  deeper one; for ``terms = 1``: after the multiplier); the registers hold the partial sums at
  their own (derived) widths, so the sum is never truncated (:attr:`PE.tree_cut`).
- ``operand_bits = 5`` is the bit-sliced PE (operand ``m`` or ``c``, SPEC section 2);
  ``operand_bits = 8`` is the plain INT8 MAC of the baseline array (no nesting shift). Both are
  built by this one class, so the baseline differs only in what the bit slicing changes.
- ``i_clear`` restarts the accumulator ``pipeline`` cycles later, like a term: alone it zeroes
  it; together with ``i_valid`` the sum restarts at that cycle's term (the array raises it with
  the first term of each command, so one command's terms follow the last one's without a gap
  cycle). Registering it per PE keeps the array's clear net at one load per PE. Data registers
  have no reset (``valid`` guards them); ``valid`` and ``clear`` registers do.

With ``terms = 1`` this is the single MAC that ``tests/test_formal_pe.py`` proves: in FULL mode
(an MSB cycle then an LSB cycle) it adds exactly ``a * q``; in DRAFT mode ``8 * a * m``.

Overflow rule: every nested term of one weight obeys ``|8am| <= 15240`` and ``|8am + ac| =
|aq| <= 127*128``, so the accumulator holds any dot product of up to ``max_k`` inputs iff
:func:`elmoe3d.sim.numerics.gemv.max_k` of ``acc_bits`` is at least ``max_k``; the constructor refuses
otherwise, naming the narrowest width that would do.
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..errors import UserError
from ..sim.numerics.gemv import ACC_BITS, max_k as gemv_max_k
from ..sim.numerics.slices import OPERAND_BITS
from ..spec.timing import DEFAULT_PIPELINE, MAX_PIPELINE, PIPELINE_CHOICES, check_pipeline  # noqa: F401
from .layouts import ACT, WEIGHT_BITS
from .lsb_augment import check_positive, nest
from .tops import Param, Top

OPERAND_CHOICES = (OPERAND_BITS, WEIGHT_BITS)   # bit-sliced (5) or the INT8 baseline (8)
DEFAULT_MAX_K = 4096
MAX_ACC_BITS = 64


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


def tree_levels(count):
    """Levels of the balanced adder tree over ``count`` values (``ceil(log2 count)``)."""
    return (count - 1).bit_length()


def tree_reduce(values, levels=None):
    """``levels`` levels (default: all) of a balanced adder tree; returns the partial sums.

    Widths grow by one bit per level (Amaranth's ``+``), never truncated.
    """
    values = list(values)
    done = 0
    while len(values) > 1 and (levels is None or done < levels):
        values = [values[i] + values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
        done += 1
    return values


def tree_sum(values):
    """Balanced adder tree (widths grow by one bit per level, never truncated)."""
    return tree_reduce(values)[0]


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
        Register stages between the inputs and the accumulator, 0 .. 3 (default 3; see the
        module docstring for where each sits).

    Members
    -------
    i_act : In(ArrayLayout(signed(8), terms))
    i_operand : In(ArrayLayout(signed(operand_bits), terms))
    i_valid : In(1)       accumulate this cycle's term
    i_shift : In(1)       (5-bit operands only) the term is a draft term: shift it by 3
    i_clear : In(1)       restart the accumulator ``pipeline`` cycles later (at this cycle's
                          term when ``i_valid``, else at zero)
    o_acc : Out(signed(acc_bits))  the accumulator, ``pipeline + 1`` cycles after the last term

    Raises
    ------
    UserError
        A size below 1, an operand width other than 5 or 8, a pipeline outside 0..3, or an
        accumulator that can overflow for ``max_k`` inputs.
    """

    # Written into the generated interface documentation (hw/interface_doc.py).
    INTERFACE_NOTES = (
        "No stream and no command: each cycle with `i_valid` high adds the sum of the {terms} "
        "products `i_act[t] * i_operand[t]` (shifted left by 3 when `i_shift` is high, 5-bit "
        "operands only) to the accumulator that `o_acc` shows; `i_clear` restarts it (at that "
        "cycle's term when `i_valid` is high, else at zero). Both take effect after the PE's "
        "register stages (`pipeline`).",
        "Ranges: every int8 activation (-128 included) and every operand value is computed as "
        "its two's-complement value. The {acc_bits}-bit accumulator holds any {max_k} weights' "
        "terms exactly and wraps modulo 2**{acc_bits} beyond that, with no flag.",
    )

    def __init__(self, *, terms=1, operand_bits=OPERAND_BITS, acc_bits=ACC_BITS,
                 max_k=DEFAULT_MAX_K, pipeline=DEFAULT_PIPELINE):
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

    @property
    def tree_cut(self):
        """Adder-tree levels before the ``pipeline = 3`` cut: half of them (rounded up) for the
        5-bit operand, one fewer for the 8-bit one (its 8 x 8 multiplier is the deeper first half)."""
        half = -(-tree_levels(self.terms) // 2)
        return max(0, half - 1) if self.operand_bits == WEIGHT_BITS else half

    @property
    def latency(self):
        """Cycles from a term (or clear) at the inputs to its effect on ``o_acc``."""
        return self.pipeline + 1

    def elaborate(self, platform):
        m = Module()
        p = self.pipeline
        act, operand = self.i_act, self.i_operand
        shift = self.i_shift if self.nested else None
        # valid and clear travel together; a clear with a term restarts the sum at that term
        valid, clear = self.i_valid, self.i_clear

        def stage(name, value, *, reset_less=True):
            """A pipeline register named ``name`` loaded every cycle with ``value``."""
            reg = Signal.like(value, name=name, reset_less=reset_less) if isinstance(value, Signal) \
                else Signal(value.shape(), name=name, reset_less=reset_less)
            m.d.sync += reg.eq(value)
            return reg

        if p >= 2:      # input registers: each PE its own copy of the array's broadcast nets
            act = stage("in_act", act)
            operand = stage("in_operand", operand)
            if shift is not None:
                shift = stage("in_shift", shift)
            valid, clear = stage("in_valid", valid, reset_less=False), stage("in_clear", clear, reset_less=False)

        products = []
        for t in range(self.terms):
            prod = Signal(signed(ACT.width + self.operand_bits), name=f"prod_{t}")
            m.d.comb += prod.eq(act[t] * operand[t])
            products.append(prod)

        if p >= 3:      # cut the adder tree half-way (after the multipliers when terms = 1)
            partial = tree_reduce(products, self.tree_cut)
            partial = [stage(f"mid_sum_{i}", v) for i, v in enumerate(partial)]
            if shift is not None:
                shift = stage("mid_shift", shift)
            valid, clear = stage("mid_valid", valid, reset_less=False), stage("mid_clear", clear, reset_less=False)
            total = tree_sum(partial)
        else:
            total = tree_sum(products)

        term_value = nest(total, shift) if self.nested else total
        term = Signal(signed(len(term_value)), name="term")
        m.d.comb += term.eq(term_value)
        if p >= 1:      # the nested term: the accumulator's adder has a stage of its own
            term = stage("s_term", term)
            valid, clear = stage("s_valid", valid, reset_less=False), stage("s_clear", clear, reset_less=False)

        acc = Signal(signed(self.acc_bits), name="acc")
        with m.If(clear):
            m.d.sync += acc.eq(Mux(valid, term, 0))
        with m.Elif(valid):
            m.d.sync += acc.eq(acc + term)
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
                Param("pipeline", int, DEFAULT_PIPELINE, "register stages before the accumulator",
                      PIPELINE_CHOICES)),
        macs_per_cycle=_pe_macs),
]
