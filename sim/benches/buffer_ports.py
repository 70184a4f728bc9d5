"""Back-door access to the executor's token buffers from a unit bench (``exec_gemv``, ``exec_vector``).

A bench top exposes each buffer ``name`` the unit reads or writes through the buffers' own ports
(``hw/executor/ports.py``): ``<name>_wr__we__<t>``/``waddr__<t>``/``wdata__<t>`` per bank ``t`` and
``<name>_rd__raddr``/``ren``/``rdata__<t>``. These coroutines drive them on falling edges, one word
per cycle, while the unit under test is idle.
"""

import numpy as np
from cocotb.triggers import FallingEdge, ReadOnly

from .streams import pack, unpack


async def write_buffer(dut, word_layout, banks, name, words):
    """Write ``words`` (banks x n x W) into words ``0 .. n-1`` of every bank of buffer ``name``."""
    for a in range(words.shape[1]):
        await FallingEdge(dut.clk)
        for t in range(banks):
            getattr(dut, f"{name}_wr__we__{t}").value = 1
            getattr(dut, f"{name}_wr__waddr__{t}").value = a
            getattr(dut, f"{name}_wr__wdata__{t}").value = pack(word_layout, [int(v) for v in words[t, a]])
    await FallingEdge(dut.clk)
    for t in range(banks):
        getattr(dut, f"{name}_wr__we__{t}").value = 0


async def read_buffer(dut, word_layout, banks, width, name, n):
    """Words ``0 .. n-1`` of every bank of buffer ``name``, as an int64 array (banks x n x width)."""
    out = np.zeros((banks, n, width), np.int64)
    for a in range(n):
        await FallingEdge(dut.clk)
        getattr(dut, f"{name}_rd__raddr").value = a
        getattr(dut, f"{name}_rd__ren").value = 1
        await FallingEdge(dut.clk)
        getattr(dut, f"{name}_rd__ren").value = 0
        await ReadOnly()
        for t in range(banks):
            v = unpack(word_layout, int(getattr(dut, f"{name}_rd__rdata__{t}").value))
            out[t, a] = [int(v[i]) for i in range(width)]
    return out
