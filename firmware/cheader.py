"""The C header of the command set: opcodes, registers, enums, field offsets and masks.

Generated from :mod:`elmoe3d.spec.isa` for one configuration (``elmoe3d generate --top core`` and
``elmoe3d compile`` write it), so firmware in C and the hardware share one source of truth.
"""

from ..spec.isa import INSTRUCTIONS, OPCODE_BITS, Op, Reg, Status


def c_header(isa, guard="ELMOE3D_COMMANDS_H"):
    cfg = isa.config
    out = [f"/* elmoe3d command set for configuration '{cfg.name}'. Generated: do not edit. */",
           f"#ifndef {guard}", f"#define {guard}", "", "#include <stdint.h>", "",
           f"#define ELMOE3D_WORD_BITS {isa.word_bits}",
           f"#define ELMOE3D_OPCODE_BITS {OPCODE_BITS}",
           f"#define ELMOE3D_OPCODE_MASK 0x{(1 << OPCODE_BITS) - 1:x}u", "",
           "/* opcodes */"]
    out += [f"#define ELMOE3D_OP_{op.name} {int(op)}u" for op in Op]
    out += ["", "/* status codes: why a stream stopped (the core's o_status.code; 0 = no error) */"]
    out += [f"#define ELMOE3D_STATUS_{st.name} {int(st)}u" for st in Status]
    out += ["", "/* SETR registers */"]
    out += [f"#define ELMOE3D_REG_{r.name} {int(r)}u" for r in Reg]
    enums = {}
    for op in INSTRUCTIONS:
        for s in isa.fields[op]:
            if s.enum:
                enums[s.enum.__name__] = s.enum
    for name, e in enums.items():
        if e is Reg:
            continue
        out += ["", f"/* {name} values */"]
        out += [f"#define ELMOE3D_{name.upper()}_{m.name} {int(m)}u" for m in e]
    out += ["", "/* field offsets (bits from the word's LSB), widths and masks */"]
    for op in INSTRUCTIONS:
        for s in isa.fields[op]:
            p = f"ELMOE3D_{op.name}_{s.name.upper()}"
            out += [f"#define {p}_SHIFT {s.offset}u", f"#define {p}_WIDTH {s.width}u",
                    f"#define {p}_MASK 0x{(1 << s.width) - 1:x}ull"]
    out += ["", "/* encode a field: ELMOE3D_FIELD(SETR, VALUE, v) */",
            "#define ELMOE3D_FIELD(op, f, v) (((uint64_t)(v) & ELMOE3D_##op##_##f##_MASK) << ELMOE3D_##op##_##f##_SHIFT)",
            "", f"#endif /* {guard} */", ""]
    return "\n".join(out)
