"""SRAM macros in synthesis (synth/macros.py): tiling arithmetic, the memory_libmap library and
wrappers, and small memory-only syntheses with macros and with flip-flops.

The syntheses need ../shared/pdk (Liberty files and SRAM macros); they are skipped without it.
The default run synthesizes a stream FIFO (one memory); the whole core is behind -m slow.
"""

import json
import re

import pytest

from elmoe3d.synth import macros
from elmoe3d.synth.macros import MACRO_SETS, Macro, best_tiling, tiling
from elmoe3d.toolchain import shipped_liberty


def _have(key):
    return shipped_liberty(key) is not None and macros.available(key)


def _macro(words, bits, mask=1):
    return Macro(f"m{words}x{bits}", words, bits, "1rw", mask, "x.lib.gz", "x.v")


# (width, depth, macro words x bits, mask, fold) -> (columns, rows), by hand
@pytest.mark.parametrize("width, depth, words, bits, mask, fold, expected", [
    (64, 256, 256, 64, 1, 1, (1, 1)),        # exact fit
    (65, 256, 256, 64, 1, 1, (2, 1)),        # one bit over: a second column
    (64, 257, 256, 64, 1, 1, (1, 2)),        # one word over: a second row
    (100, 128, 64, 32, 1, 1, (4, 2)),        # 100 / 32 -> 4 columns, 128 / 64 -> 2 rows
    (100, 128, 64, 32, 1, 2, (7, 1)),        # two words of 100 bits per row: 200 / 32 -> 7 columns
    (20, 512, 256, 64, 8, 2, (1, 1)),        # 20 bits padded to 24 (byte mask), 48 <= 64
    (20, 512, 256, 64, 8, 4, (2, 1)),        # 4 x 24 = 96 bits -> 2 columns, 128 words -> 1 row
    (1, 1, 64, 32, 1, 1, (1, 1)),
])
def test_tiling_by_hand(width, depth, words, bits, mask, fold, expected):
    assert tiling(width, depth, _macro(words, bits, mask), fold) == expected


@pytest.mark.parametrize("bad", [(0, 16, 1), (16, 0, 1), (16, 16, 3), (16, 16, 0)])
def test_tiling_refuses_empty_memories_and_odd_folds(bad):
    with pytest.raises(ValueError):
        tiling(bad[0], bad[1], _macro(64, 32), bad[2])


@pytest.mark.skipif(not macros.available("nangate45"), reason="needs ../shared/pdk/sram")
@pytest.mark.parametrize("width, depth, macro, count", [
    (64, 256, "fakeram45_256x64", 1),        # one macro holds it
    (32, 512, "fakeram45_512x32", 1),
    (64, 64, "fakeram45_64x32", 2),           # two 32-bit columns
    (16, 512, "fakeram45_256x32", 1),         # folded: 256 words of two 16-bit words
    (64, 1024, "fakeram45_512x64", 2),        # two rows of the largest
])
def test_best_tiling_least_area_then_fewest_macros(width, depth, macro, count):
    """Every fakeram45 costs 0.576 um^2 per bit, so the least area is the least rounding; of
    tilings of equal area the one with fewer macros wins."""
    t = best_tiling(width, depth, MACRO_SETS["nangate45"])
    assert (t["macro"], t["count"]) == (macro, count)
    m = next(m for m in MACRO_SETS["nangate45"] if m.name == macro)
    assert t["area_um2"] == pytest.approx(count * m.area())
    assert t["bits_total"] >= t["bits_used"] == width * depth


@pytest.mark.skipif(not macros.available("nangate45") or not macros.available("sky130hd"),
                    reason="needs ../shared/pdk/sram")
@pytest.mark.parametrize("key", sorted(MACRO_SETS))
def test_library_and_wrappers_name_every_macro(key):
    ms = MACRO_SETS[key]
    lib, tmap = macros.memlib_text(ms), macros.techmap_text(ms)
    for m in ms:
        assert f"ram block {m.cell} {{" in lib and f"abits {m.abits};" in lib and f"width {m.bits};" in lib
        assert f"cost {round(m.area() * macros.COST_SCALE) + macros.COST_PER_MACRO};" in lib
        assert re.search(rf"^\s*{m.name} _TECHMAP_REPLACE_", tmap, flags=re.M)
        # a single-port macro also serves a write port + read port, double pumped
        assert (f"ram block {m.cell}_DP {{" in lib) == (m.ports == "1rw")
    assert macros.macro_set_for("NangateOpenCellLibrary") == "nangate45"
    assert macros.macro_set_for("sky130_fd_sc_hd__tt_025C_1v80") == "sky130hd"
    assert macros.macro_set_for("some_other_lib") is None


