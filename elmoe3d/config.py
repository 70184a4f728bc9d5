"""The accelerator's one configuration: every generator parameter, command field width and memory
map derives from it (SPEC section 8).

Neutral on purpose: no Amaranth and no numpy import, so the RTL generators (``hw/``), the golden
model (``sim/``), the firmware (``firmware/``) and the performance model read it alike. Each part is
a frozen dataclass validated in ``__post_init__`` with a one-line :class:`~elmoe3d.errors.UserError`
that names the field.
"""

from dataclasses import asdict, dataclass

from .errors import UserError, check_int

POLICIES = ("lru", "lfu", "score")


@dataclass(frozen=True)
class CacheConfig:
    """Parameters shared by the golden model and the RTL.

    Parameters
    ----------
    entries : int       slots (planes the cache holds), 2..4096 (the RTL takes up to 64)
    policy : str        ``lru``, ``lfu`` or ``score``
    layer_bits : int    width of the layer field of a key (1..8)
    expert_bits : int   width of the expert field of a key (1..10)
    count_bits : int    LFU counter width (2..16)
    score_bits : int    router-score width; scores are unsigned fractions ``score / 2**score_bits``
    decay_shift : int   score policy decay: ``v -= v >> decay_shift`` per touch (1..8)
    plane_bytes : int   bytes in one plane (statistics only)
    """

    entries: int = 16
    policy: str = "lru"
    layer_bits: int = 4
    expert_bits: int = 6
    count_bits: int = 8
    score_bits: int = 8
    decay_shift: int = 6
    plane_bytes: int = 1 << 20

    def __post_init__(self):
        check_int("entries", self.entries, 2, 4096)
        if self.policy not in POLICIES:
            raise UserError(f"policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        check_int("layer_bits", self.layer_bits, 1, 8)
        check_int("expert_bits", self.expert_bits, 1, 10)
        check_int("count_bits", self.count_bits, 2, 16)
        check_int("score_bits", self.score_bits, 1, 16)
        check_int("decay_shift", self.decay_shift, 1, 8)
        check_int("plane_bytes", self.plane_bytes, 1, 1 << 40)

    @property
    def slot_bits(self):
        """Width of a slot number."""
        return max(1, (self.entries - 1).bit_length())

    @property
    def value_bits(self):
        """Width of the score policy's per-slot value: ``decay_shift`` fraction bits, and room for
        the steady state of a plane touched every time, ``score * 2**decay_shift``."""
        return self.score_bits + 2 * self.decay_shift

    @property
    def n_layers(self):
        return 1 << self.layer_bits

    @property
    def n_experts(self):
        return 1 << self.expert_bits

    def to_dict(self):
        return asdict(self)


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


