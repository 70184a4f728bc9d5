"""The accelerator's command set (SPEC section 8): every instruction, its fields and encoding.

One table, :data:`INSTRUCTIONS`, is the single source of the encoding: the assembler and
disassembler (:mod:`.asm`), the instruction-set simulator (``sim/machine/iss.py``), the compiler
(:mod:`.compiler`) and the generated C header (:mod:`.cheader`) all read it, and field widths
come from the :class:`~elmoe3d.config.AccelConfig` (:func:`field_widths`).

Encoding
--------
A command is one little-endian word of ``config.word_bits`` (64 by default). The opcode sits in
bits ``[3:0]``; the fields follow from bit 4 upwards in the order the table lists them, each
``width`` bits, unsigned. Bits above the last field are reserved and must be zero.

Execution model (what each instruction does is specified in ``sim/machine/iss.py``)
---------------------------------------------------------------------------
A layer pass over a token group is: ``SETR`` the shape and address registers, ``LOADX`` (tokens),
``LOADP`` (router and layer constants), ``ROUTE`` (router GEMV, top-k, gate weights: routing
stays on chip), ``EXPERTS body`` (the next ``body`` commands run once per expert that some token
of the group chose, ascending expert id, with the expert register set and only that expert's
tokens active), ``SHARED index body`` (the same body for a shared expert on every token with
weight 1), ``STOREY`` (layer output) and ``HALT``. The body is ``FETCH`` (cache lookup of a plane:
HB or off-chip, filling HB on a miss), ``LOADM`` (the expert's requantization multipliers),
``GEMV`` per projection, ``SWIGLU`` and ``COMBINE``. The host never sees routing before the layer
ends. Anchors: TVM VTA's LOAD/GEMM/ALU/STORE and Gemmini's config/mvin/compute/mvout.
"""

import enum
from dataclasses import dataclass

from ..errors import UserError

OPCODE_BITS = 4


class Op(enum.IntEnum):
    NOP = 0
    SETR = 1        # register <- value
    LOADX = 2       # tokens (INT8) and token scales of the group, off-chip -> activation buffer
    LOADP = 3       # layer constants (router planes, hidden multiplier, SiLU table) -> parameter buffer
    ROUTE = 4       # router GEMV, top-k (k, choice), gate weights -> routing table and expert list
    EXPERTS = 5     # run the next `body` commands once per chosen expert
    SHARED = 6      # run the next `body` commands once for shared expert `index`
    FETCH = 7       # resolve where the current expert's plane is (cache lookup or peek)
    LOADM = 8       # the current expert's multiplier tables, off-chip -> vector unit
    GEMV = 9        # one projection on the PE array for the active tokens
    SWIGLU = 10     # requantize gate/up, SiLU table, product, requantize -> hidden buffer
    COMBINE = 11    # requantize down, gate weight, accumulate into the output buffer
    STOREY = 12     # output buffer (INT32 per element) -> off-chip
    HALT = 15


class Reg(enum.IntEnum):
    """Registers that ``SETR`` writes (shapes in elements, addresses in lines of the tier)."""
    LAYER = 0       # layer id (cache keys)
    TOKENS = 1      # tokens in the group
    D_MODEL = 2
    D_FFN = 3
    N_EXPERTS = 4   # routed experts
    TOP_K = 5       # the layer's top_k (the most ROUTE may ask for)
    PLANE_LINES = 6  # lines of one expert plane (image lines)
    X_ADDR = 7      # off-chip: input block
    Y_ADDR = 8      # off-chip: output block
    P_ADDR = 9      # off-chip: layer constants block
    E_ADDR = 10     # off-chip: expert 0's block; expert e at E_ADDR + e * E_STRIDE
    E_STRIDE = 11   # lines per expert block
    HB_BASE = 12    # HB: slot 0; slot s at HB_BASE + s * PLANE_LINES


class Plane(enum.IntEnum):
    MSB = 0
    LSB = 1


class Update(enum.IntEnum):
    """``PEEK``: no cache state changes, a miss streams from off-chip without a fill (draft
    passes). ``LOOKUP``: a demand access of the golden cache; a miss fills HB (verify passes)."""
    PEEK = 0
    LOOKUP = 1


class Proj(enum.IntEnum):
    GATE = 0
    UP = 1
    DOWN = 2


class Bits(enum.IntEnum):
    """``DRAFT``: MSB planes with augmentation (``8 * sum a*m``); ``FULL``: MSB + LSB planes."""
    DRAFT = 0
    FULL = 1


class Choice(enum.IntEnum):
    """``TOPK``: best k by router logit; ``CACHED``: best k among experts whose MSB plane is resident."""
    TOPK = 0
    CACHED = 1



