"""The core's stream protocols: one named ``wiring.Signature`` per protocol, declared once.

Every block of the core that talks to a memory or to another block does it through these, so
``wiring.connect()`` composes them and a reader of the Verilog finds the same field names on
both sides. All streams are ``amaranth.lib.stream`` (transfer on ``valid & ready``; a producer
keeps ``valid`` and the payload until the transfer).

- **Request** ``(base, length)``: ``length`` consecutive lines from line ``base`` of a tier.
- **Line** ``(data, last)``: one line of a tier; ``last`` on a request's final line. Element 0 of
  any array packed into ``data`` sits at the least significant bits (Amaranth's convention), so
  line ``j`` of a request is bytes ``j*line_bytes ..`` of the image, little-endian.
- :class:`ReadPort` (client's view): ``req`` out, ``data`` in. A read port answers each request
  with exactly ``length`` lines, in order, ``last`` on the final one.
- :class:`WritePort` (client's view): ``req`` out, then ``length`` lines out on ``data`` (their
  ``last`` is ignored by the memory side; the request's length decides). ``done`` comes back once
  per request, after its last line is written (the memory side's acknowledgement: a read of the
  same lines issued after ``done`` sees the new data).
"""

from amaranth.hdl import Shape
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..errors import UserError


def payload_width(shape):
    """The width of a stream payload given as a width, ``Shape`` or layout (a one-line refusal
    of anything else or of zero bits)."""
    try:
        width = Shape.cast(shape).width
    except TypeError:
        raise UserError(f"shape must be a width, Shape or layout, got {shape!r}") from None
    if width < 1:
        raise UserError(f"shape must have at least one bit, got {shape!r}")
    return width


def request_layout(addr_bits, len_bits):
    """A read or write request: ``base`` (line address) and ``length`` (lines)."""
    return data.StructLayout({"base": addr_bits, "length": len_bits})


def line_layout(width):
    """One line: ``width`` data bits and ``last`` (the request's final line)."""
    return data.StructLayout({"data": width, "last": 1})


def request_stream(addr_bits, len_bits):
    return stream.Signature(request_layout(addr_bits, len_bits))


def line_stream(width):
    return stream.Signature(line_layout(width))


class ReadPort(wiring.Signature):
    """A memory read port as its client sees it: ``req`` (out) and ``data`` (in)."""

    def __init__(self, addr_bits, len_bits, width):
        self.addr_bits, self.len_bits, self.width = addr_bits, len_bits, width
        super().__init__({"req": Out(request_stream(addr_bits, len_bits)),
                          "data": In(line_stream(width))})

    def __eq__(self, other):
        return (type(other) is type(self) and
                (self.addr_bits, self.len_bits, self.width) == (other.addr_bits, other.len_bits, other.width))

    def __repr__(self):
        return f"ReadPort({self.addr_bits}, {self.len_bits}, {self.width})"


class WritePort(wiring.Signature):
    """A memory write port as its client sees it: ``req`` and ``data`` (out), ``done`` (in)."""

    def __init__(self, addr_bits, len_bits, width):
        self.addr_bits, self.len_bits, self.width = addr_bits, len_bits, width
        super().__init__({"req": Out(request_stream(addr_bits, len_bits)),
                          "data": Out(line_stream(width)),
                          "done": In(stream.Signature(1))})

    def __eq__(self, other):
        return (type(other) is type(self) and
                (self.addr_bits, self.len_bits, self.width) == (other.addr_bits, other.len_bits, other.width))

    def __repr__(self):
        return f"WritePort({self.addr_bits}, {self.len_bits}, {self.width})"
