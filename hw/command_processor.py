"""Command processor: fetches the core's command stream, decodes it, runs loops and dispatches.

It takes one command word per ``i_word`` transfer (``elmoe3d/spec/isa.py``: opcode in bits ``[3:0]``,
fields upwards from bit 4 at the offsets of :class:`~elmoe3d.spec.isa.InstructionSet`),
executes ``NOP`` and ``SETR`` itself, runs the expert loops (``EXPERTS``, ``SHARED``) from a body
memory and hands every other command to the executor, one at a time, on ``o_exec``; the executor
answers each with one ``i_done`` beat. The golden sequencing is :class:`elmoe3d.sim.machine.dispatch.DispatchModel`
(the ISS runs on it too): what is dispatched, with which expert, where a stream stops and why;
the bench holds the RTL to it beat for beat.

Micro-architecture::

    i_word -> [one-word buffer, index] -> decode (opcode, enum fields, reserved bits)
                 |  NOP, SETR: executed in the cycle the word sits in the buffer (1 per cycle)
                 |  other: o_exec beat -> wait for i_done -> next (the buffer refills meanwhile)
                 |  EXPERTS/SHARED: capture `body` words into the body memory (1 per cycle),
                 |     check (ROUTE since LOADX, N_EXPERTS set, shared key), then replay the body
                 v     from memory once per expert, without refetching i_word
               o_exec {op, word, expert, shared, in_loop, index}

Ports
-----
- ``i_word``: stream of ``word_bits`` (one command per transfer).
- ``o_exec``: stream of :func:`exec_layout` ``{op, word, expert, shared, in_loop, index}``.
- ``i_done``: stream of ``{error: Status}``; ``ready`` only while a dispatched command is owed.
- ``i_experts``: ``2**expert_bits`` bits, the routing table's chosen-expert mask, sampled in
  the cycle of a ROUTE's ``i_done`` transfer.
- ``o_regs`` (:func:`regs_layout`, one field per :class:`~elmoe3d.spec.isa.Reg`), ``o_regs_set``
  (bit ``r`` = register ``r`` written since reset).
- ``o_status`` (:func:`status_layout`): ``busy``, ``halted``, ``error``, ``index``, ``commands``,
  ``cycles``.

Reset clears everything: registers (and ``o_regs_set``), the route flag, counters, status.
"""

import types

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..config import AccelConfig, PRESETS, preset as named_preset
from ..errors import UserError
from ..sim.machine.dispatch import INDEX_BITS
from ..spec.isa import OPCODE_BITS, InstructionSet, Op, Reg, Status, field_widths
from .tops import Param, Top

COUNTER_BITS = 32       # status counters (wrapping)
STATUS_BITS = 4         # width of a Status code
EXECUTOR_OPS = tuple(op for op in Op if op not in (Op.NOP, Op.SETR, Op.EXPERTS, Op.SHARED, Op.HALT))


def _hw_enum(py_enum, width):
    """An ``amaranth.lib.enum`` mirror of a firmware ``IntEnum`` (same names and values), so a
    port field carries the enum's encodings into the interface documentation."""
    def body(ns):
        for member in py_enum:
            ns[member.name] = int(member)
    return types.new_class(py_enum.__name__, (enum.Enum,), {"shape": width}, body)


StatusShape = _hw_enum(Status, STATUS_BITS)
OpShape = _hw_enum(Op, OPCODE_BITS)


def exec_layout(config):
    """A dispatched command: ``op``, the whole ``word``, the loop's ``expert`` (0 outside loops),
    ``shared`` (a SHARED body), ``in_loop`` and the instruction's ``index`` in its stream."""
    return data.StructLayout({"op": OpShape, "word": config.word_bits, "expert": config.cache.expert_bits + 1,
                              "shared": 1, "in_loop": 1, "index": INDEX_BITS})


def done_layout():
    return data.StructLayout({"error": StatusShape})


def regs_layout(config):
    """One field per SETR register (``Reg`` order, lower-case names), each ``value`` bits."""
    width = field_widths(config)["value"]
    return data.StructLayout({r.name.lower(): width for r in Reg})


def status_layout():
    return data.StructLayout({"busy": 1, "halted": 1, "error": StatusShape, "index": INDEX_BITS,
                              "commands": COUNTER_BITS, "cycles": COUNTER_BITS})


