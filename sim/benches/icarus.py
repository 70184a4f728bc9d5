"""Make Amaranth's Verilog start correctly on Icarus Verilog.

Yosys's Verilog back end makes every ``always @*`` block sensitive to a dummy register
(``reg \\$auto$verilog_backend.cc:NNNN:dump_module$N = 0;``) so that simulators evaluate the
block at time 0. Icarus 11 applies that declaration initializer before the blocks wait on it, so
no event fires: combinational outputs that depend only on registers (an FSM's ``ready`` in its
reset state) stay ``X`` until those registers first change. :func:`icarus_verilog` writes a copy
of a generated file that toggles each dummy register once, at time 0 after every process has
started (``initial #0``), which evaluates every such block once. Verilator and synthesis read
the unmodified file.
"""

import re
from pathlib import Path

_DUMMY = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend\.cc:\d+:dump_module\$\d+ ) = 0;$", re.M)


def icarus_verilog(path):
    """Write ``<stem>.icarus.v`` beside ``path`` (see the module docstring); returns its path."""
    path = Path(path)
    text = _DUMMY.sub(lambda m: f"{m.group(1)}reg {m.group(2)} = 0;\n"
                                f"{m.group(1)}initial #0 {m.group(2)} = 1'b1;", path.read_text())
    out = path.with_name(f"{path.stem}.icarus.v")
    out.write_text(text)
    return out
