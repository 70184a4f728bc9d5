"""SRAM macros: the core's ``lib.memory`` buffers mapped onto the macros of a library.

The macro sets are those of ``../shared/pdk/sram/`` (its README): for Nangate 45 the
``fakeram45_WORDSxBITS`` single-port (1rw) RAMs (CACTI estimates, the set OpenROAD-flow-scripts
uses), for sky130 hd the OpenRAM ``sky130_sram_1rw1r_64x256_8`` (one read-write and one read
port). :func:`macro_set_for` picks the set from the standard-cell library's name.

How the flow uses them (Yosys' own machinery, no netlist surgery):

* :func:`memlib_text` writes a ``memory_libmap`` library: one ``ram block`` per macro shape with
  ``cost`` = its area (tenths of um^2, plus one per macro so that of two tilings of equal area
  the one with fewer macros wins). ``memory_libmap`` tiles each memory's width and depth from
  those shapes (the leftover rounded up to whole macros) and picks the tiling of least cost:
  :func:`best_tiling` is that choice in Python, for the report and the tests. The cost of a
  memory bit in flip-flops is set far above any macro (:data:`LOGIC_COST_PER_BIT`), so every
  writable memory goes onto macros; a ROM (contents given at elaboration, no write port) cannot
  be loaded into a macro and stays logic.
* :func:`techmap_text` writes the wrapper modules ``techmap`` replaces each mapped cell with:
  an instance of the macro cell, its pins named as in the macro's Liberty file.
* The macros' Verilog models are read with ``read_verilog -lib`` (black boxes) and their
  Liberty files (decompressed into the output folder) by ``stat -liberty`` (area) and OpenSTA.

One decision to state (:data:`DUAL_PORT_RULE`): the fakeram45 macros have one port, and every
buffer of the core has a separate write port and read port (``lib.memory`` ports, used in the
same cycle). Two single-port copies would not serve a write and a read per cycle either (each
write must reach both copies), so such a memory is mapped onto **one macro per tile, double
pumped**: a real implementation clocks the macro at twice the core clock, the read in the first
half cycle and the write in the second. The netlist models it with one macro whose address
is the write address when writing and the read address otherwise, clocked by the core clock:
its area is exact (one macro per tile); its timing is that of a single-pumped access, and the
double-pumped macro's own limit (two accesses per core cycle: ``Fmax <= 1 / (2 x min_period)``)
is reported beside it (:func:`double_pump_fmax_mhz`). The sky130 macro has a write port and a
read port of its own: one macro per tile, no such rule.
"""

import gzip
import math
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..toolchain import PDK_DIR

SRAM_DIR = PDK_DIR / "sram"

# Cost of one memory bit left to flip-flops, in memory_libmap's cost unit (tenths of um^2): far
# above any macro's per-bit cost, so every writable memory maps onto macros.
LOGIC_COST_PER_BIT = 10 ** 6
COST_SCALE = 10                # cost units per um^2
COST_PER_MACRO = 1             # tie-break: of equal areas, fewer macros

DUAL_PORT_RULE = ("fakeram45 macros have one port: a memory with a separate write and read port "
                  "maps onto one macro per tile, double pumped (read in the first half cycle, write in "
                  "the second); the netlist muxes the address per cycle, so area is one macro per tile "
                  "and the macro's own limit is Fmax <= 1 / (2 x min_period)")


@dataclass(frozen=True)
class Macro:
    """One SRAM macro: ``words`` x ``bits``, ``ports`` ``"1rw"`` or ``"1rw1r"``, one write
    enable bit per ``mask`` data bits, its Liberty (gzipped) and Verilog model files."""
    name: str
    words: int
    bits: int
    ports: str
    mask: int
    lib_file: str
    verilog_file: str

    @property
    def abits(self):
        return (self.words - 1).bit_length()

    @property
    def lib_gz(self):
        return SRAM_DIR / self.lib_file

    @property
    def verilog(self):
        return SRAM_DIR / self.verilog_file

    @property
    def cell(self):
        """The ``memory_libmap`` cell name the flow maps onto this macro."""
        return f"$__ELMOE3D_{self.name.upper()}"

    def area(self):
        """The macro cell's ``area`` from its Liberty file (um^2)."""
        return _lib_figures(self)["area"]

    def pin_cap_ff(self):
        """The largest input pin capacitance of the macro's Liberty file but the clock's (fF)."""
        return _lib_figures(self)["pin_cap_ff"]

    def min_period_ns(self):
        """The clock pin's ``min_period`` (ns), or None when the Liberty file gives none."""
        return _lib_figures(self)["min_period"]