# What each command and register does, in one line (the C header and docs/isa.md quote these).
OP_SUMMARY = {
    Op.NOP: "nothing",
    Op.SETR: "register `reg` <- `value`",
    Op.LOADX: "tokens (INT8) and token scales of the group, off-chip -> activation buffer",
    Op.LOADP: "layer constants (router planes, scalars, SiLU table) -> parameter buffer",
    Op.ROUTE: "router GEMV, top-k (`k`, `choice`), gate weights -> routing table and expert list",
    Op.EXPERTS: "run the next `body` commands once per chosen expert, ascending id",
    Op.SHARED: "run the next `body` commands once for shared expert `index` (id N_EXPERTS + index)",
    Op.FETCH: "resolve where the current expert's `plane` is (`update`: cache LOOKUP or PEEK)",
    Op.LOADM: "the current expert's multiplier tables, off-chip -> vector unit",
    Op.GEMV: "projection `proj` on the PE array for the active tokens, `bits` DRAFT or FULL",
    Op.SWIGLU: "requantize gate/up, SiLU table, product, requantize -> hidden buffer",
    Op.COMBINE: "requantize down, gate weight, accumulate into the output buffer",
    Op.STOREY: "output buffer (INT32 per element) -> off-chip Y block",
    Op.HALT: "end of the stream: `o_status.halted`",
}
REG_SUMMARY = {
    Reg.LAYER: "layer id (cache keys)",
    Reg.TOKENS: "tokens in the group",
    Reg.D_MODEL: "model width d (elements)",
    Reg.D_FFN: "expert width F (elements)",
    Reg.N_EXPERTS: "routed experts",
    Reg.TOP_K: "the layer's top_k (the most ROUTE may ask for)",
    Reg.PLANE_LINES: "image lines of one expert plane",
    Reg.X_ADDR: "off-chip image line of the input block",
    Reg.Y_ADDR: "off-chip image line of the output block",
    Reg.P_ADDR: "off-chip image line of the layer constants block",
    Reg.E_ADDR: "off-chip image line of expert 0's block; expert e at E_ADDR + e * E_STRIDE",
    Reg.E_STRIDE: "image lines per expert block",
    Reg.HB_BASE: "HB line of slot 0; slot s at HB_BASE + s * PLANE_LINES",
}

# The registers each executor command needs: any of them never set gives REGISTER, before any
# other check (the core checks them in one cycle when the command arrives).
NEEDS = {Op.LOADX: (Reg.TOKENS, Reg.D_MODEL, Reg.D_FFN, Reg.X_ADDR),
         Op.LOADP: (Reg.N_EXPERTS, Reg.D_MODEL, Reg.P_ADDR),
         Op.ROUTE: (Reg.N_EXPERTS, Reg.TOP_K, Reg.LAYER),
         Op.FETCH: (Reg.LAYER, Reg.PLANE_LINES, Reg.E_ADDR, Reg.E_STRIDE, Reg.HB_BASE),
         Op.LOADM: (Reg.E_ADDR, Reg.E_STRIDE, Reg.PLANE_LINES),
         Op.STOREY: (Reg.Y_ADDR,)}

@dataclass(frozen=True)
class Field:
    name: str
    width: str          # a key of field_widths(config), or "enum" for an enum field
    enum: type = None


INSTRUCTIONS = {
    Op.NOP: (),
    Op.SETR: (Field("reg", "enum", Reg), Field("value", "value")),
    Op.LOADX: (),
    Op.LOADP: (),
    Op.ROUTE: (Field("k", "k"), Field("choice", "enum", Choice)),
    Op.EXPERTS: (Field("body", "body"),),
    Op.SHARED: (Field("index", "expert"), Field("body", "body")),
    Op.FETCH: (Field("plane", "enum", Plane), Field("update", "enum", Update)),
    Op.LOADM: (),
    Op.GEMV: (Field("proj", "enum", Proj), Field("bits", "enum", Bits)),
    Op.SWIGLU: (),
    Op.COMBINE: (),
    Op.STOREY: (),
    Op.HALT: (),
}


def _enum_width(e):
    return max(1, max(int(v) for v in e).bit_length())


def field_widths(config):
    """Field widths from the configuration: ``value`` holds any address or shape, ``k`` any
    top-k, ``expert`` any expert id, ``body`` the loop body length."""
    value = max(config.offchip.addr_bits, config.hb.addr_bits, config.buffers.d_max.bit_length(),
                config.buffers.f_max.bit_length(), config.cache.layer_bits, config.cache.expert_bits + 1)
    return {"value": value, "k": config.cache.expert_bits + 1, "expert": config.cache.expert_bits,
            "body": config.body_bits}


