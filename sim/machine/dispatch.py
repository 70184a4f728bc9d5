"""Stream sequencing, the one definition: decode, local commands, expert loops, where a stream stops.

The command processor (``hw/command_processor.py``) and the ISS (``sim/machine/iss.py``) both follow
:class:`DispatchModel`: the RTL bench holds the processor to it beat for beat, and the ISS *is*
a :class:`DispatchModel` whose executor runs the commands on the memory images. So a stream
stops at the same word, with the same :class:`~elmoe3d.spec.isa.Status`, at every level.

Rules (each checked when the word is reached, after the commands before it have run):

- a word is decoded when it is executed or captured into a loop body: an unknown opcode gives
  ``OPCODE``; an enum field out of range or reserved bits set give ``FIELD``
  (:meth:`~elmoe3d.spec.isa.InstructionSet.decode`'s refusals), at that word's index;
- ``NOP`` and ``SETR`` run locally; ``HALT`` ends the stream (the next word starts a new one at
  index 0); every other command is dispatched to the executor, which answers a Status;
- ``EXPERTS body`` / ``SHARED index body``: ``body`` 0 gives ``LOOP`` at the header; the next
  ``body`` words are captured one by one (``EXPERTS``, ``SHARED`` or ``HALT`` among them:
  ``LOOP`` at that word); then, at the header's index: no successful ``ROUTE`` since the last
  ``LOADX`` gives ``LOOP``, ``N_EXPERTS`` never set gives ``REGISTER``, a shared expert id
  ``N_EXPERTS + index`` that does not fit the cache key gives ``KEY`` (:func:`loop_experts`);
- a stream that ends without ``HALT`` (or inside a loop body) is not an error to the core: it
  waits for more words. The ISS reports it as :class:`StreamEnd` at the index of the word it
  waits for.

Indices saturate at ``2**INDEX_BITS - 1`` (the status port's width).
"""

from ...errors import UserError
from ...spec.isa import InstructionSet, Op, Reg, Status

INDEX_BITS = 16         # instruction index in a stream, as the status port reports it (saturating)
LOOP_OPS = (Op.EXPERTS, Op.SHARED)
LOCAL_OPS = (Op.NOP, Op.SETR)


def sat_index(i):
    """An instruction index as the status port holds it (saturating at ``2**INDEX_BITS - 1``)."""
    return min(i, (1 << INDEX_BITS) - 1)


class MachineError(UserError):
    """A command stream stopped: ``status`` (a :class:`~elmoe3d.spec.isa.Status`) at instruction
    ``index``, the code and index the core reports in ``o_status``. The message names the
    instruction: ``instruction 12 (gemv): ... [ORDER]``."""

    def __init__(self, status, index, op=None, detail=""):
        self.status, self.index, self.op = Status(status), index, op
        where = f"instruction {index}" + (f" ({op.name.lower()})" if op is not None else "")
        super().__init__(f"{where}: {detail or self.status.name.lower()} [{self.status.name}]")


class StreamEnd(MachineError):
    """The stream ran out of words before ``HALT`` (or inside a loop body): the core would wait
    for more at instruction ``index``; ``status`` is ``NONE``."""

    def __init__(self, index, detail="the stream ends without halt"):
        super().__init__(Status.NONE, index, None, detail)


def loop_experts(op, fields, mask, regs, n_cache):
    """The runs of one loop, ``[(expert, shared), ...]``, or :class:`MachineError` (``REGISTER``
    or ``KEY``; the caller checks ``LOOP`` first).

    ``mask``: the chosen-expert mask of the last ROUTE (bit e = some token chose expert e);
    ``regs``: {Reg: value}; ``n_cache``: experts the cache key can name (``config.cache.n_experts``).
    ``EXPERTS`` runs every expert e with bit e set and ``e < N_EXPERTS``, ascending; ``SHARED``
    runs expert ``N_EXPERTS + index`` once.
    """
    if Reg.N_EXPERTS not in regs:
        raise MachineError(Status.REGISTER, fields["_index"], op, "register N_EXPERTS not set")
    n_exp = regs[Reg.N_EXPERTS]
    if op == Op.EXPERTS:
        return [(e, 0) for e in range(n_cache) if mask >> e & 1 and e < n_exp]
    e = n_exp + fields["index"]
    if e >= n_cache:
        raise MachineError(Status.KEY, fields["_index"], op,
                           f"shared expert {e} (N_EXPERTS + {fields['index']}) does not fit the cache key "
                           f"(at most {n_cache - 1})")
    return [(e, 1)]