# -- the RTL --------------------------------------------------------------------------------------
class CommandProcessor(wiring.Component):
    """Fetch, decode and dispatch of the core's command stream.

    Parameters
    ----------
    config : AccelConfig
        Field widths and offsets (``InstructionSet(config)``), ``word_bits``, ``body_bits`` (the
        body memory holds ``2**body_bits`` words) and ``cache.expert_bits`` (expert ids).

    Members
    -------
    i_word : In(stream.Signature(word_bits))
    o_exec : Out(stream.Signature(exec_layout(config)))
    i_done : In(stream.Signature(done_layout()))
    i_experts : In(2**expert_bits)
    o_regs : Out(regs_layout(config))
    o_regs_set : Out(len(Reg))
    o_status : Out(status_layout())

    Raises
    ------
    UserError
        ``config`` is not an :class:`~elmoe3d.config.AccelConfig`.
    """

    INTERFACE_NOTES = (
        "Commands: `i_word` carries one {word_bits}-bit command per transfer, encoded as "
        "`elmoe3d.spec.isa.InstructionSet` (opcode in bits [3:0], fields upwards from bit 4; "
        "the generated JSON's configuration gives every offset). The word in position i of a "
        "stream has index i (16 bits, saturating at 65535); a HALT ends the stream and the next "
        "word starts a new one at index 0. Registers keep their values across streams.",
        "Local commands: NOP and SETR execute in the processor, one per cycle while words keep "
        "coming (SETR writes `o_regs.<reg>` and sets bit reg of `o_regs_set`); they are not "
        "dispatched. HALT sets `o_status.halted`, clears the ROUTE flag, and `i_word.ready` is "
        "low in the HALT's cycle, so `halted` is high for at least one cycle before the next "
        "stream's first word is taken (which clears it and sets `busy`).",
        "Dispatch: every other command gives one `o_exec` beat: `op`, the whole `word` (the "
        "executor slices its fields), `expert` (the loop's expert id, 0 outside loops), `shared` "
        "(1 in a SHARED body: every token active with weight 2**15), `in_loop` and `index`. The "
        "processor dispatches one command at a time and takes the next word only after the "
        "command's `i_done` beat; `i_done.ready` is high only while a dispatched command is owed. "
        "`i_done.error` NONE means done; any other code stops the stream at that command's index.",
        "Expert mask: `i_experts` (bit e = some token chose expert e) is sampled in the cycle of "
        "each successful ROUTE's `i_done` transfer; a LOADX's done clears the ROUTE flag.",
        "Loops: `EXPERTS body` / `SHARED index body` take the next `body` words (1 .. "
        "2**{body_bits} - 1) into the body memory, one per cycle, then check in one cycle: a "
        "successful ROUTE since the last LOADX (else LOOP), N_EXPERTS set (else REGISTER), and "
        "for SHARED `N_EXPERTS + index < 2**{expert_bits}` (else KEY), all at the loop's index. "
        "EXPERTS replays the body once per expert e with bit e of the sampled mask set and e < "
        "N_EXPERTS, e ascending (none: skipped); SHARED once with expert N_EXPERTS + index and "
        "`shared` = 1. Body words have the indices of their stream positions in every repeat; "
        "NOP and SETR in a body execute locally in each repeat.",
        "Errors (`o_status.error`, codes of `elmoe3d.spec.isa.Status`): OPCODE (unknown "
        "opcode), FIELD (an enum field out of range or reserved bits above the op's last field "
        "set: exactly `InstructionSet.decode`'s refusals), LOOP (body 0; EXPERTS, SHARED or HALT "
        "inside a body, at that word's index; no ROUTE), KEY, REGISTER, or the executor's code. "
        "A word is checked when it is executed or captured, so the commands before it have run "
        "(the ISS stops at the same word with the same code: `elmoe3d.sim.machine.dispatch`). An error is sticky until reset: "
        "`i_word.ready` and `o_exec.valid` stay low and `o_status.index` is the offending "
        "instruction's index.",
        "Incomplete streams: a stream that stops without HALT, or a loop whose body runs past "
        "the words sent so far, simply waits for more words (`busy` stays high, `index` the "
        "awaited word's); the ISS reports both as a StreamEnd at that index. Nothing else waits on the processor.",
        "Status: `busy` from the transfer of a stream's first word to its HALT (or error); "
        "`index` the next word's index while running, the HALT's after a HALT, the offending "
        "one after an error; `commands` the commands completed in the stream (NOP, SETR, loop "
        "headers, every repeat of a body command, HALT; = `Machine.run(...).instructions`), "
        "`cycles` the cycles from the one after the first word's transfer to the HALT's, "
        "inclusive; both restart at each stream's first word and wrap at 2**32.",
        "Timing with no stalls (`DispatchModel.cycles`): NOP, SETR, HALT 1 cycle; a dispatched "
        "command 2 + d (d = cycles from the `o_exec` transfer to `i_done.valid`: the next "
        "dispatch comes in the cycle after the `i_done` transfer, from the prefetched word or "
        "the body memory); a loop 2 + body cycles plus its repeats.",
    )

    def __init__(self, config):
        if not isinstance(config, AccelConfig):
            raise UserError(f"config must be an AccelConfig, got {type(config).__name__}")
        self.config = config
        self.isa = InstructionSet(config)
        self.word_bits, self.body_bits = config.word_bits, config.body_bits
        self.expert_bits = config.cache.expert_bits
        super().__init__({
            "i_word": In(stream.Signature(config.word_bits)),
            "o_exec": Out(stream.Signature(exec_layout(config))),
            "i_done": In(stream.Signature(done_layout())),
            "i_experts": In(config.cache.n_experts),
            "o_regs": Out(regs_layout(config)),
            "o_regs_set": Out(len(Reg)),
            "o_status": Out(status_layout()),
        })

    def _decode(self, m, word, prefix):
        """``(error, op)``: the Status a word's decode raises (NONE if it decodes) and its opcode."""
        err = Signal(StatusShape, name=f"{prefix}_decode_error")
        op = word[:OPCODE_BITS]
        with m.Switch(op):
            for o, specs in self.isa.fields.items():
                with m.Case(int(o)):
                    bad = [word[self.isa.used_bits(o):].any()] if self.isa.used_bits(o) < self.word_bits else []
                    for s in specs:
                        if s.enum is not None:
                            v = word[s.offset:s.offset + s.width]
                            bad.append(~Cat(*(v == int(x) for x in s.enum)).any())
                    if bad:
                        m.d.comb += err.eq(Mux(Cat(*bad).any(), StatusShape.FIELD, StatusShape.NONE))
            with m.Default():
                m.d.comb += err.eq(StatusShape.OPCODE)
        return err, op

    def _field(self, word, op, name):
        s = next(s for s in self.isa.fields[op] if s.name == name)
        return word[s.offset:s.offset + s.width]

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        n_exp = cfg.cache.n_experts
        ex, dn, st = self.o_exec, self.i_done, self.o_status
        idx_max = (1 << INDEX_BITS) - 1

        def sat_add(a, b):
            total = a + b
            return Mux(total > idx_max, idx_max, total)

        # -- fetch buffer (one word) -----------------------------------------------------------
        buf = Signal(self.word_bits, name="fetch_word")
        buf_valid = Signal(name="fetch_valid")
        consume = Signal(name="fetch_consume")        # NOP/SETR/capture/loop header take the word
        taken = Signal(name="fetch_taken")            # the word leaves the buffer (consume or dispatch)
        errored = Signal(name="errored")
        halting = Signal(name="halting")
        fail_code = Signal(StatusShape, name="fail_code")
        fail_index = Signal(INDEX_BITS, name="fail_index")
        fail = Signal(name="fail")
        m.d.comb += self.i_word.ready.eq(~errored & ~fail & ~halting & (~buf_valid | consume))
        with m.If(self.i_word.valid & self.i_word.ready):
            m.d.sync += [buf.eq(self.i_word.payload), buf_valid.eq(1)]
        with m.Elif(taken):
            m.d.sync += buf_valid.eq(0)

        dec_err, dec_op = self._decode(m, buf, "fetch")

        # -- state -----------------------------------------------------------------------------
        regs = Signal(regs_layout(cfg), name="regs")
        regs_set = Signal(len(Reg), name="regs_set")
        m.d.comb += [self.o_regs.eq(regs), self.o_regs_set.eq(regs_set)]
        index = Signal(INDEX_BITS, name="index")              # the buffered word's index
        busy = Signal(name="busy")
        halted = Signal(name="halted")
        error = Signal(StatusShape, name="error")
        where = Signal(INDEX_BITS, name="stop_index")          # HALT's or the offending index
        commands = Signal(COUNTER_BITS, name="commands")
        cycles = Signal(COUNTER_BITS, name="cycles")
        route_ok = Signal(name="route_ok")
        mask = Signal(n_exp, name="expert_mask")
        m.d.comb += [errored.eq(error != StatusShape.NONE),
                     st.busy.eq(busy), st.halted.eq(halted), st.error.eq(error),
                     st.index.eq(Mux(busy, index, where)), st.commands.eq(commands), st.cycles.eq(cycles)]
        count = Signal(name="count_command")
        with m.If(count):
            m.d.sync += commands.eq(commands + 1)
        with m.If(busy):
            m.d.sync += cycles.eq(cycles + 1)
        with m.If(self.i_word.valid & self.i_word.ready & ~busy):
            m.d.sync += [busy.eq(1), halted.eq(0), commands.eq(0), cycles.eq(0)]

        with m.If(fail):
            m.d.sync += [error.eq(fail_code), where.eq(fail_index), busy.eq(0)]

        def local(word, op):
            """NOP/SETR executed here: a register write for SETR, one command counted."""
            m.d.comb += count.eq(1)
            with m.If(op == Op.SETR):
                reg = self._field(word, Op.SETR, "reg")
                value = self._field(word, Op.SETR, "value")
                with m.Switch(reg):
                    for r in Reg:
                        with m.Case(int(r)):
                            m.d.sync += [regs[r.name.lower()].eq(value), regs_set[int(r)].eq(1)]

        # -- loop state and body memory ----------------------------------------------------------
        body_mem = Memory(shape=self.word_bits, depth=1 << self.body_bits, init=[])
        m.submodules.body_mem = body_mem
        wr = body_mem.write_port()
        rd = body_mem.read_port()
        pc = Signal(self.body_bits, name="body_pc")
        pc_next = Signal(self.body_bits, name="body_pc_next")
        m.d.comb += [pc_next.eq(pc), rd.addr.eq(pc_next)]
        m.d.sync += pc.eq(pc_next)
        loop_op = Signal(OPCODE_BITS, name="loop_op")
        loop_body = Signal(self.body_bits, name="loop_body")
        loop_index = Signal(INDEX_BITS, name="loop_index")
        loop_shared_index = Signal(self.expert_bits, name="loop_shared_index")
        in_loop = Signal(name="in_loop")
        shared = Signal(name="shared")
        shared_expert = Signal(self.expert_bits + 1, name="shared_expert")
        remaining = Signal(n_exp, name="experts_remaining")
        lowest = Signal(self.expert_bits + 1, name="experts_lowest")
        for e in reversed(range(n_exp)):
            with m.If(remaining[e]):
                m.d.comb += lowest.eq(e)
        body_index = Signal(INDEX_BITS, name="body_index")
        m.d.comb += body_index.eq(sat_add(loop_index, pc + 1))

        def advance():
            """The body command at ``pc`` is done: next command, next expert, or the loop's end."""
            with m.If(pc != loop_body - 1):
                m.d.comb += pc_next.eq(pc + 1)
                m.next = "REPLAY"
            with m.Else():
                m.d.comb += pc_next.eq(0)
                rest = remaining & (remaining - 1)               # the current expert cleared
                m.d.sync += remaining.eq(rest)
                with m.If(~shared & rest.any()):
                    m.next = "REPLAY"
                with m.Else():
                    m.d.sync += in_loop.eq(0)
                    m.next = "RUN"

        # -- dispatch --------------------------------------------------------------------------
        disp_op = Signal(OPCODE_BITS, name="dispatched_op")
        disp_index = Signal(INDEX_BITS, name="dispatched_index")
        m.d.comb += [ex.payload.shared.eq(in_loop & shared), ex.payload.in_loop.eq(in_loop),
                     ex.payload.expert.eq(Mux(in_loop, Mux(shared, shared_expert, lowest), 0))]

        n_reg = regs.n_experts
        below = Signal(n_exp, name="experts_below_n")
        m.d.comb += below.eq(Cat(*(n_reg > e for e in range(n_exp))))
        n_set = regs_set[int(Reg.N_EXPERTS)]
        key = Signal(len(n_reg) + 1, name="shared_key")
        m.d.comb += key.eq(n_reg + loop_shared_index)

        def dispatch(word, op, at):
            m.d.comb += [ex.valid.eq(1), ex.payload.word.eq(word), ex.payload.op.as_value().eq(op),
                         ex.payload.index.eq(at)]
            with m.If(ex.ready):
                m.d.sync += [disp_op.eq(op), disp_index.eq(at)]
                m.next = "WAIT"

        def stop(code, at):
            m.d.comb += [fail.eq(1), fail_code.eq(code), fail_index.eq(at)]
            m.next = "ERROR"

        is_loop = (dec_op == Op.EXPERTS) | (dec_op == Op.SHARED)
        is_local = (dec_op == Op.NOP) | (dec_op == Op.SETR)
        header_body = Mux(dec_op == Op.SHARED, self._field(buf, Op.SHARED, "body"), self._field(buf, Op.EXPERTS, "body"))

        with m.FSM(name="ctrl"):
            with m.State("RUN"):
                with m.If(buf_valid):
                    with m.If(dec_err != StatusShape.NONE):
                        stop(dec_err, index)
                    with m.Elif(is_local):
                        m.d.comb += [consume.eq(1), taken.eq(1)]
                        local(buf, dec_op)
                        m.d.sync += index.eq(sat_add(index, 1))
                    with m.Elif(dec_op == Op.HALT):
                        m.d.comb += [consume.eq(1), taken.eq(1), halting.eq(1), count.eq(1)]
                        m.d.sync += [halted.eq(1), busy.eq(0), where.eq(index), index.eq(0), route_ok.eq(0)]
                    with m.Elif(is_loop):
                        with m.If(header_body == 0):
                            stop(StatusShape.LOOP, index)
                        with m.Else():
                            m.d.comb += [consume.eq(1), taken.eq(1), pc_next.eq(0)]
                            m.d.sync += [loop_op.eq(dec_op), loop_body.eq(header_body), loop_index.eq(index),
                                         loop_shared_index.eq(self._field(buf, Op.SHARED, "index")),
                                         index.eq(sat_add(index, 1))]
                            m.next = "CAPTURE"
                    with m.Else():
                        with m.If(ex.ready):
                            m.d.comb += taken.eq(1)
                            m.d.sync += index.eq(sat_add(index, 1))
                        dispatch(buf, dec_op, index)
            with m.State("CAPTURE"):
                # The body words, one per cycle, into the body memory at pc (checked as they come).
                with m.If(buf_valid):
                    with m.If(dec_err != StatusShape.NONE):
                        stop(dec_err, index)
                    with m.Elif(is_loop | (dec_op == Op.HALT)):
                        stop(StatusShape.LOOP, index)
                    with m.Else():
                        m.d.comb += [consume.eq(1), taken.eq(1),
                                     wr.en.eq(1), wr.addr.eq(pc), wr.data.eq(buf)]
                        m.d.sync += index.eq(sat_add(index, 1))
                        with m.If(pc == loop_body - 1):
                            m.d.comb += pc_next.eq(0)
                            m.next = "LOOP"
                        with m.Else():
                            m.d.comb += pc_next.eq(pc + 1)
            with m.State("LOOP"):
                # One cycle of checks, in the ISS's order, then the first repeat (or none).
                with m.If(~route_ok):
                    stop(StatusShape.LOOP, loop_index)
                with m.Elif(~n_set):
                    stop(StatusShape.REGISTER, loop_index)
                with m.Elif(loop_op == Op.SHARED):
                    with m.If(key >= n_exp):
                        stop(StatusShape.KEY, loop_index)
                    with m.Else():
                        m.d.comb += count.eq(1)
                        m.d.sync += [shared.eq(1), shared_expert.eq(key), in_loop.eq(1)]
                        m.next = "REPLAY"
                with m.Else():
                    m.d.comb += count.eq(1)
                    chosen = mask & below
                    m.d.sync += [shared.eq(0), remaining.eq(chosen)]
                    with m.If(chosen.any()):
                        m.d.sync += in_loop.eq(1)
                        m.next = "REPLAY"
                    with m.Else():
                        m.next = "RUN"
            with m.State("REPLAY"):
                # rd.data is the body word at pc (its address was pc_next a cycle ago).
                word = rd.data
                op = word[:OPCODE_BITS]
                with m.If((op == Op.NOP) | (op == Op.SETR)):
                    local(word, op)
                    advance()
                with m.Else():
                    dispatch(word, op, body_index)
            with m.State("WAIT"):
                m.d.comb += dn.ready.eq(1)
                with m.If(dn.valid):
                    with m.If(dn.payload.error != StatusShape.NONE):
                        stop(dn.payload.error, disp_index)
                    with m.Else():
                        m.d.comb += count.eq(1)
                        with m.If(disp_op == Op.ROUTE):
                            m.d.sync += [route_ok.eq(1), mask.eq(self.i_experts)]
                        with m.If(disp_op == Op.LOADX):
                            m.d.sync += route_ok.eq(0)
                        with m.If(in_loop):
                            advance()
                        with m.Else():
                            m.next = "RUN"
            with m.State("ERROR"):
                pass            # sticky until reset: nothing is taken or dispatched
        return m


def _build(preset="default"):
    return CommandProcessor(named_preset(preset))


GENERATE_TOPS = [
    Top(name="command_processor",
        help="core command processor: fetch, decode, SETR registers, expert loops from a body memory, dispatch",
        build=_build,
        params=(Param("preset", str, "default", "accelerator configuration preset", choices=tuple(PRESETS)),)),
]