@dataclass(frozen=True)
class FieldSpec:
    name: str
    offset: int
    width: int
    enum: type = None

    @property
    def most(self):
        return max(int(v) for v in self.enum) if self.enum else (1 << self.width) - 1


class InstructionSet:
    """The command set of one configuration: offsets and widths of every field.

    ``encode(op, **fields) -> int``, ``decode(word, index) -> (Op, {field: int})``; a word that
    does not decode (unknown opcode, enum value out of range, reserved bits set) is refused with
    a :class:`UserError` naming the instruction index.
    """

    def __init__(self, config):
        self.config = config
        self.word_bits = config.word_bits
        widths = field_widths(config)
        self.fields = {}
        for op, flds in INSTRUCTIONS.items():
            offset, specs = OPCODE_BITS, []
            for f in flds:
                w = _enum_width(f.enum) if f.width == "enum" else widths[f.width]
                specs.append(FieldSpec(f.name, offset, w, f.enum))
                offset += w
            if offset > self.word_bits:
                raise UserError(f"instruction {op.name} needs {offset} bits, more than word_bits = {self.word_bits}")
            self.fields[op] = tuple(specs)

    def used_bits(self, op):
        specs = self.fields[op]
        return specs[-1].offset + specs[-1].width if specs else OPCODE_BITS

    def encode(self, op, **values):
        op = Op(op)
        specs = self.fields[op]
        names = {s.name for s in specs}
        extra = sorted(set(values) - names)
        if extra:
            raise UserError(f"{op.name.lower()} has no field {extra[0]!r}")
        word = int(op)
        for s in specs:
            if s.name not in values:
                raise UserError(f"{op.name.lower()} needs field {s.name!r}")
            v = int(values[s.name])
            if not 0 <= v <= s.most or (s.enum and v not in {int(x) for x in s.enum}):
                raise UserError(f"{op.name.lower()} field {s.name} = {v} out of range [0, {s.most}]")
            word |= v << s.offset
        return word

    def decode(self, word, index=0):
        try:
            op = Op(word & ((1 << OPCODE_BITS) - 1))
        except ValueError:
            raise UserError(f"instruction {index}: unknown opcode {word & 0xF:#x}") from None
        values = {}
        for s in self.fields[op]:
            v = (word >> s.offset) & ((1 << s.width) - 1)
            if s.enum and v not in {int(x) for x in s.enum}:
                raise UserError(f"instruction {index} ({op.name.lower()}): field {s.name} = {v} out of range")
            values[s.name] = v
        if word >> self.used_bits(op):
            raise UserError(f"instruction {index} ({op.name.lower()}): reserved bits set in {word:#x}")
        return op, values

    # -- binary streams -----------------------------------------------------------------------
    @property
    def word_bytes(self):
        return self.word_bits // 8

    def to_bytes(self, words):
        return b"".join(int(w).to_bytes(self.word_bytes, "little") for w in words)

    def from_bytes(self, data):
        """Words of a binary stream; a length that is not whole words is refused."""
        n = self.word_bytes
        if len(data) % n:
            raise UserError(f"instruction {len(data) // n}: truncated word ({len(data) % n} of {n} bytes)")
        return [int.from_bytes(data[i:i + n], "little") for i in range(0, len(data), n)]

    def decode_all(self, words):
        return [self.decode(w, i) for i, w in enumerate(words)]


class Status(enum.IntEnum):
    """Why a command stream stopped: the core's status code (``hw/command_processor.py``).

    The command processor raises ``OPCODE``, ``FIELD``, ``LOOP`` and ``KEY`` (and ``REGISTER``
    for a loop whose ``N_EXPERTS`` is not set); the executor reports the others on its
    completion. Each matches a refusal of ``sim/machine/iss.py`` (the golden sequencing).
    """
    NONE = 0        # no error
    OPCODE = 1      # unknown opcode
    FIELD = 2       # enum field out of range or reserved bits set (InstructionSet.decode's refusals)
    LOOP = 3        # body 0, EXPERTS/SHARED/HALT inside a body, a loop without a ROUTE since LOADX
    KEY = 4         # shared expert id N_EXPERTS + index does not fit the cache key
    REGISTER = 5    # a register the command needs was never set
    RANGE = 6       # a shape out of range (TOKENS, D_MODEL, k, ...)
    ADDRESS = 7     # an address past an image
    INPUT = 8       # bad data (a -128 token, a scale exponent out of range)
    ORDER = 9       # a missing prerequisite (GEMV before FETCH, SWIGLU before gate/up, ...)