def _fakeram(words, bits):
    name = f"fakeram45_{words}x{bits}"
    return Macro(name, words, bits, "1rw", 1, f"{name}.lib.gz", f"{name}.v")


MACRO_SETS = {
    "nangate45": tuple(_fakeram(w, b) for w, b in ((64, 32), (128, 32), (256, 32), (256, 64), (512, 32),
                                                   (512, 64))),
    "sky130hd": (Macro("sky130_sram_1rw1r_64x256_8", 256, 64, "1rw1r", 8,
                       "sky130_sram_1rw1r_64x256_8_TT_1p8V_25C.lib.gz", "sky130_sram_1rw1r_64x256_8.v"),),
}
# Standard-cell library name (its Liberty ``library`` group) -> macro set
_LIBRARY_PREFIXES = (("NangateOpenCellLibrary", "nangate45"), ("sky130_fd_sc_hd", "sky130hd"))

_FIGURES = {}


def _lib_figures(macro):
    if macro.name not in _FIGURES:
        text = _read_lib(macro)
        area = re.search(r"\barea\s*:\s*([0-9.eE+-]+)", text)
        period = re.search(r"\bmin_period\s*:\s*([0-9.eE+-]+)", text)
        if period is None:            # OpenRAM: a minimum_period timing group on the clock pin
            period = re.search(r'timing_type\s*:\s*"?minimum_period"?\s*;.*?values\s*\(\s*"\s*([0-9.eE+-]+)',
                               text, flags=re.S)
        if area is None:
            raise UserError(f"SRAM macro Liberty file {macro.lib_gz} gives no area")
        unit = re.search(r"capacitive_load_unit\s*\(\s*([0-9.eE+-]+)\s*,\s*\"?(\w+)", text)
        scale = float(unit.group(1)) * {"ff": 1.0, "pf": 1000.0}.get(unit.group(2).lower(), 1.0) if unit else 1.0
        # input pins' capacitance; the clock pin's (fakeram45: 25 fF against 5 fF) left out
        groups = re.findall(r"\b(?:pin|bus)\s*\(\s*\"?([\w\[\]:]+)\"?\s*\)\s*\{([^{}]*)", text)
        caps = [float(c.group(1)) for name, body in groups if "clk" not in name.lower()
                for c in [re.search(r"(?<![_\w])capacitance\s*:\s*([0-9.eE+-]+)", body)] if c]
        _FIGURES[macro.name] = {"area": float(area.group(1)),
                                "min_period": float(period.group(1)) if period else None,
                                "pin_cap_ff": max(caps) * scale if caps else None}
    return _FIGURES[macro.name]


def _read_lib(macro):
    try:
        return gzip.decompress(macro.lib_gz.read_bytes()).decode("latin-1")
    except FileNotFoundError:
        raise UserError(f"SRAM macro Liberty file not found: {macro.lib_gz}") from None
    except (OSError, EOFError) as exc:
        raise UserError(f"SRAM macro Liberty file {macro.lib_gz} is not a readable gzip file ({exc})") from None


def macro_set_for(library_name):
    """The macro set (a key of :data:`MACRO_SETS`) for a standard-cell library name, or None."""
    for prefix, key in _LIBRARY_PREFIXES:
        if library_name and library_name.startswith(prefix):
            return key
    return None


def available(key):
    """True when every file of macro set ``key`` is present beside the checkout."""
    return all(m.lib_gz.is_file() and m.verilog.is_file() for m in MACRO_SETS[key])