def test_library_figures_come_from_the_liberty_files():
    if not macros.available("nangate45"):
        pytest.skip("needs ../shared/pdk/sram")
    m = next(m for m in MACRO_SETS["nangate45"] if m.name == "fakeram45_256x64")
    assert m.area() == pytest.approx(9437.184)          # the cell's area attribute (README)
    assert macros.double_pump_fmax_mhz("nangate45") == pytest.approx(1000 / (2 * m.min_period_ns()))
    assert macros.double_pump_fmax_mhz("sky130hd") is None   # a 1rw1r macro: no double pumping


# A stream FIFO of depth D + 1 holds one D x W memory (with one write and one read port).
FIFO = {"nangate45": (64, 64), "sky130hd": (40, 64)}
FLOP_FIFO = (16, 16)          # kept small: a memory in flip-flops maps slowly


@pytest.mark.parametrize("key", sorted(FIFO))
def test_fifo_memory_on_macros(tmp_path, key):
    """The FIFO's memory becomes the macros best_tiling predicts, in the netlist and the stat;
    area = logic + macros; OpenSTA (when installed) times the design with the macros' Liberty."""
    if not _have(key):
        pytest.skip(f"needs ../shared/pdk ({key} Liberty and SRAM macros)")
    from elmoe3d.synth import flow, sta_flow
    width, depth = FIFO[key]
    rep = flow.synthesize("stream_fifo", {"width": width, "depth": depth + 1}, tmp_path, liberty=key,
                          clock_ns=5.0 if key == "nangate45" else 20.0, log=None)
    want = best_tiling(width, depth, MACRO_SETS[key])
    tot = rep["area"]["total"]
    assert tot["macros"] == {want["macro"]: want["count"]}
    assert tot["macro_area"] == pytest.approx(want["area_um2"])
    assert tot["area"] == pytest.approx(tot["logic_area"] + tot["macro_area"])
    assert 0 < tot["logic_area"] < tot["macro_area"]
    netlist = (tmp_path / "netlist.v").read_text()
    assert len(re.findall(rf"^\s*{want['macro']}\s", netlist, flags=re.M)) == want["count"]
    # full-word writes: the bit mask is tied high and the write enable alone gates the write, so no
    # register drives every mask pin (an unbuffered load outside ABC's view)
    # (sky130's 40 of 64 bits: the unused bytes' enables are constant 0, so the mask stays the enables)
    masks = re.findall(r"\.(?:w_mask_in|wmask0)\(([^)]*)\)", netlist)
    assert len(masks) == want["count"]
    if width % next(m.bits for m in MACRO_SETS[key] if m.name == want["macro"]) == 0:
        assert all(re.fullmatch(r"\d+'[dh]\w+", m.strip()) for m in masks), masks
    stat = json.loads((tmp_path / "stat.json").read_text())
    cells = {}
    for mod in stat["modules"].values():
        for c, n in mod.get("num_cells_by_type", {}).items():
            cells[c] = cells.get(c, 0) + n
    assert cells.get(want["macro"]) == want["count"]
    md = (tmp_path / "report.md").read_text()
    assert "| memories | SRAM macros" in md and f"{want['count']} x `{want['macro']}`" in md
    if sta_flow.sta_binary():
        assert rep["timing"]["fmax_mhz"] > 0 and rep["power_mw"]["total"] > 0    # power with the macros
        # the top only wires the FIFO: timed alone, the FIFO module has the design's worst path
        mods = rep["timing"]["modules"]
        assert list(mods) == ["stream_fifo.fifo"] and mods["stream_fifo.fifo"]["instances"] == 1
        assert mods["stream_fifo.fifo"]["fmax_mhz"] == pytest.approx(rep["timing"]["fmax_mhz"], rel=0.01)
        assert any(want["macro"] in line for line in (tmp_path / "sta.tcl").read_text().splitlines()
                   if line.startswith("read_liberty"))


def _macro_pin_fanout(netlist, macro_re=r"fakeram45_\w+"):
    """{net: macro control pins it drives} (address, enables, mask) in a flat Yosys netlist."""
    fanout = {}
    for body in re.findall(rf"^\s*{macro_re} \S+\s*\((.*?)\);", netlist, flags=re.S | re.M):
        for conn in re.findall(r"\.(?:addr_in|ce_in|we_in|w_mask_in)\((.*?)\)", body, flags=re.S):
            for net in re.split(r"\s*,\s*", conn.strip().strip("{}").strip()):
                if re.fullmatch(r"\d+'[dhb]\w+", net):
                    continue                                  # a constant
                m = re.fullmatch(r"(\S+)\[(\d+):(\d+)\]", net)
                bits = [f"{m.group(1)}[{i}]" for i in range(int(m.group(3)), int(m.group(2)) + 1)] if m else [net]
                for b in bits:
                    fanout[b] = fanout.get(b, 0) + 1
    return fanout


