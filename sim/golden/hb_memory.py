"""Golden model of the hybrid-bonded (HB) memory interface: address map, bursts, bandwidth.

Address map (normative for ``hw/hb_memory.py``)
-----------------------------------------------
The HB stack has ``channels`` independent channels, each moving ``width`` bits (one *beat*) per
cycle. A *line* is one beat of every channel, ``channels * width / 8`` bytes. Byte address ``a``
lives in channel ``(a // beat_bytes) % channels`` at channel row ``a // line_bytes``: consecutive
beats rotate over the channels, so any read of a line or more (an expert plane is thousands of
lines) keeps every channel busy. Requests are therefore in lines: ``(base, length)`` reads lines
``base .. base + length - 1``, i.e. rows ``base ..`` of *every* channel.

A request is split into bursts of at most ``burst`` lines: burst ``i`` reads rows
``base + i*burst .. `` for ``min(burst, remaining)`` beats, and the same command goes to every
channel. ``length == 0`` or ``base + length > lines`` is illegal: the request is dropped and the
error counter counts it.

Timing model (exact for the RTL, checked cycle for cycle by ``tests/test_hb_memory_rtl.py``)
-----------------------------------------------------------------------------------------------
A channel returns the first beat of a burst ``latency`` cycles after taking its command, then one
beat per cycle. The interface takes a request in one cycle (``i_req.ready`` is low while it
splits the previous one), sends one burst command per cycle from the next cycle on, and takes
the next request the cycle after the last burst's command: a request of ``n`` bursts occupies the
splitter ``n + 1`` cycles. A line leaves on ``o_data`` ``RETURN_CYCLES`` (2) cycles after its beat
arrives (beat write, then the in-order read register), at most one line per cycle, and a burst
may be sent only while fewer than ``slots`` bursts are in flight (a slot frees the cycle its last
line leaves). :func:`stream_cycles` runs exactly this recurrence. When the splitter keeps ahead
of the output (every request of at least two lines, ``burst >= 2``, enough slots:
``config.full_rate``) it is ``sum(L) + latency + 3``; at ``burst == 1`` (or for one-line
requests) every request boundary adds the splitter's accept cycle, ``sum(L) + (requests - 1) +
latency + 3`` for back-to-back requests. The peak bandwidth is ``line_bytes`` per cycle.
"""

from dataclasses import asdict, dataclass

from ...config import PIPELINE_CYCLES, HBConfig  # noqa: F401  (re-exported: the golden model's parameters)
from ...errors import UserError


TINY = HBConfig(channels=2, width=16, burst=4, outstanding=4, latency=6, lines=256, len_bits=8)
DEFAULT = HBConfig()


def address_map(config, byte_addr):
    """``(channel, row, byte_in_beat)`` of a byte address."""
    if not 0 <= byte_addr < config.lines * config.line_bytes:
        raise UserError(f"byte address {byte_addr} outside the {config.lines * config.line_bytes}-byte HB space")
    beat = byte_addr // config.beat_bytes
    return beat % config.channels, byte_addr // config.line_bytes, byte_addr % config.beat_bytes


def plane_lines(config, plane_bytes):
    """Lines a plane of ``plane_bytes`` occupies (rounded up to whole lines)."""
    return -(-plane_bytes // config.line_bytes)


def is_legal(config, base, length):
    return length > 0 and base >= 0 and base + length <= config.lines and length < (1 << config.len_bits)


def split_bursts(config, base, length):
    """The ``[(row, beats)]`` commands one request sends to every channel."""
    if not is_legal(config, base, length):
        return []
    out = []
    row, left = base, length
    while left:
        n = min(config.burst, left)
        out.append((row, n))
        row += n
        left -= n
    return out


class HBMemory:
    """Golden counters and data of the HB interface for a sequence of requests.

    ``request(base, length)`` returns the list of lines (each a list of ``channels`` beats, read
    from ``contents(channel, row)``) the output stream must carry, or ``None`` for an illegal one.
    """

    def __init__(self, config=DEFAULT, contents=None):
        self.config = config
        self.contents = contents or (lambda c, r: (r * 0x9E3779B1 + c * 0x85EBCA77) % (1 << config.width))
        self.requests = 0
        self.errors = 0
        self.bursts = 0
        self.beats = [0] * config.channels

    def request(self, base, length):
        cfg = self.config
        if not is_legal(cfg, base, length):
            self.errors += 1
            return None
        self.requests += 1
        bursts = split_bursts(cfg, base, length)
        self.bursts += len(bursts)
        for c in range(cfg.channels):
            self.beats[c] += length
        return [[self.contents(c, row) for c in range(cfg.channels)] for row in range(base, base + length)]

    def counters(self):
        return {"requests": self.requests, "errors": self.errors, "bursts": self.bursts, "beats": list(self.beats)}


# The two parts of PIPELINE_CYCLES (3): request handshake -> first burst command, and a beat's
# arrival -> its line on o_data.
ACCEPT_CYCLES = 1
RETURN_CYCLES = PIPELINE_CYCLES - ACCEPT_CYCLES


def stream_cycles(config, lengths):
    """Cycles to read back-to-back legal requests of ``lengths`` lines, exactly as the RTL does.

    Counted from the cycle the first request is taken to the cycle the last line leaves,
    inclusive, with channels of fixed ``latency`` that answer in order, never stall the command
    streams, and an output that is always ready (see "Timing model" above for the recurrence).
    """
    lengths = [int(n) for n in lengths]
    if not lengths or min(lengths) < 1:
        raise UserError(f"stream_cycles needs request lengths >= 1, got {lengths}")
    accept = 0                # cycle the current request is taken
    out = -1                  # cycle the previous line left
    freed = []                # per burst: cycle its slot frees (its last line leaves)
    for length in lengths:
        cmd = accept + ACCEPT_CYCLES - 1
        left = length
        while left:
            beats = min(config.burst, left)
            k = len(freed)
            cmd = max(cmd + 1, freed[k - config.slots] if k >= config.slots else 0)
            for j in range(beats):
                out = max(out + 1, cmd + config.latency + RETURN_CYCLES + j)
            freed.append(out)
            left -= beats
        accept = cmd + 1
    return out + 1


def plane_read_time_ns(config, plane_bytes):
    """Time to read one plane alone (latency included), in ns."""
    return stream_cycles(config, [plane_lines(config, plane_bytes)]) * 1e3 / config.clock_mhz


def achieved_fraction(config, lengths):
    """Achieved / peak bandwidth of the analytical model for back-to-back requests."""
    return sum(lengths) / stream_cycles(config, lengths)
