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

Timing model
------------
A channel returns the first beat of a burst ``latency`` cycles after taking its command, then one
beat per cycle. With at least ``latency / burst + 1`` bursts in flight the channels never idle,
so a back-to-back stream of plane reads of ``L`` lines takes ``L + latency + pipeline`` cycles; the
peak bandwidth is ``line_bytes`` per cycle.
"""

from dataclasses import asdict, dataclass

from ..errors import UserError, check_int


def _pow2(name, value):
    if value & (value - 1):
        raise UserError(f"{name} must be a power of two, got {value}")


# Cycles a request spends in the interface besides its lines and the channel latency (request
# register to command, beat write, availability, read): checked against the RTL by the benches.
PIPELINE_CYCLES = 3


@dataclass(frozen=True)
class HBConfig:
    """HB interface parameters (golden model and RTL).

    Parameters
    ----------
    channels : int      HB channels, 1..16
    width : int         bits per beat per channel, a multiple of 8 in 8..512
    burst : int         lines per burst (a power of two, 1..256)
    outstanding : int   bursts in flight (a power of two, 2..64); 0 derives it from ``latency``
    latency : int       cycles from a channel command to its first beat (1..1024)
    lines : int         address space in lines (a power of two, 2..2**32)
    len_bits : int      width of a request's length field (1..32)
    clock_mhz : float   interface clock, for bandwidth in bytes per second
    """

    channels: int = 4
    width: int = 64
    burst: int = 16
    outstanding: int = 0
    latency: int = 24
    lines: int = 1 << 20
    len_bits: int = 16
    clock_mhz: float = 1000.0

    def __post_init__(self):
        check_int("channels", self.channels, 1, 16)
        check_int("width", self.width, 8, 512)
        if self.width % 8:
            raise UserError(f"width must be a multiple of 8, got {self.width}")
        check_int("burst", self.burst, 1, 256)
        _pow2("burst", self.burst)
        check_int("latency", self.latency, 1, 1024)
        check_int("outstanding", self.outstanding, 0, 64)
        if self.outstanding:
            check_int("outstanding", self.outstanding, 2, 64)
            _pow2("outstanding", self.outstanding)
        check_int("lines", self.lines, 2, 1 << 32)
        _pow2("lines", self.lines)
        check_int("len_bits", self.len_bits, 1, 32)
        if not self.clock_mhz > 0:
            raise UserError(f"clock_mhz must be > 0, got {self.clock_mhz}")
        if self.slots > 64:
            raise UserError(f"latency {self.latency} with burst {self.burst} needs {self.slots} bursts in flight; "
                            f"at most 64: use a longer burst")

    @property
    def slots(self):
        """Bursts in flight: ``outstanding``, or the power of two that covers ``latency``."""
        if self.outstanding:
            return self.outstanding
        need = -(-(self.latency + PIPELINE_CYCLES) // self.burst) + 1
        return max(2, 1 << (need - 1).bit_length())

    @property
    def full_rate(self):
        """Whether ``slots`` bursts in flight cover the latency, so the channels never idle."""
        return self.slots >= -(-(self.latency + PIPELINE_CYCLES) // self.burst) + 1

    @property
    def beat_bytes(self):
        return self.width // 8

    @property
    def line_bytes(self):
        return self.channels * self.beat_bytes

    @property
    def addr_bits(self):
        return max(1, (self.lines - 1).bit_length())

    @property
    def tag_bits(self):
        return max(1, (self.slots - 1).bit_length())

    @property
    def burst_bits(self):
        """Width of a burst length (1..burst)."""
        return self.burst.bit_length()

    @property
    def peak_bytes_per_cycle(self):
        return self.line_bytes

    @property
    def peak_gbps(self):
        """Peak bandwidth in GB/s (1e9 bytes per second)."""
        return self.line_bytes * self.clock_mhz * 1e6 / 1e9

    def to_dict(self):
        d = asdict(self)
        d["slots"] = self.slots
        return d


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


def stream_cycles(config, lengths):
    """Analytical cycles to read back-to-back requests of ``lengths`` lines at full rate.

    Counted from the cycle the first request is taken to the cycle the last line leaves,
    inclusive, with channels of fixed ``latency`` that answer in order and never stall.
    """
    return sum(lengths) + config.latency + PIPELINE_CYCLES


def plane_read_time_ns(config, plane_bytes):
    """Time to read one plane alone (latency included), in ns."""
    return stream_cycles(config, [plane_lines(config, plane_bytes)]) * 1e3 / config.clock_mhz


def achieved_fraction(config, lengths):
    """Achieved / peak bandwidth of the analytical model for back-to-back requests."""
    return sum(lengths) / stream_cycles(config, lengths)
