"""Bit-sliced PE array: GEMV tiles in DRAFT (MSB planes) or FULL (MSB + LSB planes) mode.

Micro-architecture
------------------
``rows`` output channels x ``cols`` inputs per beat x ``lanes`` tokens (batch lanes share
every weight fetch)::

                    i_msb (rows x cols nibbles) ---+
                    i_lsb (rows x cols nibbles) ---+--> LsbAugment per row (m / c, shift)
                                                   |        | operands[row], shared by lanes
    i_act (lanes x cols int8) --> column mask --> PE pe_<row>_<lane> (cols products, tree,
    i_cmd {k, mode}  --> control FSM                  nest shift, accumulator)
                                                   --> o_result (lanes x rows accumulators)

- **Command.** ``i_cmd`` carries ``k`` (inputs, 0 .. ``max_k``) and the mode. The array then
  consumes ``ceil(k / cols)`` activation beats; the first term restarts the accumulators (the
  PEs' ``i_clear`` with the term); on the last beat the columns at or beyond ``k`` are masked
  to zero, so the producers may pad a partial beat with anything. The next command is taken
  in the cycle of the last beat, so the beats of consecutive commands follow one another.
- **DRAFT.** Each beat takes one activation beat and one MSB-plane beat in the same cycle; the
  operand is ``m = {h, 1}`` and the term enters the accumulator shifted by 3:
  result ``draft_gemv(h, a) = 8 * sum a*m``. The LSB stream is never read.
- **FULL.** Each beat takes two cycles with the activation beat held: an MSB cycle (MSB beat,
  operand ``m``, shifted term) then an LSB cycle (LSB beat, operand ``c = {~l[3], l[2:0]}``,
  unshifted term; the activation beat transfers here). The accumulator thus nests the draft
  term of every weight inside the full result: ``8*sum(a*m) + sum(a*c) = sum(a*q) =
  full_gemv(q, a)``. FULL has half the MAC rate of DRAFT and reads twice the weight bytes.
- **Result (double-buffered).** A capture marker issued with the last term travels beside the
  PEs' pipeline; when the term has landed it copies every accumulator into the result register,
  which ``o_result`` offers in one beat (``lanes x rows`` accumulators) and holds until the
  transfer, while the next command's beats already stream into the accumulators. The last
  beat of a command waits only while an earlier marker is in flight or the result register is
  still full, so a result is never overwritten; with the consumer always ready a command costs
  ``max(beats, pipeline + 3)`` cycles in a run of commands (:func:`gemv_cycles`).
- **Fan-out.** The operand selects of a row (5 per weight), its PEs' nesting shift and their
  valid and clear inputs hang on that row's own copies of the phase and first registers
  (``hw/held_copy.py``: copies synthesis does not merge), and each PE registers valid and clear
  in its pipeline, so no control net spans the whole array: a net into every PE is a load ABC
  does not see behind the PE modules' ports (1.7 ns in Nangate 45 for one valid net into 256
  PEs).
- **Streams.** Every port is an ``amaranth.lib.stream`` (transfer on ``valid & ready``). The
  array's ``ready`` outputs depend on the ``valid`` inputs (it takes an activation beat only
  together with its weight beat), never the other way round; ``o_result.valid`` never waits for
  ``ready``. Any producer or consumer may stall at any time.

A GEMV of ``n`` outputs is ``ceil(n / rows)`` commands (the driver replays the activations per
row tile); :func:`gemv_cycles` is the analytical cycle count that the benches check.

The INT8 baseline (``hw/mac_array.py``) is the same class with another weight port and an 8-bit
operand; everything else (control, masking, PEs, adder trees, accumulators) is shared code.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import DEFAULT
from ..errors import UserError
from ..sim.numerics.gemv import ACC_BITS
from ..sim.numerics.slices import OPERAND_BITS
from ..spec.timing import MODES, gemv_cycles  # noqa: F401  (the array's cycle formula)
from .layouts import (ACT, OPERAND, Mode, Plane, act_layout, command_layout, k_shape, plane_layout,
                      result_layout)
from .held_copy import held_copy
from .lsb_augment import LsbAugment, check_positive
from .pe import DEFAULT_MAX_K, DEFAULT_PIPELINE, PE, PIPELINE_CHOICES, check_acc, check_pipeline
from .tops import Param, Top
from .verilog import leaf

MAX_ROWS = MAX_COLS = 256
MAX_LANES = 16          # batch 1-16 (SPEC section 4)


def _ceil_div(a, b):
    return -(-a // b)


def check_size(name, value, most):
    check_positive(name, value)
    if value > most:
        raise UserError(f"{name} must be at most {most}, got {value}")
    return value


class GemvArrayBase(wiring.Component):
    """Shared generator of the bit-sliced array and the INT8 baseline (not a top by itself).

    Subclasses provide ``OPERAND_BITS``, ``_weight_members()``, ``_command_has_mode`` and
    ``_weights(m, running, act_valid, mode, restart, may_end)`` (``may_end``: the cycle that
    completes a beat may fire), returning ``(pe_valid, beat_done, operands, shifts)`` and,
    optionally, per-row copies of ``pe_valid`` for the PEs.
    """

    OPERAND_BITS = OPERAND_BITS
    _command_has_mode = True

    # Written into the generated interface documentation (hw/interface_doc.py).
    INTERFACE_NOTES = (
        "Command: a transfer on `i_cmd` clears the accumulators and starts a GEMV of `k` inputs. "
        "The array then takes ceil(k / {cols}) activation beats on `i_act`, each together with "
        "its weight beat (`i_msb` in DRAFT; `i_msb` then `i_lsb`, two cycles, in FULL; "
        "`i_weight` on the INT8 baseline, whose command has no `mode`) and offers all lanes x rows "
        "accumulators in one `o_result` beat, held until its transfer. The next command is taken "
        "in the cycle of the last beat and its beats stream while the result waits (double-"
        "buffered result register); a last beat waits while the previous result is not yet taken. "
        "Columns at or beyond `k` on the last beat are masked to zero, so a partial "
        "beat may be padded with anything; `k = 0` takes no beat and returns zeros.",
        "Ranges: the `k` field carries 0 .. 2**width - 1 (its width is that of max_k = {max_k}). "
        "A `k` above max_k is computed like any other and cannot overflow: the {acc_bits}-bit "
        "accumulators hold 2**width - 1 products of |a*q| <= 2**14. Every int8 activation is "
        "computed as its two's-complement value, -128 included (the quantizer of SPEC section 2 "
        "never makes -128; the hardware does not saturate it). No input value is refused and no "
        "flag is raised; `elmoe3d.sim.numerics.gemv.array_gemv` is the golden definition (DRAFT "
        "8*sum(a*m) with m = 2*(q >> 4) + 1; FULL and INT8 sum(a*q)).",
        "Cycles without stalls: `elmoe3d.hw.pe_array.gemv_cycles` (a run of commands: the first "
        "accept, max(beats, pipeline + 3) per command, the last one's drain, capture and result "
        "transfer).",
    )

    def __init__(self, *, rows, cols, lanes=1, acc_bits=ACC_BITS, max_k=DEFAULT_MAX_K,
                 pipeline=DEFAULT_PIPELINE):
        self.rows = check_size("rows", rows, MAX_ROWS)
        self.cols = check_size("cols", cols, MAX_COLS)
        self.lanes = check_size("lanes", lanes, MAX_LANES)
        self.acc_bits, self.max_k = check_acc(acc_bits, max_k)
        self.pipeline = check_pipeline(pipeline)
        self.cmd_layout = command_layout(self.max_k, with_mode=self._command_has_mode)
        self.act_layout = act_layout(self.cols, self.lanes)
        self.result_layout = result_layout(self.rows, self.lanes, self.acc_bits)
        super().__init__({
            "i_cmd": In(stream.Signature(self.cmd_layout)),
            "i_act": In(stream.Signature(self.act_layout)),
            **self._weight_members(),
            "o_result": Out(stream.Signature(self.result_layout)),
        })

    def cycles(self, k, mode, n=None):
        """:func:`gemv_cycles` for this array's shape."""
        return gemv_cycles(k=k, cols=self.cols, mode=mode, pipeline=self.pipeline, n=n, rows=self.rows)

    def elaborate(self, platform):
        m = Module()
        cmd, act, res = self.i_cmd, self.i_act, self.o_result
        p = self.pipeline

        remaining = Signal(k_shape(self.max_k), name="remaining")   # inputs still to come
        mode = Signal(Mode, name="mode")
        running = Signal(name="running")          # a command with beats left
        zero = Signal(name="zero_pending")        # a k = 0 command whose (zero) result is due
        first = Signal(name="first")              # the next term is the command's first: restart
        last_beat = Signal(name="last_beat")
        m.d.comb += last_beat.eq(remaining <= self.cols)

        # -- the result double buffer: one capture marker per command, issued with its last
        # term (or, k = 0, alone), travels beside the PEs' pipeline and copies the accumulators
        # into the result register when that term has landed; the next command's terms stream
        # meanwhile. A marker is issued only when none is in flight and the result register is
        # empty, so a capture never overwrites a result that was not taken.
        cap = [Signal(name=f"cap_{i}") for i in range(p + 1)]
        cap_zero = [Signal(name=f"cap_zero_{i}") for i in range(p + 1)]
        res_full = Signal(name="res_full")
        res_reg = Signal(self.result_layout, name="res_reg", reset_less=True)
        slot_ok = Signal(name="slot_ok")
        m.d.comb += slot_ok.eq(~Cat(*cap).any() & ~res_full)

        may_end = Signal(name="may_end")          # a beat may complete (the last one only into a free slot)
        m.d.comb += may_end.eq(~last_beat | slot_ok)
        restart = Signal(name="restart")          # a command accepted (the phase starts at MSB)
        # operands[row]: that row's operand vector; shift[row]: its nesting shift (or None)
        # row_valid[row] (optional fifth item): pe_valid computed from that row's own registers
        pe_valid, beat_done, operands, shift, *rest = self._weights(m, running, act.valid, mode, restart, may_end)
        row_valid = rest[0] if rest else [pe_valid] * self.rows
        m.d.comb += act.ready.eq(beat_done)
        # valid and clear into the PEs, one copy per row: one net into every PE (rows x lanes
        # ports, a load ABC does not see behind the PE modules' ports) took 1.7 ns in Nangate 45
        row_clear = []
        for r in range(self.rows):
            first_r = held_copy(m, pe_valid | restart, restart, f"first_{r}")
            clear_r = Signal(name=f"clear_{r}")
            m.d.comb += clear_r.eq(first_r & row_valid[r])
            row_clear.append(clear_r)

        # Columns at or beyond k on the last beat read as zero activations: one keep bit per
        # column, shared by every lane, and one masked activation vector per lane, shared by the
        # lane's PEs (whole vectors: an array of 64 x 64 x 16 is 16 statements, not 65 536).
        keep = Signal(self.cols, name="keep")
        m.d.comb += keep.eq(Cat(Const(1, 1), *[remaining > col for col in range(1, self.cols)]))
        keep_bits = Cat(*[keep[col].replicate(ACT.width) for col in range(self.cols)])
        masked = []
        for lane in range(self.lanes):
            a = Signal(data.ArrayLayout(ACT, self.cols), name=f"act_{lane}")
            m.d.comb += a.eq(act.payload[lane].as_value() & keep_bits)
            masked.append(a)

        # every PE of the array is one Verilog module (hw/verilog.leaf)
        pe_key = dict(t=self.cols, o=self.OPERAND_BITS, a=self.acc_bits, k=self.max_k, p=self.pipeline)

        def build_pe():
            return PE(terms=self.cols, operand_bits=self.OPERAND_BITS, acc_bits=self.acc_bits,
                      max_k=self.max_k, pipeline=self.pipeline)

        accs = Signal(self.result_layout, name="accs")
        for r in range(self.rows):
            for lane in range(self.lanes):
                ports = {"i_act": masked[lane], "i_operand": operands[r], "i_valid": row_valid[r],
                         "i_clear": row_clear[r], "o_acc": accs[lane][r]}
                if shift is not None:
                    ports["i_shift"] = shift[r]
                leaf(m, f"pe_{r}_{lane}", build_pe, "pe", pe_key, ports)

        # -- commands: taken when idle or in the cycle of the last beat (or of a k = 0 marker)
        zfire = Signal(name="zero_fire")
        m.d.comb += zfire.eq(zero & slot_ok)
        finish = Signal(name="finish")            # this cycle issues the command's capture marker
        m.d.comb += finish.eq((beat_done & last_beat) | zfire)
        m.d.comb += [cmd.ready.eq((~running & ~zero) | finish), restart.eq(cmd.valid & cmd.ready)]
        with m.If(pe_valid):
            m.d.sync += first.eq(0)
        with m.If(beat_done):
            m.d.sync += remaining.eq(remaining - self.cols)
            with m.If(last_beat):
                m.d.sync += running.eq(0)
        with m.If(zfire):
            m.d.sync += zero.eq(0)
        with m.If(restart):
            m.d.sync += [remaining.eq(cmd.payload.k), first.eq(1), running.eq(cmd.payload.k != 0),
                         zero.eq(cmd.payload.k == 0)]
            if self._command_has_mode:
                m.d.sync += mode.eq(cmd.payload.mode)

        # -- capture markers and the result register
        m.d.sync += [cap[0].eq(finish), cap_zero[0].eq(zfire)]
        m.d.sync += [cap[i].eq(cap[i - 1]) for i in range(1, p + 1)]
        m.d.sync += [cap_zero[i].eq(cap_zero[i - 1]) for i in range(1, p + 1)]
        m.d.comb += [res.valid.eq(res_full), res.payload.eq(res_reg)]
        with m.If(cap[p]):
            m.d.sync += [res_full.eq(1), res_reg.eq(Mux(cap_zero[p], 0, accs.as_value()))]
        with m.Elif(res.ready):
            m.d.sync += res_full.eq(0)
        return m