class DispatchModel:
    """The command processor's behaviour at its ports, and the ISS's sequencer.

    ``feed(words)`` processes words as the RTL takes them (several streams back to back: a HALT
    ends one, the next starts at index 0; ``one_stream=True`` stops at the first HALT).
    ``executor(op, word, expert, shared, in_loop, index)`` answers each dispatched command with
    ``(Status, mask)`` (``mask``: the chosen-expert mask after a ROUTE, ignored otherwise) or
    raises :class:`MachineError`. ``delay`` is the executor's answer delay (cycles from a
    dispatch transfer to its ``i_done.valid``) for the cycle count with no stalls.

    After ``feed``: ``dispatches`` (tuples ``(op, word, expert, shared, in_loop, index)``),
    ``regs`` ({Reg: value}), ``halts`` (``(commands, cycles)`` per HALT), ``error`` and
    ``index`` (where it stopped; ``exc`` the :class:`MachineError`), ``busy`` (a stream in
    progress: it waits for more words), ``commands`` and ``cycles`` of the stream in progress.
    Subclasses count work in :meth:`counted` (NOP, SETR, loop headers, HALT).
    """

    def __init__(self, config, executor, delay=0):
        self.config, self.isa = config, InstructionSet(config)
        self.executor, self.delay = executor, delay
        self.regs, self.dispatches, self.halts = {}, [], []
        self.route_ok, self.mask = False, 0
        self.error, self.index, self.exc = Status.NONE, 0, None
        self.commands = self.cycles = 0
        self.busy = False

    def counted(self, op, fields, index):
        """Hook: a command the processor runs itself (NOP, SETR, a loop header, HALT) completed."""

    def decode(self, word, i):
        """``(op, fields)`` of the word at index ``i``, or :class:`MachineError` OPCODE / FIELD."""
        if (word & 0xF) not in {int(o) for o in Op}:
            raise MachineError(Status.OPCODE, i, None, f"unknown opcode {word & 0xF:#x}")
        try:
            return self.isa.decode(word, i)
        except UserError as exc:
            raise MachineError(Status.FIELD, i, Op(word & 0xF), str(exc).split(": ", 1)[-1]) from None

    def _local(self, op, f, i):
        """NOP and SETR: executed by the processor itself (one cycle)."""
        if op == Op.SETR:
            self.regs[Reg(f["reg"])] = f["value"]
        self.commands += 1
        self.cycles += 1
        self.counted(op, f, i)

    def _dispatch(self, op, word, i, expert=0, shared=0, in_loop=0):
        self.dispatches.append((int(op), word, expert, shared, in_loop, i))
        status, mask = self.executor(op, word, expert, shared, in_loop, i)
        self.cycles += 2 + self.delay
        if status != Status.NONE:
            raise MachineError(Status(status), i, op, "the executor refused it")
        self.commands += 1
        if op == Op.ROUTE:
            self.route_ok, self.mask = True, mask
        elif op == Op.LOADX:
            self.route_ok = False

    def _one(self, op, f, word, i, **ctx):
        if op in LOCAL_OPS:
            self._local(op, f, i)
        else:
            self._dispatch(op, word, i, **ctx)

    def feed(self, words, one_stream=False):
        """Process ``words`` until they run out, the stream stops on an error or (``one_stream``)
        the first HALT."""
        words, pos = list(words), 0
        self.in_body = False
        try:
            while pos < len(words) and self.error == Status.NONE:
                if not self.busy:
                    self.busy, self.commands, self.cycles, self.index = True, 0, 0, 0
                i, word = self.index, words[pos]
                op, f = self.decode(word, i)
                if op == Op.HALT:
                    self.commands += 1
                    self.cycles += 1
                    self.counted(op, f, i)
                    self.halts.append((self.commands, self.cycles))
                    self.busy, self.route_ok, self.index = False, False, 0
                    pos += 1
                    if one_stream:
                        self.index = i
                        return self
                    continue
                if op not in LOOP_OPS:
                    self._one(op, f, word, i)
                    self.index, pos = sat_index(i + 1), pos + 1
                    continue
                if f["body"] == 0:
                    raise MachineError(Status.LOOP, i, op, "a loop body of 0 commands")
                body = []
                for j in range(f["body"]):
                    if pos + 1 + j >= len(words):
                        self.index, self.in_body = sat_index(i + 1 + j), True
                        return self          # the RTL waits for the rest of the body
                    bi = sat_index(i + 1 + j)
                    bop, bf = self.decode(words[pos + 1 + j], bi)
                    if bop in LOOP_OPS or bop == Op.HALT:
                        raise MachineError(Status.LOOP, bi, bop, "not allowed in a loop body")
                    body.append((bop, bf, words[pos + 1 + j], bi))
                if not self.route_ok:
                    raise MachineError(Status.LOOP, i, op, "no ROUTE before the expert loop (since the last LOADX)")
                runs = loop_experts(op, {**f, "_index": i}, self.mask, self.regs, self.config.cache.n_experts)
                self.commands += 1
                self.cycles += 2 + f["body"]
                self.counted(op, f, i)
                for e, shared in runs:
                    for bop, bf, bword, bi in body:
                        self._one(bop, bf, bword, bi, expert=e, shared=shared, in_loop=1)
                self.index, pos = sat_index(i + 1 + f["body"]), pos + 1 + f["body"]
        except MachineError as exc:
            self.error, self.index, self.exc = exc.status, exc.index, exc
            self.busy = False
        return self