def tiling(width, depth, macro, fold=1):
    """``(columns, rows)`` of ``macro`` covering a ``depth`` x ``width`` memory whose ``fold``
    consecutive words (a power of two) share one macro word: the memory becomes ``ceil(depth /
    fold)`` words of ``fold`` sub-words, each padded to whole write-enable groups (``mask``
    bits) when ``fold > 1``; width and depth are then each rounded up to whole macros. Yosys'
    ``memory_libmap`` folds so (its "wide port" mapping) when that needs fewer macros."""
    if width < 1 or depth < 1:
        raise ValueError(f"a memory needs width and depth >= 1, got {width} x {depth}")
    if fold < 1 or fold & (fold - 1):
        raise ValueError(f"fold must be a power of two, got {fold}")
    sub = width if fold == 1 else -(-width // macro.mask) * macro.mask
    return math.ceil(fold * sub / macro.bits), math.ceil(math.ceil(depth / fold) / macro.words)


def tiling_cost(width, depth, macro, fold=1):
    """``memory_libmap``'s cost of a tiling (see the module doc): per macro its area in tenths of
    um^2 plus one."""
    cols, rows = tiling(width, depth, macro, fold)
    return cols * rows * (round(macro.area() * COST_SCALE) + COST_PER_MACRO)


def best_tiling(width, depth, macros):
    """The tiling ``memory_libmap`` picks for a ``depth`` x ``width`` memory with one write and
    one read port: the least cost over every macro and fold (ties: fewer macros, fewer folds,
    then the macro listed first). Returns ``{"macro", "fold", "columns", "rows", "count", "area_um2",
    "bits_used", "bits_total"}``."""
    options = []
    for i, m in enumerate(macros):
        fold = 1
        while fold <= depth:
            cols, rows = tiling(width, depth, m, fold)
            options.append((tiling_cost(width, depth, m, fold), cols * rows, fold, i, m))
            if fold * width > 64 * m.bits:      # wider folds only add columns
                break
            fold *= 2
    _, _, fold, _, best = min(options, key=lambda o: o[:4])
    cols, rows = tiling(width, depth, best, fold)
    return {"macro": best.name, "fold": fold, "columns": cols, "rows": rows, "count": cols * rows,
            "area_um2": cols * rows * best.area(), "bits_used": width * depth,
            "bits_total": cols * rows * best.words * best.bits}


def double_pump_fmax_mhz(key):
    """The clock limit of a double-pumped macro of set ``key`` (two accesses per core cycle:
    ``1 / (2 x min_period)``), or None for a set with a dual-port macro or no ``min_period``."""
    periods = [m.min_period_ns() for m in MACRO_SETS[key] if m.ports == "1rw"]
    periods = [p for p in periods if p]
    return 1000.0 / (2 * max(periods)) if periods else None


def memlib_text(macros):
    """The ``memory_libmap`` library describing ``macros`` (format: Yosys' memlib.md)."""
    out = ["# SRAM macros for memory_libmap, written by elmoe3d.synth.macros (cost: area in 0.1 um^2)"]
    for m in macros:
        cost = round(m.area() * COST_SCALE) + COST_PER_MACRO
        head = [f"    abits {m.abits};", f"    width {m.bits};", f"    byte {m.mask};", f"    cost {cost};",
                "    init zero;"]
        if m.ports == "1rw1r":
            out += [f"ram block {m.cell} {{", *head,
                    '    port srsw "A" {', "        clock posedge;", "        clken;", "        rdwr undefined;",
                    "        wrbe_separate;", "    }",
                    '    port sr "B" {', "        clock posedge;", "        clken;", "    }", "}"]
        else:
            # the macro as one read-write port, and double pumped as a write port and a read port
            # (cost one more: a memory with one port takes the plain one)
            out += [f"ram block {m.cell} {{", *head,
                    '    port srsw "A" {', "        clock posedge;", "        clken;", "        rdwr undefined;",
                    "        wrbe_separate;", "    }", "}"]
            out += [f"ram block {m.cell}_DP {{", *head[:3], f"    cost {cost + 1};", "    init zero;",
                    # read in the first half cycle, write in the second: a read of the address
                    # being written gives the old word (what a lib.memory read port, not
                    # transparent, asks for); undeclared, memory_libmap emulated it with a
                    # register and a multiplexer per data bit and the write delayed a cycle
                    '    port sw "W" {', '        clock posedge "C";', "        wrbe_separate;", '        wrtrans "R" old;',
                    "    }",
                    '    port sr "R" {', '        clock posedge "C";', "        clken;", "    }", "}"]
    return "\n".join(out) + "\n"


def _uniform_mask(port, be):
    """Verilog lines giving ``<port>_MASK`` and ``<port>_WE``: when every bit of the port's write
    enables is one net (a full-word write; Yosys' ``_TECHMAP_CONNMAP_`` says so), the macro's bit
    mask is tied high and that net gates the write enable instead, so a register does not drive
    every mask pin of every macro (a load outside ABC's view, never buffered); otherwise the mask
    is the enables, as given. The write happens for exactly the same bits either way."""
    c = f"_TECHMAP_CONNMAP_{port}_WR_BE_"
    return [f"  parameter {c} = 0;",
            f"  localparam {port}_SAME = ({c} == {{{be}{{{c}[$bits({c}) / {be} - 1:0]}}}});",
            f"  wire [{be - 1}:0] {port}_MASK = {port}_SAME ? {{{be}{{1'b1}}}} : {port}_WR_BE;",
            f"  wire {port}_WE = {port}_SAME ? ({port}_WR_EN & {port}_WR_BE[0]) : {port}_WR_EN;"]


def _pin_buffers(pins):
    """Verilog lines driving each macro input pin ``P_<pin>`` through its own kept buffer.

    ABC sizes and buffers only inside its network: a macro pin is one of its outputs, of the
    load ``-constr`` gives every output. Without these buffers all the pins one net drives (an
    address bit into every macro of a wide memory) are one output to ABC, their load unseen (a
    ``MUX2_X1`` drove 64 address pins, 0.95 ns; a mask net 256 pins, 7.6 ns); with them each pin
    is an output of its own, so ABC sees the net's fan-out and buffers it. The buffers are
    Yosys' ``$_BUF_`` (kept until ABC, which absorbs them into its network; where an output is
    a module input as it is, ABC maps it as a library buffer). The write-data pins are left
    direct: each data bit goes to one macro but in a table copied per read port."""
    out = []
    for pin, width, expr in pins:
        out += [f"  (* keep *) wire [{width - 1}:0] P_{pin};",
                f"  wire [{width - 1}:0] S_{pin} = {expr};",
                f"  genvar G_{pin};",
                f"  generate for (G_{pin} = 0; G_{pin} < {width}; G_{pin} = G_{pin} + 1) begin : B_{pin}",
                f"    (* keep *) \\$_BUF_ b (.A(S_{pin}[G_{pin}]), .Y(P_{pin}[G_{pin}]));",
                "  end endgenerate"]
    return out


def techmap_text(macros):
    """Wrapper modules replacing each ``memory_libmap`` cell with an instance of its macro."""
    out = ["// SRAM macro wrappers for techmap, written by elmoe3d.synth.macros"]
    for m in macros:
        a, w, be = m.abits, m.bits, m.bits // m.mask
        if m.ports == "1rw1r":
            out += [f"module \\{m.cell} (PORT_A_CLK, PORT_A_CLK_EN, PORT_A_ADDR, PORT_A_WR_EN, PORT_A_WR_BE, "
                    "PORT_A_WR_DATA, PORT_A_RD_DATA, PORT_B_CLK, PORT_B_CLK_EN, PORT_B_ADDR, PORT_B_RD_DATA);",
                    "  input PORT_A_CLK, PORT_A_CLK_EN, PORT_A_WR_EN, PORT_B_CLK, PORT_B_CLK_EN;",
                    f"  input [{a - 1}:0] PORT_A_ADDR, PORT_B_ADDR;",
                    f"  input [{be - 1}:0] PORT_A_WR_BE;",
                    f"  input [{w - 1}:0] PORT_A_WR_DATA;",
                    f"  output [{w - 1}:0] PORT_A_RD_DATA, PORT_B_RD_DATA;",
                    *_uniform_mask("PORT_A", be),
                    *_pin_buffers([("csb0", 1, "~PORT_A_CLK_EN"), ("web0", 1, "~PORT_A_WE"), ("wmask0", be, "PORT_A_MASK"),
                                   ("addr0", a, "PORT_A_ADDR"),
                                   ("csb1", 1, "~PORT_B_CLK_EN"), ("addr1", a, "PORT_B_ADDR")]),
                    f"  {m.name} _TECHMAP_REPLACE_ (.clk0(PORT_A_CLK), .csb0(P_csb0), .web0(P_web0), "
                    ".wmask0(P_wmask0), .addr0(P_addr0), .din0(PORT_A_WR_DATA), .dout0(PORT_A_RD_DATA), "
                    ".clk1(PORT_B_CLK), .csb1(P_csb1), .addr1(P_addr1), .dout1(PORT_B_RD_DATA));",
                    "endmodule"]
            continue
        out += [f"module \\{m.cell} (PORT_A_CLK, PORT_A_CLK_EN, PORT_A_ADDR, PORT_A_WR_EN, PORT_A_WR_BE, "
                "PORT_A_WR_DATA, PORT_A_RD_DATA);",
                "  input PORT_A_CLK, PORT_A_CLK_EN, PORT_A_WR_EN;",
                f"  input [{a - 1}:0] PORT_A_ADDR;",
                f"  input [{be - 1}:0] PORT_A_WR_BE;",
                f"  input [{w - 1}:0] PORT_A_WR_DATA;",
                f"  output [{w - 1}:0] PORT_A_RD_DATA;",
                *_uniform_mask("PORT_A", be),
                *_pin_buffers([("ce_in", 1, "PORT_A_CLK_EN"), ("we_in", 1, "PORT_A_WE"), ("addr_in", a, "PORT_A_ADDR"),
                               ("w_mask_in", be, "PORT_A_MASK")]),
                f"  {m.name} _TECHMAP_REPLACE_ (.clk(PORT_A_CLK), .ce_in(P_ce_in), .we_in(P_we_in), "
                ".addr_in(P_addr_in), .wd_in(PORT_A_WR_DATA), .w_mask_in(P_w_mask_in), .rd_out(PORT_A_RD_DATA));",
                "endmodule",
                f"module \\{m.cell}_DP (CLK_C, PORT_W_CLK, PORT_W_ADDR, PORT_W_WR_EN, PORT_W_WR_BE, PORT_W_WR_DATA, "
                "PORT_R_CLK, PORT_R_CLK_EN, PORT_R_ADDR, PORT_R_RD_DATA);",
                "  input CLK_C, PORT_W_CLK, PORT_W_WR_EN, PORT_R_CLK, PORT_R_CLK_EN;",
                f"  input [{a - 1}:0] PORT_W_ADDR, PORT_R_ADDR;",
                f"  input [{be - 1}:0] PORT_W_WR_BE;",
                f"  input [{w - 1}:0] PORT_W_WR_DATA;",
                f"  output [{w - 1}:0] PORT_R_RD_DATA;",
                *_uniform_mask("PORT_W", be),
                "  // double pumped (see elmoe3d.synth.macros.DUAL_PORT_RULE): one access per cycle modelled",
                *_pin_buffers([("ce_in", 1, "PORT_W_WR_EN | PORT_R_CLK_EN"), ("we_in", 1, "PORT_W_WE"),
                               ("addr_in", a, "PORT_W_WR_EN ? PORT_W_ADDR : PORT_R_ADDR"),
                               ("w_mask_in", be, "PORT_W_MASK")]),
                f"  {m.name} _TECHMAP_REPLACE_ (.clk(CLK_C), .ce_in(P_ce_in), .we_in(P_we_in), .addr_in(P_addr_in), "
                ".wd_in(PORT_W_WR_DATA), .w_mask_in(P_w_mask_in), .rd_out(PORT_R_RD_DATA));",
                "endmodule"]
    return "\n".join(out) + "\n"


@dataclass
class MacroFiles:
    """The files of one macro set prepared in an output folder (absolute paths)."""
    key: str
    macros: tuple
    memlib: Path
    techmap: Path
    liberty: list          # decompressed .lib files
    verilog: list          # behavioural models, read as black boxes

    def pin_load_ff(self):
        """The load ABC gives each output of a module with macros: the largest macro input pin's
        capacitance (fF), so that a net into N macro pins (N outputs of ABC's network, see
        :func:`_pin_buffers`) weighs N pins."""
        caps = [m.pin_cap_ff() for m in self.macros if m.pin_cap_ff()]
        return max(caps) if caps else None

    def areas(self):
        """``{macro cell name: area um^2}``."""
        return {m.name: m.area() for m in self.macros}

    def describe(self):
        return {"set": self.key, "macros": {m.name: {"words": m.words, "bits": m.bits, "ports": m.ports,
                                                     "area_um2": m.area(), "min_period_ns": m.min_period_ns()}
                                            for m in self.macros},
                "dual_port_rule": DUAL_PORT_RULE if any(m.ports == "1rw" for m in self.macros) else None,
                "double_pump_fmax_mhz": double_pump_fmax_mhz(self.key)}


def prepare(key, out_dir):
    """Write macro set ``key``'s memlib, techmap wrappers and decompressed Liberty files into
    ``out_dir/macros``; refuses (``UserError``) when the set's files are missing."""
    if key not in MACRO_SETS:
        raise UserError(f"unknown SRAM macro set {key!r}; choose from {', '.join(MACRO_SETS)}")
    macros = MACRO_SETS[key]
    missing = [str(p) for m in macros for p in (m.lib_gz, m.verilog) if not p.is_file()]
    if missing:
        raise UserError(f"SRAM macro files missing: {missing[0]} (use --no-macros for flip-flops)")
    folder = Path(out_dir).resolve() / "macros"
    folder.mkdir(parents=True, exist_ok=True)
    libs = []
    for m in macros:
        path = folder / m.lib_file[:-3]
        text = _read_lib(m)
        if not path.exists() or path.read_text(encoding="latin-1") != text:
            path.write_text(text, encoding="latin-1")
        libs.append(path)
    memlib = folder / "memlib.txt"
    memlib.write_text(memlib_text(macros))
    techmap = folder / "macros_map.v"
    techmap.write_text(techmap_text(macros))
    return MacroFiles(key, macros, memlib, techmap, libs, [m.verilog.resolve() for m in macros])
