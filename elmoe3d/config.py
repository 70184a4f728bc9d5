"""The accelerator's one configuration: every generator parameter, command field width and memory
map derives from it (SPEC section 8).

Neutral on purpose: no Amaranth and no numpy import, so the RTL generators (``hw/``), the golden
model (``sim/``), the firmware (``firmware/``) and the performance model read it alike. Each part is
a frozen dataclass validated in ``__post_init__`` with a one-line :class:`~elmoe3d.errors.UserError`
that names the field.
"""

import json
from dataclasses import asdict, dataclass, fields

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
    len_bits : int      width of a request's length field (1..33); 0 (the default) derives it
                        from ``lines``: ``log2(lines) + 1`` bits, so one request can read the whole
                        space (a 1 MiB plane is one request whatever the line size)
    clock_mhz : float   interface clock, for bandwidth in bytes per second
    """

    channels: int = 4
    width: int = 64
    burst: int = 16
    outstanding: int = 0
    latency: int = 24
    lines: int = 1 << 20
    len_bits: int = 0
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
        check_int("len_bits", self.len_bits, 0, 33)
        if self.len_bits == 0:                    # derived: a length of `lines` fits
            object.__setattr__(self, "len_bits", self.lines.bit_length())
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




def _bits(n):
    """Width of an unsigned field that holds 0 .. n."""
    return max(1, int(n).bit_length())


@dataclass(frozen=True)
class ArrayConfig:
    """The bit-sliced PE array (``hw/pe_array.py``).

    Parameters
    ----------
    rows : int       output channels per tile, 1..256
    cols : int       inputs per beat, 1..256 (``rows * cols`` even: a beat is whole bytes)
    lanes : int      tokens that share a weight beat, 1..16 (batch 1-16, SPEC section 4)
    acc_bits : int   signed accumulator width, 16..48
    pipeline : int   PE pipeline stages, 0..3 (``hw/pe.py``; 3 closes timing)
    """

    rows: int = 16
    cols: int = 16
    lanes: int = 16
    acc_bits: int = 32
    pipeline: int = 3

    def __post_init__(self):
        check_int("array.rows", self.rows, 1, 256)
        check_int("array.cols", self.cols, 1, 256)
        check_int("array.lanes", self.lanes, 1, 16)
        check_int("array.acc_bits", self.acc_bits, 16, 48)
        check_int("array.pipeline", self.pipeline, 0, 3)
        if (self.rows * self.cols) % 2:
            raise UserError(f"array.rows * array.cols must be even (a beat of 4-bit slices is whole bytes), "
                            f"got {self.rows} x {self.cols}")

    @property
    def beat_bytes(self):
        """Bytes of one plane beat: a ``rows x cols`` tile of 4-bit slices."""
        return self.rows * self.cols // 2


@dataclass(frozen=True)
class OffchipConfig:
    """The off-chip memory interface: the slower tier that holds every plane.

    Parameters
    ----------
    width : int        bits per cycle (one *line*), a multiple of 8 in 8..4096
    latency : int      cycles from a request to its first line, 1..4096
    lines : int        address space in lines, a power of two, 2..2**40
    len_bits : int     width of a request's length field, 1..40
    clock_mhz : float  interface clock (bandwidth = line bytes x clock)
    """

    width: int = 128
    latency: int = 100
    lines: int = 1 << 24
    len_bits: int = 24
    clock_mhz: float = 1000.0

    def __post_init__(self):
        check_int("offchip.width", self.width, 8, 4096)
        if self.width % 8:
            raise UserError(f"offchip.width must be a multiple of 8, got {self.width}")
        check_int("offchip.latency", self.latency, 1, 4096)
        check_int("offchip.lines", self.lines, 2, 1 << 40)
        _pow2("offchip.lines", self.lines)
        check_int("offchip.len_bits", self.len_bits, 1, 40)
        if not (isinstance(self.clock_mhz, (int, float)) and 0 < self.clock_mhz < 1e5):
            raise UserError(f"offchip.clock_mhz must be in (0, 1e5), got {self.clock_mhz!r}")

    @property
    def line_bytes(self):
        return self.width // 8

    @property
    def addr_bits(self):
        return max(1, (self.lines - 1).bit_length())


@dataclass(frozen=True)
class BufferConfig:
    """On-chip buffers of one token group (activations, hidden vector, output accumulators).

    Parameters
    ----------
    tokens : int     tokens in a group, 1..16
    d_max : int      largest model width the activation and output buffers hold, 1..131071
    f_max : int      largest expert width the hidden buffer holds, 1..131071
    """

    tokens: int = 16
    d_max: int = 1024
    f_max: int = 4096

    def __post_init__(self):
        check_int("buffers.tokens", self.tokens, 1, 16)
        check_int("buffers.d_max", self.d_max, 1, 131071)
        check_int("buffers.f_max", self.f_max, 1, 131071)

    @property
    def act_bytes(self):
        """Activation buffer: INT8 tokens of the group."""
        return self.tokens * self.d_max

    @property
    def hidden_bytes(self):
        """Hidden buffer: INT8 SwiGLU outputs of the group."""
        return self.tokens * self.f_max

    @property
    def out_bytes(self):
        """Output accumulators (5 bytes: 37-bit sums, SPEC 7's combine) of the group."""
        return self.tokens * self.d_max * 5


@dataclass(frozen=True)
class VectorConfig:
    """The vector unit (requantization, SiLU table, router top-k and gate weights, combine).

    Parameters
    ----------
    width : int             elements per cycle, 1..256
    lookup_cycles : int     cycles of an expert-cache lookup, 1..16
    """

    width: int = 16
    lookup_cycles: int = 2

    def __post_init__(self):
        check_int("vector.width", self.width, 1, 256)
        check_int("vector.lookup_cycles", self.lookup_cycles, 1, 16)


@dataclass(frozen=True)
class AccelConfig:
    """The whole accelerator (SPEC section 8): every generator parameter, command field width and
    memory map derives from this one object. Written as JSON beside generated Verilog.

    Parameters
    ----------
    name : str              preset name (reports)
    array, cache, hb, offchip, buffers, vector : the parts above
    word_bits : int         command word width, 32..128, a multiple of 32
    body_bits : int         width of an expert loop's body length, 2..8
    """

    name: str = "custom"
    array: ArrayConfig = ArrayConfig()
    cache: CacheConfig = CacheConfig()
    hb: HBConfig = HBConfig()
    offchip: OffchipConfig = OffchipConfig()
    buffers: BufferConfig = BufferConfig()
    vector: VectorConfig = VectorConfig()
    word_bits: int = 64
    body_bits: int = 5

    def __post_init__(self):
        for part, cls in (("array", ArrayConfig), ("cache", CacheConfig), ("hb", HBConfig),
                          ("offchip", OffchipConfig), ("buffers", BufferConfig), ("vector", VectorConfig)):
            if not isinstance(getattr(self, part), cls):
                raise UserError(f"{part} must be a {cls.__name__}, got {type(getattr(self, part)).__name__}")
        check_int("word_bits", self.word_bits, 32, 128)
        if self.word_bits % 32:
            raise UserError(f"word_bits must be a multiple of 32, got {self.word_bits}")
        check_int("body_bits", self.body_bits, 2, 8)
        beat = self.array.beat_bytes
        for tier, line in (("hb", self.hb.line_bytes), ("offchip", self.offchip.line_bytes)):
            if beat % line:
                raise UserError(f"{tier} line of {line} bytes must divide the array's beat of {beat} bytes "
                                f"(array.rows x array.cols / 2), so whole lines feed whole beats")
        if self.buffers.tokens < self.array.lanes:
            raise UserError(f"buffers.tokens ({self.buffers.tokens}) must be at least array.lanes ({self.array.lanes})")

    @property
    def line_bytes(self):
        """The compiler's image line: the larger of the two tiers' lines (a multiple of both)."""
        return max(self.hb.line_bytes, self.offchip.line_bytes)

    def check_model(self, *, n_layers, n_experts, n_shared, d_model, d_ffn, top_k, plane_bytes):
        """Refuse a model this accelerator cannot run (one line naming the field)."""
        if n_layers > self.cache.n_layers:
            raise UserError(f"cache.layer_bits = {self.cache.layer_bits} holds {self.cache.n_layers} layers; "
                            f"the model has {n_layers}")
        if n_experts + n_shared > self.cache.n_experts:
            raise UserError(f"cache.expert_bits = {self.cache.expert_bits} holds {self.cache.n_experts} experts; "
                            f"the model has {n_experts} routed + {n_shared} shared")
        if top_k > n_experts:
            raise UserError(f"top_k = {top_k} exceeds the model's {n_experts} experts")
        if d_model > self.buffers.d_max:
            raise UserError(f"buffers.d_max = {self.buffers.d_max} is below the model width {d_model}")
        if d_ffn > self.buffers.f_max:
            raise UserError(f"buffers.f_max = {self.buffers.f_max} is below the expert width {d_ffn}")
        if max(d_model, d_ffn) > (1 << (self.array.acc_bits - 15)) - 1:
            raise UserError(f"array.acc_bits = {self.array.acc_bits} cannot hold a dot product of "
                            f"{max(d_model, d_ffn)} inputs")
        for tier, cfg in (("hb", self.hb), ("offchip", self.offchip)):
            lines = -(-plane_bytes // cfg.line_bytes)
            if lines >= 1 << cfg.len_bits:
                raise UserError(f"{tier}.len_bits = {cfg.len_bits} cannot express one plane of {lines} lines "
                                f"in a request; use at least {_bits(lines)}")
        hb_need = self.cache.entries * -(-plane_bytes // self.line_bytes) * (self.line_bytes // self.hb.line_bytes)
        if hb_need > self.hb.lines:
            raise UserError(f"hb.lines = {self.hb.lines} cannot hold {self.cache.entries} cached planes "
                            f"({hb_need} lines)")

    def to_dict(self):
        d = asdict(self)
        d["hb"]["slots"] = self.hb.slots
        d["derived"] = {"beat_bytes": self.array.beat_bytes, "hb_line_bytes": self.hb.line_bytes,
                        "offchip_line_bytes": self.offchip.line_bytes, "image_line_bytes": self.line_bytes,
                        "hb_peak_bytes_per_cycle": self.hb.line_bytes,
                        "offchip_peak_bytes_per_cycle": self.offchip.line_bytes}
        return d

    def to_json(self):
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, data):
        """Inverse of :meth:`to_dict` (derived keys ignored); unknown keys are refused."""
        if not isinstance(data, dict):
            raise UserError(f"an accelerator configuration must be a JSON object, got {type(data).__name__}")
        parts = {"array": ArrayConfig, "cache": CacheConfig, "hb": HBConfig, "offchip": OffchipConfig,
                 "buffers": BufferConfig, "vector": VectorConfig}
        kw = {}
        for key, value in data.items():
            if key == "derived":
                continue
            if key in parts:
                if not isinstance(value, dict):
                    raise UserError(f"configuration field {key} must be an object")
                value = {k: v for k, v in value.items() if not (key == "hb" and k == "slots")}
                names = {f.name for f in fields(parts[key])}
                bad = sorted(set(value) - names)
                if bad:
                    raise UserError(f"configuration field {key} has unknown keys: {', '.join(bad)}")
                kw[key] = parts[key](**value)
            elif key in ("name", "word_bits", "body_bits"):
                kw[key] = value
            else:
                raise UserError(f"unknown configuration field {key!r}")
        return cls(**kw)


PRESETS = {
    # Small enough for exhaustive RTL benches: a 4x4 array, 4 cache slots, tiny memories.
    "tiny": AccelConfig(name="tiny", array=ArrayConfig(rows=4, cols=4, lanes=4),
                        cache=CacheConfig(entries=4, layer_bits=2, expert_bits=4),
                        hb=HBConfig(channels=2, width=16, burst=4, outstanding=4, latency=6, lines=1 << 14, len_bits=12),
                        offchip=OffchipConfig(width=32, latency=20, lines=1 << 20, len_bits=16),
                        buffers=BufferConfig(tokens=16, d_max=256, f_max=512), vector=VectorConfig(width=4)),
    # The shipped model (d 128, F 256, 8 experts, 4 layers) at batch 16 in one lane group, on an
    # 8x8 array: small enough to simulate the whole core in Verilator (`elmoe3d bench-core`).
    "small": AccelConfig(name="small", array=ArrayConfig(rows=8, cols=8, lanes=16),
                         cache=CacheConfig(entries=16, layer_bits=2, expert_bits=4),
                         hb=HBConfig(channels=4, width=64, burst=8, latency=24, lines=1 << 16),
                         offchip=OffchipConfig(width=64, latency=100, lines=1 << 20, len_bits=20),
                         buffers=BufferConfig(tokens=16, d_max=256, f_max=512), vector=VectorConfig(width=8)),
    # The default: sized for the shipped model (d 128, F 256, 8 experts, 4 layers) and its study.
    "default": AccelConfig(name="default"),
    # Mixtral-8x7B-class, as in the ELMoE-3D paper's design point: 64x64 array, a wide HB stack.
    "mixtral": AccelConfig(name="mixtral", array=ArrayConfig(rows=64, cols=64, lanes=16),
                           cache=CacheConfig(entries=32, layer_bits=5, expert_bits=4, plane_bytes=3 * 4096 * 14336 // 2),
                           hb=HBConfig(channels=16, width=512, burst=16, latency=40, lines=1 << 22, len_bits=20),
                           offchip=OffchipConfig(width=512, latency=150, lines=1 << 28, len_bits=24),
                           buffers=BufferConfig(tokens=16, d_max=4096, f_max=14336), vector=VectorConfig(width=64)),
}
DEFAULT = PRESETS["default"]


def preset(name):
    """A named preset (one-line error for an unknown name)."""
    if name not in PRESETS:
        raise UserError(f"unknown accelerator preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]


def load_config(path):
    """An :class:`AccelConfig` from a JSON file written by :meth:`AccelConfig.to_json`."""
    from pathlib import Path
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise UserError(f"cannot read configuration {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UserError(f"configuration {path} is not valid JSON: {exc}") from None
    try:
        return AccelConfig.from_dict(data)
    except TypeError as exc:
        raise UserError(f"configuration {path}: {exc}") from None
