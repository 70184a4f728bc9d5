"""cocotb drivers for ``amaranth.lib.stream`` ports, with random idle and backpressure.

Amaranth names a stream port's signals ``<port>__payload``, ``<port>__valid`` and
``<port>__ready``. Every driver works on the same per-cycle schedule, which is race-free on
both Verilator and Icarus: at the falling edge it sets its outputs for the coming rising edge,
then waits for ``ReadOnly`` (the design's combinational ``ready``/``valid`` have settled) and
decides whether the coming rising edge transfers a beat (``valid & ready``).

:class:`StreamSource` never lowers ``valid`` or changes the payload before the transfer (the
stream contract); :class:`StreamSink` checks that the design keeps that contract too.
"""

import random

from cocotb.triggers import FallingEdge, ReadOnly


class StreamSource:
    """Sends queued beats (integers) on ``<port>``, idling randomly between beats.

    ``idle`` is the probability of an idle cycle (valid low) before each beat.
    """

    def __init__(self, dut, port, clk, *, idle=0.0, rng=None):
        self.payload = getattr(dut, f"{port}__payload")
        self.valid = getattr(dut, f"{port}__valid")
        self.ready = getattr(dut, f"{port}__ready")
        self.clk, self.idle, self.rng = clk, idle, rng or random.Random(0)
        self.name = port
        self.sent = 0
        self.transfer_cycles = []        # sim cycles (falling-edge count) of each transfer

    def reset(self):
        self.valid.value = 0
        self.payload.value = 0

    async def send(self, beats, cycle_of=None):
        """Send every beat of ``beats``; returns when the last one has transferred."""
        for beat in beats:
            while self.idle and self.rng.random() < self.idle:
                await FallingEdge(self.clk)
                self.valid.value = 0
            await FallingEdge(self.clk)
            self.payload.value = beat
            self.valid.value = 1
            while True:
                await ReadOnly()
                if int(self.ready.value):
                    break
                await FallingEdge(self.clk)
            self.sent += 1
            if cycle_of is not None:
                self.transfer_cycles.append(cycle_of())
        await FallingEdge(self.clk)
        self.valid.value = 0


class StreamSink:
    """Receives beats from ``<port>``, raising ``ready`` with probability ``1 - stall``.

    Checks the stream contract of the design: once ``valid`` is up it stays up, with the same
    payload, until the transfer.
    """

    def __init__(self, dut, port, clk, *, stall=0.0, rng=None):
        self.payload = getattr(dut, f"{port}__payload")
        self.valid = getattr(dut, f"{port}__valid")
        self.ready = getattr(dut, f"{port}__ready")
        self.clk, self.stall, self.rng = clk, stall, rng or random.Random(1)
        self.name = port
        self.transfer_cycles = []

    def reset(self):
        self.ready.value = 0

    async def recv(self, count, cycle_of=None):
        """Receive ``count`` beats (a list of integers)."""
        beats, held = [], None
        while len(beats) < count:
            await FallingEdge(self.clk)
            ready = not (self.stall and self.rng.random() < self.stall)
            self.ready.value = int(ready)
            await ReadOnly()
            valid = int(self.valid.value)
            payload = int(self.payload.value) if valid else None
            if held is not None:
                assert valid, f"{self.name}: valid dropped before the transfer"
                assert payload == held, f"{self.name}: payload changed before the transfer"
            if valid and ready:
                beats.append(payload)
                held = None
                if cycle_of is not None:
                    self.transfer_cycles.append(cycle_of())
            else:
                held = payload if valid else None
        await FallingEdge(self.clk)
        self.ready.value = 0
        return beats
