"""cocotb drivers and monitors for ``amaranth.lib.stream`` ports, with random idle and backpressure.

The one set every bench uses: :class:`StreamSource` drives a DUT input stream (random idle
cycles), :class:`StreamSink` takes a DUT output stream (random not-ready cycles) and
:class:`StreamMonitor` watches an output stream whose ``ready`` something else drives.
Amaranth names a stream port's signals ``<port>__payload``, ``<port>__valid`` and
``<port>__ready`` (an element of an array of streams ``<port>__<index>__...``: pass
``"o_cmd__2"``). Payloads are integers; struct payloads go through ``amaranth.lib.data``:
:func:`pack` (``layout.const(value)``) and :func:`unpack` (``data.Const(layout, bits)``).

Every driver works on the same per-cycle schedule, which is race-free on both Verilator and
Icarus: at the falling edge it sets its outputs for the coming rising edge, then waits for
``ReadOnly`` (the design's combinational ``ready``/``valid`` have settled) and decides whether
the coming rising edge transfers a beat (``valid & ready``).

The stream contract on the DUT's outputs (:class:`HoldCheck`, built into the sink and the
monitor): once ``valid`` is high, ``valid`` and the payload hold until the transfer. A breach
raises ``AssertionError`` naming the port, the cycle and both payloads. :class:`StreamSource`
keeps the same contract on the DUT's inputs.

Transfers are reported by cycle number: ``cycle_of()`` (any callable; :func:`cycle_counter`
gives the simulation time in clock periods) is called in the ``ReadOnly`` phase of the cycle
whose rising edge transfers the beat. ``on_transfer(payload, cycle)`` callbacks run there too,
in the same phase as the DUT's outputs were sampled.
"""

import random

from amaranth.lib import data
from cocotb.triggers import FallingEdge, ReadOnly
from cocotb.utils import get_sim_time


def pack(layout, value):
    """The integer of ``value`` (a dict / list / int as ``layout.const`` takes) in ``layout``."""
    return layout.const(value).as_value().value


def unpack(layout, bits):
    """A view (``data.Const``) of the integer ``bits`` in ``layout``: fields by name or index."""
    return data.Const(layout, bits)


def cycle_counter(period_ns):
    """A ``cycle_of`` callable: simulation time in clock periods of ``period_ns``."""
    return lambda: int(get_sim_time(unit="ns")) // period_ns


def _read(sig):
    """Integer value of a signal, or its string when it holds X/Z (so a message can show it)."""
    v = sig.value
    return int(v) if v.is_resolvable else str(v)


class HoldCheck:
    """The output-stream contract, checked once per cycle in ``ReadOnly``: a beat offered and not
    taken (``valid & ~ready``) must be offered again, with the same payload, in the next cycle."""

    def __init__(self, name, valid, payload):
        self.name, self.valid, self.payload = name, valid, payload
        self.held = None         # (cycle, payload) of a beat offered and not taken
        self.checked = 0         # cycles on which a held beat was checked

    def clear(self):
        self.held = None

    def sample(self, ready, cycle=None):
        """Check this cycle against the last; ``ready``: does this cycle's edge take a beat.
        Returns ``(valid, payload)`` of this cycle (payload ``None`` when valid is low)."""
        valid = _read(self.valid)
        if not isinstance(valid, int):
            raise AssertionError(f"{self.name}: valid is {valid} at cycle {cycle}")
        payload = _read(self.payload) if valid else None
        if valid and not isinstance(payload, int):
            raise AssertionError(f"{self.name}: payload {payload} with valid high at cycle {cycle}")
        if self.held is not None:
            since, before = self.held
            self.checked += 1
            if not valid:
                raise AssertionError(f"{self.name}: valid dropped at cycle {cycle} before the transfer of "
                                     f"payload {before:#x} (offered since cycle {since})")
            if payload != before:
                raise AssertionError(f"{self.name}: payload changed before the transfer at cycle {cycle}: "
                                     f"{before:#x} (offered since cycle {since}) -> {payload:#x}")
        if valid and not ready:
            self.held = self.held if self.held is not None else (cycle, payload)
        else:
            self.held = None
        return valid, payload