class PEArray(GemvArrayBase):
    """Bit-sliced PE array (see the module docstring for the micro-architecture).

    Parameters
    ----------
    rows : int
        Output channels computed in parallel (1 .. 256).
    cols : int
        Inputs per activation beat (1 .. 256).
    lanes : int
        Batch lanes: tokens sharing each weight beat (1 .. 16, default 1).
    acc_bits : int
        Signed accumulator width (default 32).
    max_k : int
        Longest GEMV the command may ask for; ``acc_bits`` must hold it (default 4096).
    pipeline : int
        Register stages of each PE between its inputs and its accumulator, 0 .. 3 (default 3:
        input registers, a cut half-way down the adder tree, the nested term; see ``hw/pe.py``).

    Members
    -------
    i_cmd : In(stream.Signature(StructLayout{k, mode}))
    i_act : In(stream.Signature(ArrayLayout(ArrayLayout(signed(8), cols), lanes)))
    i_msb : In(stream.Signature(ArrayLayout(ArrayLayout(unsigned(4), cols), rows)))
    i_lsb : In(stream.Signature(ArrayLayout(ArrayLayout(unsigned(4), cols), rows)))
    o_result : Out(stream.Signature(ArrayLayout(ArrayLayout(signed(acc_bits), rows), lanes)))

    Raises
    ------
    UserError
        A size out of range, a pipeline outside 0..3, or an accumulator that can overflow
        for ``max_k`` inputs.
    """

    def _weight_members(self):
        plane = plane_layout(self.rows, self.cols)
        return {"i_msb": In(stream.Signature(plane)), "i_lsb": In(stream.Signature(plane))}

    def _weights(self, m, running, act_valid, mode, restart, may_end):
        msb, lsb = self.i_msb, self.i_lsb
        phase = Signal(Plane, name="phase")
        full = mode == Mode.FULL
        msb_fire = Signal(name="msb_fire")
        lsb_fire = Signal(name="lsb_fire")
        m.d.comb += [   # the cycle that completes a beat (DRAFT: MSB, FULL: LSB) waits for may_end
            msb_fire.eq(running & act_valid & msb.valid & (phase == Plane.MSB) & (full | may_end)),
            lsb_fire.eq(running & act_valid & lsb.valid & (phase == Plane.LSB) & may_end),
            msb.ready.eq(msb_fire),
            lsb.ready.eq(lsb_fire),
        ]
        with m.If(msb_fire & full):
            m.d.sync += phase.eq(Plane.LSB)
        with m.If(lsb_fire | restart):
            m.d.sync += phase.eq(Plane.MSB)

        operands, shifts, row_valid = [], [], []
        # the terms of msb_fire / lsb_fire that do not depend on the phase, shared by the rows
        msb_go = Signal(name="msb_go")
        lsb_go = Signal(name="lsb_go")
        m.d.comb += [msb_go.eq(running & act_valid & msb.valid & (full | may_end)),
                     lsb_go.eq(running & act_valid & lsb.valid & may_end)]
        phase_en = (msb_fire & full) | lsb_fire | restart
        phase_next = Mux(lsb_fire | restart, Plane.MSB, Plane.LSB)
        for r in range(self.rows):
            # One copy of the phase register per row: the operand selects of a row (5 per
            # weight), its PEs' shift and its valid bit hang on their own flop instead of one
            # array-wide net (held_copy: plain copies are merged into one by synthesis).
            phase_r = held_copy(m, phase_en, phase_next, f"phase_{r}")
            valid_r = Signal(name=f"valid_{r}")       # = msb_fire | lsb_fire, from this row's phase
            m.d.comb += valid_r.eq(Mux(phase_r == Plane.MSB, msb_go, lsb_go))
            row_valid.append(valid_r)
            operand = Signal(data.ArrayLayout(OPERAND, self.cols), name=f"operand_{r}")
            shift = Signal(name=f"shift_{r}")
            leaf(m, f"aug_{r}", lambda: LsbAugment(width=self.cols), "lsbaugment", dict(w=self.cols),
                 {"i_msb": msb.payload[r], "i_lsb": lsb.payload[r], "i_plane": phase_r,
                  "o_operand": operand, "o_shift": shift})
            operands.append(operand)
            shifts.append(shift)
        pe_valid = msb_fire | lsb_fire
        beat_done = Mux(full, lsb_fire, msb_fire)
        return pe_valid, beat_done, operands, shifts, row_valid


def _array_macs(*, rows, cols, lanes, **_):
    return {"draft": rows * cols * lanes, "full": rows * cols * lanes / 2}


# Defaults: the accelerator's one configuration (elmoe3d.config.DEFAULT.array), except ``lanes``:
# a stand-alone array is generated with one lane unless asked (the core takes the config's 16).
ARRAY_PARAMS = (
    Param("rows", int, DEFAULT.array.rows, "output channels in parallel"),
    Param("cols", int, DEFAULT.array.cols, "inputs per activation beat"),
    Param("lanes", int, 1, "batch lanes sharing each weight beat"),
    Param("acc_bits", int, DEFAULT.array.acc_bits, "signed accumulator width"),
    Param("max_k", int, DEFAULT_MAX_K, "longest dot product (overflow rule)"),
    Param("pipeline", int, DEFAULT.array.pipeline, "register stages of each PE before its accumulator",
          PIPELINE_CHOICES),
)

GENERATE_TOPS = [
    Top(name="pe_array", help="bit-sliced PE array, DRAFT (MSB planes) and FULL (MSB + LSB) GEMV",
        build=lambda **p: PEArray(**p), params=ARRAY_PARAMS, macs_per_cycle=_array_macs),
]