def test_wide_fifo_on_macros_needs_no_per_bit_logic_and_buffers_macro_pins(tmp_path):
    """A 1 024-bit FIFO on 32 double-pumped fakeram45 macros: (1) the library declares that a
    read of the word being written gives the old word (read in the first half cycle), so
    memory_libmap adds no register and multiplexer per data bit to emulate it (it did: 2 048
    flip-flops on a 1 024-bit FIFO); (2) every macro control pin is an output of ABC's network
    of its own, so no net drives all 32 macros' address pins unbuffered (a MUX2_X1 drove 64)."""
    if not _have("nangate45"):
        pytest.skip("needs ../shared/pdk (nangate45 Liberty and SRAM macros)")
    from elmoe3d.synth import flow, sta_flow
    assert 'wrtrans "R" old;' in macros.memlib_text(MACRO_SETS["nangate45"])
    rep = flow.synthesize("stream_fifo", {"width": 1024, "depth": 8}, tmp_path, liberty="nangate45",
                          clock_ns=2.0, log=None)
    assert rep["area"]["total"]["macros"] == {"fakeram45_64x32": 32}
    flops = sum(n for c, n in rep["area"]["cells_by_type"].items() if c.startswith(("DFF", "SDFF")))
    assert flops < 32                      # pointers and levels only, nothing per data bit
    fanout = _macro_pin_fanout((tmp_path / "netlist.v").read_text())
    assert fanout and max(fanout.values()) <= 8, sorted(fanout.values())[-5:]
    assert "set_load 5" in (tmp_path / "abc_macros.constr").read_text()      # fakeram45 pins: 5 fF
    if sta_flow.sta_binary():
        assert rep["timing"]["met"], rep["timing"]


def test_fifo_memory_as_flip_flops(tmp_path):
    """--no-macros: no macro cell, the memory's bits in flip-flops (far more sequential area than
    the macro version's), and the report says so."""
    if not _have("nangate45"):
        pytest.skip("needs ../shared/pdk (nangate45 Liberty and SRAM macros)")
    from elmoe3d.synth import flow, yosys_flow
    width, depth = FLOP_FIFO
    rep = flow.synthesize("stream_fifo", {"width": width, "depth": depth + 1}, tmp_path, liberty="nangate45",
                          clock_ns=5.0, macros=False, log=None)
    tot = rep["area"]["total"]
    assert tot["macro_area"] == 0 and tot["macros"] == {} and tot["logic_area"] == tot["area"]
    assert not re.search(r"fakeram45_\d+x\d+", (tmp_path / "netlist.v").read_text())
    # at least one flip-flop per memory bit
    flops = sum(n for c, n in rep["area"]["cells_by_type"].items() if c.startswith(("DFF", "SDFF")))
    assert flops >= width * depth
    assert "| memories | flip-flops |" in (tmp_path / "report.md").read_text()
    assert "Memories as flip-flops (--no-macros)" in " ".join(rep["notes"])
    assert yosys_flow.parse_stat_json(tmp_path / "stat.json")["total"]["macro_area"] == 0


def test_hierarchical_area_and_timing_per_distinct_module(tmp_path):
    """A PE array's PE is one Verilog module instanced rows x lanes times: Yosys maps it once,
    the area counts it per instance, and OpenSTA times it once (issue 21 item 2)."""
    if shipped_liberty("nangate45") is None:
        pytest.skip("needs ../shared/pdk")
    from elmoe3d.synth import flow, sta_flow
    rows, cols, lanes = 2, 2, 3
    rep = flow.synthesize("pe_array", {"rows": rows, "cols": cols, "lanes": lanes}, tmp_path, liberty="nangate45",
                          clock_ns=5.0, log=None)
    mods = rep["area"]["modules"]
    pe = [n for n in mods if n.startswith("elmoe3d_pe_")]
    assert len(pe) == 1 and mods[pe[0]]["instances"] == rows * lanes
    netlist = (tmp_path / "netlist_hier.v").read_text()
    assert len(re.findall(rf"^module\s+\\?{pe[0]}\s*\(", netlist, flags=re.M)) == 1    # mapped once
    top = mods[rep["area"]["top"]]
    assert top["area"] == pytest.approx(top["own_area"] + sum(mods[c]["area"] * k for c, k in top["submodules"].items()))
    assert sum(m["own_area"] * m["instances"] for m in mods.values()) == pytest.approx(rep["area"]["total"]["area"])
    if sta_flow.sta_binary():
        timed = rep["timing"]["modules"]
        assert timed[pe[0]]["instances"] == rows * lanes and timed[pe[0]]["fmax_mhz"] > 0
        # the flat run includes every module's paths: it is not faster than any module alone
        assert rep["timing"]["fmax_mhz"] <= min(t["fmax_mhz"] for t in timed.values() if t["fmax_mhz"]) * 1.01
        assert "## Timing per distinct module" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("key", ["nangate45", "sky130hd"])
