"""A register copy that synthesis keeps: :func:`held_copy`.

A register whose fan-out is hundreds of gate inputs (a scalar feeding every element's multiplier,
a valid bit into every PE of the array) came out of ABC as a chain of some 20 buffers (1.5 ns in
Nangate 45) or, across module boundaries, as one gate driving every port (ABC does not see the
load behind a module's output). One copy per consumer group would cut the fan-out, but Yosys
merges registers with equal inputs (``opt_merge``): plain copies come out as one register.
"""

from amaranth.hdl import Signal, Value


def held_copy(m, en, value, name):
    """A register named ``name`` that loads ``value`` when ``en`` is high and holds otherwise (the
    same as ``with m.If(en): m.d.sync += reg.eq(value)``, reset value 0 included), kept apart from
    its equal copies: the hold is written as gates, ``(value & en) | (reg & ~en)``, which Yosys
    does not fold into an enable, so each copy's input includes its own output."""
    value = Value.cast(value)
    reg = Signal(value.shape(), name=name)
    e = en.replicate(len(reg))
    m.d.sync += reg.eq((value.as_unsigned() & e) | (reg.as_unsigned() & ~e))
    return reg
