"""Assembler and disassembler: command text <-> words (:mod:`.isa` is the one encoding).

Text syntax, one command per line: a mnemonic, then ``field=value`` pairs separated by commas;
enum fields take their names (``gemv proj=gate, bits=full``) or numbers, other fields decimal or
``0x`` hexadecimal; ``#`` starts a comment. The disassembler writes the same syntax, so
``assemble(disassemble(words)) == words`` for every decodable stream.
"""

from ..errors import UserError
from ..spec.isa import Op


def _fmt(spec, value):
    return spec.enum(value).name.lower() if spec.enum else str(value)


def disassemble_word(isa, word, index=0):
    op, values = isa.decode(word, index)
    args = ", ".join(f"{s.name}={_fmt(s, values[s.name])}" for s in isa.fields[op])
    return f"{op.name.lower()} {args}".rstrip()


def disassemble(isa, words):
    """Text of a stream, one command per line."""
    return "\n".join(disassemble_word(isa, w, i) for i, w in enumerate(words)) + "\n"


def listing(isa, words):
    """A listing: index, the word in hex and its text."""
    digits = isa.word_bits // 4
    return "".join(f"{i:5d}  {w:0{digits}x}  {disassemble_word(isa, w, i)}\n" for i, w in enumerate(words))


def _value(spec, text, where):
    if spec.enum:
        try:
            return int(spec.enum[text.upper()])
        except KeyError:
            pass
    try:
        return int(text, 0)
    except ValueError:
        choices = f" (one of {', '.join(m.name.lower() for m in spec.enum)})" if spec.enum else ""
        raise UserError(f"{where}: bad value {text!r} for field {spec.name}{choices}") from None


def assemble_line(isa, line, where="line 1"):
    """The word of one command line, or None for a blank or comment line."""
    text = line.split("#", 1)[0].strip()
    if not text:
        return None
    mnemonic, _, rest = text.partition(" ")
    try:
        op = Op[mnemonic.upper()]
    except KeyError:
        raise UserError(f"{where}: unknown mnemonic {mnemonic!r}") from None
    specs = {s.name: s for s in isa.fields[op]}
    values = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        name, eq, val = (x.strip() for x in part.partition("="))
        if not eq or name not in specs:
            raise UserError(f"{where}: {op.name.lower()} takes {', '.join(specs) or 'no fields'}, got {part!r}")
        values[name] = _value(specs[name], val, where)
    try:
        return isa.encode(op, **values)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None


def assemble(isa, text):
    """Words of a command text (errors name the line)."""
    words = []
    for n, line in enumerate(text.splitlines(), 1):
        w = assemble_line(isa, line, f"line {n}")
        if w is not None:
            words.append(w)
    return words