def test_cut_down_core_blocks_split_logic_and_macros(tmp_path, key):
    """bench-core's synthesis entry of the cut-down core: per block and in total, area = logic +
    macros; the token buffers' memories are on macros; the JSON keys of the schema."""
    if not _have(key):
        pytest.skip(f"needs ../shared/pdk ({key})")
    from elmoe3d.commands.bench_core import CUT_DOWN, SYNTH_CLOCK_NS, synthesize_blocks
    syn = synthesize_blocks(key, SYNTH_CLOCK_NS[key], tmp_path, config=CUT_DOWN, log=None)
    assert syn["area_um2"] == pytest.approx(syn["logic_area_um2"] + syn["macro_area_um2"])
    assert syn["macro_area_um2"] > 0 and syn["memories"].startswith("SRAM macros")
    for name, b in syn["blocks"].items():
        assert b["area_um2"] == pytest.approx(b["logic_area_um2"] + b["macro_area_um2"]), name
    assert sum(b["area_um2"] for b in syn["blocks"].values()) <= syn["area_um2"] * (1 + 1e-9)
    assert sum(b["macro_area_um2"] for b in syn["blocks"].values()) == pytest.approx(syn["macro_area_um2"])
    for k in ("clock_ns", "config", "area_um2", "logic_area_um2", "macro_area_um2", "blocks"):
        assert k in syn
    if "fmax_mhz" in syn:
        assert syn["fmax_mhz"] > 0 and "Startpoint" in syn["critical_path"]


@pytest.mark.parametrize("slack, fmax", [("0.5000", 1000 / 2.0), ("-1.5000", 1000 / 4.0)])
def test_timing_kept_when_opensta_stops_before_power(tmp_path, slack, fmax):
    """OpenSTA has crashed in report_power on the whole core: the slack it printed still gives
    Fmax and the critical path; a log without a slack re-raises the error."""
    from elmoe3d.errors import UserError
    from elmoe3d.synth.flow import _timing_without_power
    (tmp_path / "sta.log").write_text(f"@@checks\nStartpoint: a\nEndpoint: b\n@@slack\nworst slack {slack}\n"
                                      "tns 0.0000\n@@power\n")
    t = _timing_without_power(tmp_path, 2.5, UserError("crashed"))
    assert t["fmax_mhz"] == pytest.approx(fmax) and t["power_mw"] is None and t["met"] == (float(slack) >= 0)
    assert "Endpoint: b" in (tmp_path / "timing.rpt").read_text()
    (tmp_path / "sta.log").write_text("Segmentation fault\n")
    with pytest.raises(UserError, match="crashed"):
        _timing_without_power(tmp_path, 2.5, UserError("crashed"))


def test_design_that_does_not_flatten_keeps_area_and_per_module_timing(tmp_path, monkeypatch):
    """The default core's flat netlist exceeds the WebAssembly Yosys' 4 GiB in `flatten`: the
    hierarchical area (written before) is kept, each module is timed alone, and the report says
    that the paths between modules are not timed. The failure is provoked after `flatten`."""
    if not _have("nangate45"):
        pytest.skip("needs ../shared/pdk (nangate45)")
    from elmoe3d.synth import flow, sta_flow, yosys_flow
    real = yosys_flow.yosys_script
    monkeypatch.setattr(yosys_flow, "yosys_script",
                        lambda *a, **k: real(*a, **k).replace("\nflatten\n", "\nflatten\nno_such_command\n"))
    rep = flow.synthesize("stream_fifo", {"width": 16, "depth": 17}, tmp_path, liberty="nangate45", clock_ns=5.0,
                          log=None)
    tot = rep["area"]["total"]
    assert tot["macros"] and tot["area"] == pytest.approx(tot["logic_area"] + tot["macro_area"])
    assert rep["area"]["netlist"] is None and not (tmp_path / "netlist.v").exists()
    md = (tmp_path / "report.md").read_text()
    assert "not timed flat" in md and "paths between modules are not timed" in md
    if sta_flow.sta_binary():
        assert rep["timing"]["fmax_mhz"] is None and rep["power_mw"] is None
        assert rep["timing"]["modules"]["stream_fifo.fifo"]["fmax_mhz"] > 0
