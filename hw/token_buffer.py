"""On-chip buffer of one token group, banked by token: one ``lib.memory`` bank per token.

The core keeps every per-token vector (activations, hidden vector, projection accumulators,
layer-output accumulators, router logits) in a :class:`TokenBuffer`. Bank ``t`` holds token
``t``'s vector as ``depth`` words of ``width`` elements (word ``a`` = elements ``a*width ..
a*width + width - 1``, element 0 at the least significant bits).

Banking by token is what lets the PE array's lanes read an arbitrary subset of the group in one
cycle: every bank reads the same word address and lane ``j`` picks the bank of its token (an
expert's tokens are any subset of the group), and a PE-array result beat (all lanes of one row
tile) is written in one cycle, lane ``j`` into its token's bank.

Ports (plain signals, not streams: the executor schedules every access)
----------------------------------------------------------------------
- ``raddr`` (word address), ``ren``: every bank reads word ``raddr`` when ``ren`` is high; the
  words appear on ``rdata[t]`` one cycle later and hold while ``ren`` is low (synchronous read
  with enable, the usual SRAM macro behaviour).
- ``we[t]``, ``waddr[t]``, ``wdata[t]``: bank ``t`` writes ``wdata[t]`` at ``waddr[t]`` when
  ``we[t]`` is high. A read of the word being written in the same cycle returns the old word
  (no transparency: the executor never needs it).

Each bank is a :class:`Bank` (one memory and its two ports), written into Verilog once per
distinct ``(depth, bits)`` and instantiated per token (``hw/verilog.leaf``).
"""

from amaranth.hdl import Module, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..errors import check_int
from .layouts import ArrayOf
from .verilog import leaf


class Bank(wiring.Component):
    """One bank: ``depth`` words of ``bits`` bits, a synchronous read port with enable (old data
    on a same-address write) and a write port."""

    def __init__(self, *, depth, bits):
        self.depth, self.bits = depth, bits
        abits = max(1, (depth - 1).bit_length())
        super().__init__({"raddr": In(abits), "ren": In(1), "rdata": Out(unsigned(bits)),
                          "we": In(1), "waddr": In(abits), "wdata": In(unsigned(bits))})

    def elaborate(self, platform):
        m = Module()
        mem = m.submodules.mem = Memory(shape=unsigned(self.bits), depth=self.depth, init=[])
        rd = mem.read_port()
        wr = mem.write_port()
        m.d.comb += [rd.addr.eq(self.raddr), rd.en.eq(self.ren), self.rdata.eq(rd.data),
                     wr.addr.eq(self.waddr), wr.data.eq(self.wdata), wr.en.eq(self.we)]
        return m


class TokenBuffer(wiring.Component):
    """``tokens`` banks of ``depth`` words, each ``width`` elements of ``elem`` (a shape)."""

    def __init__(self, *, tokens, depth, width, elem):
        self.tokens = check_int("tokens", tokens, 1, 16)
        self.depth = check_int("depth", depth, 1, 1 << 20)
        self.width = check_int("width", width, 1, 256)
        self.word = ArrayOf(elem, width, index="elem")
        abits = max(1, (depth - 1).bit_length())
        super().__init__({
            "raddr": In(abits), "ren": In(1),
            "rdata": Out(self.word).array(tokens),
            "we": In(1).array(tokens), "waddr": In(abits).array(tokens),
            "wdata": In(self.word).array(tokens),
        })

    def elaborate(self, platform):
        m = Module()
        bits = self.word.size
        for t in range(self.tokens):
            leaf(m, f"bank{t}", lambda: Bank(depth=self.depth, bits=bits), "bank", dict(d=self.depth, b=bits),
                 {"raddr": self.raddr, "ren": self.ren, "rdata": self.rdata[t], "we": self.we[t],
                  "waddr": self.waddr[t], "wdata": self.wdata[t]})
        return m