class StreamSource:
    """Sends beats (integers) on the DUT input ``<port>``, idling randomly between beats.

    ``idle`` is the probability of an idle cycle (valid low) before each beat. :meth:`send` sends
    a list; :meth:`serve` sends whatever ``pull(cycle)`` offers, until :meth:`stop`.
    """

    def __init__(self, dut, port, clk, *, idle=0.0, rng=None):
        self.payload = getattr(dut, f"{port}__payload")
        self.valid = getattr(dut, f"{port}__valid")
        self.ready = getattr(dut, f"{port}__ready")
        self.clk, self.idle, self.rng = clk, idle, rng or random.Random(0)
        self.name = port
        self.sent = 0
        self.transfer_cycles = []        # cycles (cycle_of) of each transfer
        self.running = False

    def reset(self):
        self.valid.value = 0
        self.payload.value = 0

    def stop(self):
        """End :meth:`serve` at its next idle cycle (a beat offered is still sent)."""
        self.running = False

    def _idle(self):
        return self.idle and self.rng.random() < self.idle

    async def _offer(self, beat, cycle_of, on_transfer):
        """Drive ``beat`` from the next falling edge until its transfer."""
        await FallingEdge(self.clk)
        self.payload.value = beat
        self.valid.value = 1
        while True:
            await ReadOnly()
            if int(self.ready.value):
                break
            await FallingEdge(self.clk)
        self.sent += 1
        cycle = cycle_of() if cycle_of is not None else None
        if cycle_of is not None:
            self.transfer_cycles.append(cycle)
        if on_transfer is not None:
            on_transfer(beat, cycle)

    async def send(self, beats, cycle_of=None, on_transfer=None):
        """Send every beat of ``beats``; returns when the last one has transferred."""
        for beat in beats:
            while self._idle():
                await FallingEdge(self.clk)
                self.valid.value = 0
            await self._offer(beat, cycle_of, on_transfer)
        await FallingEdge(self.clk)
        self.valid.value = 0

    async def serve(self, pull, cycle_of=None, on_transfer=None):
        """Until :meth:`stop`: each cycle with no beat offered, ``pull(cycle)`` gives the next beat
        (or ``None``: an idle cycle); an idle draw (``idle``) skips the cycle without pulling."""
        self.running = True
        while self.running:
            await FallingEdge(self.clk)
            beat = None if self._idle() else pull(cycle_of() if cycle_of is not None else None)
            if beat is None:
                self.valid.value = 0
                continue
            self.payload.value = beat
            self.valid.value = 1
            while True:
                await ReadOnly()
                if int(self.ready.value):
                    break
                await FallingEdge(self.clk)
            self.sent += 1
            cycle = cycle_of() if cycle_of is not None else None
            if cycle_of is not None:
                self.transfer_cycles.append(cycle)
            if on_transfer is not None:
                on_transfer(beat, cycle)
        self.valid.value = 0


class StreamSink:
    """Receives beats from the DUT output ``<port>``, raising ``ready`` with probability ``1 - stall``.

    Checks the stream contract of the design (:class:`HoldCheck`). :meth:`recv` takes a known
    number of beats; :meth:`serve` takes beats until :meth:`stop`, calling ``on_beat``.
    """

    def __init__(self, dut, port, clk, *, stall=0.0, rng=None):
        self.payload = getattr(dut, f"{port}__payload")
        self.valid = getattr(dut, f"{port}__valid")
        self.ready = getattr(dut, f"{port}__ready")
        self.clk, self.stall, self.rng = clk, stall, rng or random.Random(1)
        self.name = port
        self.hold = HoldCheck(port, self.valid, self.payload)
        self.transfer_cycles = []
        self.running = False

    def reset(self):
        self.ready.value = 0
        self.hold.clear()

    def stop(self):
        self.running = False

    async def _cycle(self, cycle_of):
        """One cycle: drive ready, sample, check; returns the payload taken or ``None``."""
        await FallingEdge(self.clk)
        ready = not (self.stall and self.rng.random() < self.stall)
        self.ready.value = int(ready)
        await ReadOnly()
        cycle = cycle_of() if cycle_of is not None else None
        valid, payload = self.hold.sample(ready, cycle)
        if valid and ready:
            if cycle_of is not None:
                self.transfer_cycles.append(cycle)
            return payload, cycle
        return None, cycle

    async def recv(self, count, cycle_of=None):
        """Receive ``count`` beats (a list of integers)."""
        beats = []
        while len(beats) < count:
            payload, _ = await self._cycle(cycle_of)
            if payload is not None:
                beats.append(payload)
        await FallingEdge(self.clk)
        self.ready.value = 0
        self.hold.clear()
        return beats

    async def serve(self, on_beat, cycle_of=None):
        """Until :meth:`stop`: take beats, calling ``on_beat(payload, cycle)`` for each."""
        self.running = True
        while self.running:
            payload, cycle = await self._cycle(cycle_of)
            if payload is not None:
                on_beat(payload, cycle)
        await FallingEdge(self.clk)
        self.ready.value = 0
        self.hold.clear()


class StreamMonitor:
    """Passive watcher of a DUT output ``<port>`` whose ``ready`` another driver sets: checks the
    stream contract every cycle (:class:`HoldCheck`) and reports transfers to ``on_beat``."""

    def __init__(self, dut, port, clk, *, on_beat=None):
        self.payload = getattr(dut, f"{port}__payload")
        self.valid = getattr(dut, f"{port}__valid")
        self.ready = getattr(dut, f"{port}__ready")
        self.clk, self.on_beat, self.name = clk, on_beat, port
        self.hold = HoldCheck(port, self.valid, self.payload)
        self.running = False
        self.transfers = 0

    def stop(self):
        self.running = False

    async def run(self, cycle_of=None):
        self.running = True
        self.hold.clear()
        while self.running:
            await FallingEdge(self.clk)
            await ReadOnly()
            ready = _read(self.ready)
            cycle = cycle_of() if cycle_of is not None else None
            valid, payload = self.hold.sample(ready == 1, cycle)
            if valid and ready == 1:
                self.transfers += 1
                if self.on_beat is not None:
                    self.on_beat(payload, cycle)
