"""The synthesis flow (Yosys + OpenSTA): area per module, slack/Fmax, power, energy per MAC.

Designs are tiny multiply-accumulate components defined here, so the tests do not depend on
the accelerator's tops and each synthesis takes a second or two.
"""

import gzip
import json
import math
from pathlib import Path

import pytest
from amaranth import Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from elmoe3d.errors import UserError
from elmoe3d.toolchain import have, shipped_liberty
from elmoe3d.synth import flow, sta_flow, yosys_flow

pytestmark = pytest.mark.synth

LIBS = ["sky130hd", "nangate45"]
needs_sta = pytest.mark.skipif(not have("sta"), reason="OpenSTA ('sta') is not installed")


class Mac(wiring.Component):
    """``acc += a * b`` when ``en``; ``out_regs - 1`` more register stages delay the output."""

    def __init__(self, *, a_bits=4, b_bits=4, acc_bits=12, out_regs=1):
        self.out_regs = out_regs
        super().__init__({"a": In(signed(a_bits)), "b": In(signed(b_bits)), "en": In(1),
                          "acc": Out(signed(acc_bits))})

    def elaborate(self, platform):
        m = Module()
        stages = [self.acc] + [Signal(self.acc.shape(), name=f"stage_{i}") for i in range(1, self.out_regs)]
        acc = stages[-1]
        with m.If(self.en):
            m.d.sync += acc.eq(acc + self.a * self.b)
        for dst, src in zip(stages, stages[1:]):
            m.d.sync += dst.eq(src)
        return m


class Pair(wiring.Component):
    """Two MACs as submodules plus the pair's own adder and register."""

    a: In(signed(4))
    b: In(signed(4))
    en: In(1)
    total: Out(signed(13))

    def elaborate(self, platform):
        m = Module()
        macs = [Mac() for _ in range(2)]
        for i, mac in enumerate(macs):
            m.submodules[f"mac_{i}"] = mac
            m.d.comb += [mac.a.eq(self.a), mac.b.eq(self.b if i == 0 else -self.b), mac.en.eq(self.en)]
        m.d.sync += self.total.eq(macs[0].acc + macs[1].acc)
        return m


def _liberty(name):
    lib = shipped_liberty(name)
    if lib is None:
        pytest.skip(f"../shared/pdk has no {name} Liberty file")
    return lib


@pytest.fixture(scope="module", params=LIBS)
def pair_report(request, tmp_path_factory):
    lib = _liberty(request.param)
    out = tmp_path_factory.mktemp(f"pair_{request.param}")
    return flow.synthesize_component(Pair(), "pair", out, liberty=lib, clock_ns=5.0, activity=0.2,
                                     macs_per_cycle={"draft": 2, "full": 1}, log=None)


def test_area_per_module_with_sequential_share(pair_report):
    area = pair_report["area"]
    assert area["unit"] == "um^2" and not area["unmapped"]
    mods = area["modules"]
    assert set(mods) == {"pair", "pair.mac_0", "pair.mac_1"}
    total = area["total"]
    assert 0 < total["sequential_area"] < total["area"]
    assert total["sequential_share"] == pytest.approx(total["sequential_area"] / total["area"])
    for name in ("pair.mac_0", "pair.mac_1"):
        assert 0 < mods[name]["sequential_area"] < mods[name]["area"]
    top = mods["pair"]
    assert top["own_area"] > 0 and top["own_sequential_area"] > 0       # the pair's adder and register
    assert top["area"] == pytest.approx(top["own_area"] + mods["pair.mac_0"]["area"] + mods["pair.mac_1"]["area"])
    assert total["area"] == pytest.approx(top["area"])
    group = {g["module"]: g for g in area["groups"]}["pair.mac_*"]
    assert group["instances"] == 2
    assert group["area"] == pytest.approx(mods["pair.mac_0"]["area"] + mods["pair.mac_1"]["area"])


def test_sky130_excludes_dont_use_cells(tmp_path):
    lib = _liberty("sky130hd")
    area = yosys_flow.synthesize_verilog(_write(Mac(), "mac", tmp_path), "mac", tmp_path, liberty=lib)
    assert "*lpflow*" in area["dont_use"] and "*conb*" in area["dont_use"]
    assert area["driving_cell"] == "sky130_fd_sc_hd__inv_2"        # ABC buffers and sizes
    assert "-constr abc.constr" in (tmp_path / "synth.ys").read_text()
    used = {c for m in area["modules"].values() for c in m["cell_types"]}
    assert used and all(c.startswith("sky130_fd_sc_hd__") for c in used)
    assert not any(p in c for c in used for p in ("lpflow", "probe", "clkbuf", "conb", "einv", "dlygate"))


@pytest.mark.parametrize("lib_name", LIBS)
def test_more_registers_more_sequential_area(lib_name, tmp_path):
    lib = _liberty(lib_name)
    small = yosys_flow.synthesize_verilog(_write(Mac(out_regs=1), "mac", tmp_path / "a"), "mac",
                                          tmp_path / "a", liberty=lib)
    big = yosys_flow.synthesize_verilog(_write(Mac(out_regs=3), "mac", tmp_path / "b"), "mac",
                                        tmp_path / "b", liberty=lib)
    assert big["total"]["sequential_area"] > 2.5 * small["total"]["sequential_area"]
    assert big["total"]["area"] > small["total"]["area"]


@needs_sta
def test_slack_and_fmax_follow_the_clock(pair_report, tmp_path):
    timing = pair_report["timing"]
    slack = timing["worst_slack_ns"]
    assert timing["clock_ns"] == 5.0 and timing["met"] == (slack >= 0)
    assert timing["fmax_mhz"] == pytest.approx(1000.0 / (5.0 - slack))
    lib, netlist = pair_report["liberty"], pair_report["area"]["netlist"]
    tight = sta_flow.run_sta(netlist, lib, "pair", tmp_path / "tight", clock_ns=0.1)
    loose = sta_flow.run_sta(netlist, lib, "pair", tmp_path / "loose", clock_ns=20.0)
    assert tight["worst_slack_ns"] < slack < loose["worst_slack_ns"]
    # the same netlist has the same critical path: slack moves with the period, Fmax stays
    assert loose["worst_slack_ns"] - tight["worst_slack_ns"] == pytest.approx(19.9, abs=0.01)
    assert tight["fmax_mhz"] == pytest.approx(timing["fmax_mhz"], rel=1e-3)
    assert not tight["met"] and tight["tns_ns"] <= tight["wns_ns"] == tight["worst_slack_ns"] < 0
    assert loose["met"] and loose["tns_ns"] == loose["wns_ns"] == 0
    assert "Startpoint" in (tmp_path / "tight" / "timing.rpt").read_text()


@needs_sta
def test_power_rises_with_activity(pair_report, tmp_path):
    lib, netlist = pair_report["liberty"], pair_report["area"]["netlist"]
    powers = [sta_flow.run_sta(netlist, lib, "pair", tmp_path / str(a), clock_ns=5.0, activity=a)["power_mw"]
              for a in (0.05, 0.2, 0.5)]
    totals = [p["total"] for p in powers]
    assert 0 < totals[0] < totals[1] < totals[2]
    assert totals[1] == pytest.approx(pair_report["power_mw"]["total"])   # same run, same answer
    for p in powers:
        assert p["total"] == pytest.approx(p["internal"] + p["switching"] + p["leakage"], rel=1e-3)
    assert pair_report["power_mw"]["static_ports"] == ["rst"]
    idle = sta_flow.run_sta(netlist, lib, "pair", tmp_path / "idle", clock_ns=5.0, activity=0.2, idle_ports=["a", "b*"])
    assert idle["static_ports"] == ["rst", "a", "b"] and idle["power_mw"]["total"] < totals[1]
    with pytest.raises(UserError, match=r"--idle total: no input port of pair matches; its inputs: "):
        sta_flow.run_sta(netlist, lib, "pair", tmp_path / "x", idle_ports=["total"])


@needs_sta
def test_energy_per_mac(pair_report):
    power, energy = pair_report["power_mw"]["total"], pair_report["energy"]
    assert energy["per_cycle_pj"] == pytest.approx(power * 5.0)        # mW x ns = pJ
    assert energy["per_mac_pj"]["draft"] == pytest.approx(power * 5.0 / 2)
    assert energy["per_mac_pj"]["full"] == pytest.approx(power * 5.0)
    # P / (f * MACs per cycle), spelled out
    f_hz = 1 / 5e-9
    assert energy["per_mac_pj"]["draft"] == pytest.approx(power * 1e-3 / (f_hz * 2) * 1e12)


def test_energy_per_mac_arithmetic():
    e = flow.energy_per_mac(10.0, 2.0, {"draft": 256, "full": 128, "int8": 256})
    assert e["per_cycle_pj"] == 20.0
    assert e["per_mac_pj"] == {"draft": 20 / 256, "full": 20 / 128, "int8": 20 / 256}
    assert flow.energy_per_mac(10.0, 2.0, None)["per_mac_pj"] is None
    with pytest.raises(ValueError, match="must be > 0"):
        flow.energy_per_mac(1.0, 1.0, {"full": 0})


@needs_sta
def test_markdown_report_holds_the_figures(pair_report):
    md = (Path(pair_report["out_dir"]) / "report.md").read_text()
    assert md == flow.format_markdown(pair_report)
    t, p, e = pair_report["timing"], pair_report["power_mw"], pair_report["energy"]
    area = pair_report["area"]["total"]
    assert f"{area['area']:,.1f}".replace(",", " ") + " um^2" in md
    assert f"({100 * area['sequential_share']:.1f} %)" in md
    assert f"{t['worst_slack_ns']:.3f} ns" in md and f"{t['fmax_mhz']:.1f} MHz" in md
    assert f"{p['total']:.4g} mW" in md and "activity 0.2" in md
    assert f"| draft | 2 | {e['per_mac_pj']['draft']:.4g} |" in md
    assert "| `pair.mac_*` | 2 |" in md
    saved = json.loads((Path(pair_report["out_dir"]) / "report.json").read_text())
    assert saved["area"]["total"]["area"] == pytest.approx(area["area"])
    assert saved["timing"]["worst_slack_ns"] == t["worst_slack_ns"]


def test_technology_independent_area(tmp_path):
    report = flow.synthesize_component(Pair(), "pair", tmp_path, log=None)
    area = report["area"]
    assert area["unit"] == "NAND2 eq." and not area["unweighted_cells"]
    assert 0 < area["total"]["sequential_area"] < area["total"]["area"]
    assert set(area["modules"]) == {"pair", "pair.mac_0", "pair.mac_1"}
    assert report["timing"] is None and report["power_mw"] is None and report["energy"] is None
    assert report["notes"] == [flow.NO_LIBERTY]
    cells = area["cells_by_type"]
    assert sum(cells.values()) == area["total"]["cells"] and all(c.startswith("$_") for c in cells)
    md = (tmp_path / "report.md").read_text()
    assert "Most used cells: `$_" in md
    assert "NAND2 eq." in md and "Timing and power need a Liberty file" in md
    # 12-bit accumulators x2 + 13-bit output: 37 flip-flops with enable or reset
    dff, _ = yosys_flow.nand2_weight("$_DFF_P_")
    assert area["total"]["sequential_area"] == pytest.approx(37 * dff)


def test_long_runs_report_progress(tmp_path, monkeypatch):
    monkeypatch.setattr(yosys_flow, "HEARTBEAT_S", 0.2)
    lines = []
    yosys_flow.synthesize_verilog(_write(Mac(), "mac", tmp_path), "mac", tmp_path, log=lines.append)
    assert lines[0].startswith("running Yosys on mac") and lines[-1].startswith("Yosys finished in")
    assert any(line.startswith("Yosys still running") for line in lines[1:-1]), lines


def test_driving_cell_choice(tmp_path):
    lib = tmp_path / "x.lib"
    lib.write_text("library (x) {\n  cell (NAND2_X1) { }\n  cell (INV_X1) { }\n  cell (INV_X2) { }\n"
                   "  cell (CLKINV_X2) { }\n}\n")
    assert yosys_flow.driving_cell(lib) == "INV_X2"
    assert yosys_flow.driving_cell(lib, ["INV_X2"]) == "INV_X1"
    lib.write_text("library (x) {\n  cell (NAND2_X1) { }\n}\n")
    assert yosys_flow.driving_cell(lib) is None


def test_nand2_weights():
    assert yosys_flow.nand2_weight("$_NAND_") == (1.0, 0.0)
    assert yosys_flow.nand2_weight("$_NOT_")[0] == pytest.approx(0.532 / 0.798)
    dff, seq = yosys_flow.nand2_weight("$_DFF_P_")
    assert dff == seq == pytest.approx(4.522 / 0.798)
    total, seq = yosys_flow.nand2_weight("$_SDFFE_PP0P_")          # enable MUX + reset gate outside
    assert seq == pytest.approx(dff) and total == pytest.approx(dff + (1.862 + 1.064) / 0.798)
    assert yosys_flow.nand2_weight("$_DFF_PP0_")[1] == pytest.approx(5.320 / 0.798)   # async reset
    assert yosys_flow.nand2_weight("$_DLATCH_P_")[1] > 0
    assert yosys_flow.nand2_weight("$mystery") == (None, 0.0)


def test_report_without_opensta(tmp_path, monkeypatch):
    lib = _liberty("nangate45")
    monkeypatch.setattr(sta_flow, "sta_binary", lambda: None)
    report = flow.synthesize_component(Mac(), "mac", tmp_path, liberty=lib, log=None)
    assert report["area"]["total"]["area"] > 0 and report["timing"] is None
    assert any("need OpenSTA" in n for n in report["notes"])
    assert "need OpenSTA" in (tmp_path / "report.md").read_text()
    with pytest.raises(UserError, match="need OpenSTA"):
        sta_flow.run_sta(report["area"]["netlist"], lib, "mac", tmp_path)


def test_malformed_liberty_files(tmp_path):
    text = tmp_path / "notes.lib"
    text.write_text("this is not a timing library\n" * 10)
    corrupt = tmp_path / "corrupt.lib.gz"
    corrupt.write_bytes(gzip.compress(b"library (x) {")[:12])
    for bad, fragment in [(text, "does not look like a Liberty file"), (corrupt, "not a readable gzip"),
                          (tmp_path / "absent.lib", "Liberty file not found")]:
        with pytest.raises(UserError, match=fragment):
            flow.synthesize_component(Mac(), "mac", tmp_path / "out", liberty=bad, log=None)
    assert not (tmp_path / "out" / "mac.v").exists()          # refused before any work


def test_truncated_liberty_is_refused_before_yosys(tmp_path):
    # Once refused by Yosys; the Liberty check (synth/flow.py) now names the cause before any work.
    broken = tmp_path / "broken.lib"
    broken.write_text("library (broken) {\n  cell (X) { area : \n")
    with pytest.raises(UserError, match=r"is truncated or malformed: 2 '\{' against 0 '\}'"):
        flow.synthesize_component(Mac(), "mac", tmp_path / "out", liberty=broken, log=None)
    assert not (tmp_path / "out" / "mac.v").exists()


def test_bad_settings_and_verilog(tmp_path):
    with pytest.raises(UserError, match="clock period"):
        flow.synthesize_component(Mac(), "mac", tmp_path, clock_ns=0, log=None)
    with pytest.raises(UserError, match="activity"):
        flow.synthesize_component(Mac(), "mac", tmp_path, activity=1.5, log=None)
    with pytest.raises(UserError, match="Verilog file not found"):
        flow.synthesize_verilog(tmp_path / "nope.v", "nope", tmp_path, log=None)
    bad = tmp_path / "bad.v"
    bad.write_text("module bad(input a, output b);\n assign b = ;\nendmodule\n")
    with pytest.raises(UserError, match="Yosys failed: .*ERROR: syntax error"):
        flow.synthesize_verilog(bad, "bad", tmp_path, log=None)


@needs_sta
def test_combinational_design_gets_a_virtual_clock(tmp_path):
    lib = _liberty("nangate45")
    v = tmp_path / "comb.v"
    v.write_text("module comb(input [3:0] a, input [3:0] b, output [7:0] p);\n"
                 "  assign p = a * b;\nendmodule\n")
    report = flow.synthesize_verilog(v, "comb", tmp_path / "out", liberty=lib, clock_ns=2.0, log=None)
    assert report["area"]["total"]["sequential_area"] == 0
    assert report["timing"]["clock_port"] is None and report["timing"]["met"]
    assert math.isfinite(report["timing"]["fmax_mhz"]) and report["timing"]["fmax_mhz"] > 500
    assert any("virtual clock" in n for n in report["notes"])


def _write(component, name, out_dir):
    from elmoe3d.hw.verilog import write_verilog
    return write_verilog(component, name, out_dir, {})


class WideEnable(wiring.Component):
    """A 512-bit register loaded when two inputs are equal: one gate's output enables every bit."""

    def __init__(self, width=512):
        super().__init__({"d": In(width), "a": In(8), "b": In(8), "q": Out(width)})

    def elaborate(self, platform):
        m = Module()
        reg = Signal(len(self.d), reset_less=True)      # no reset: an enable flip-flop fits it (as a memory read register)
        with m.If(self.a == self.b):
            m.d.sync += reg.eq(self.d)
        m.d.comb += self.q.eq(reg)
        return m


@needs_sta
def test_a_wide_enable_is_buffered_in_sky130(tmp_path):
    """The enable reaches the bits through multiplexers ABC maps and buffers, not the enable pins
    of sky130's enable flip-flops (outside ABC's view: one small gate drove them all, about 30 ns
    at 512 bits)."""
    lib = _liberty("sky130hd")
    report = flow.synthesize_component(WideEnable(), "wide", tmp_path, liberty=lib, clock_ns=10.0)
    assert "edfxtp" not in (tmp_path / "netlist.v").read_text()
    assert report["timing"]["met"], report["timing"]


class Copies(wiring.Component):
    """``n`` copies of one 8-bit register loaded on ``en``, each feeding its own output:
    ``held=True`` through :func:`~elmoe3d.hw.held_copy.held_copy`, else plain enable registers."""

    def __init__(self, held, n=4):
        self.held, self.n = held, n
        super().__init__({"en": In(1), "d": In(8), **{f"q{i}": Out(8) for i in range(n)}})

    def elaborate(self, platform):
        from elmoe3d.hw.held_copy import held_copy
        m = Module()
        for i in range(self.n):
            if self.held:
                reg = held_copy(m, self.en, self.d, f"copy{i}")
            else:
                reg = Signal(8, name=f"copy{i}")
                with m.If(self.en):
                    m.d.sync += reg.eq(self.d)
            m.d.comb += getattr(self, f"q{i}").eq(reg)
        return m


@pytest.mark.parametrize("held", [True, False])
def test_held_copies_stay_apart_and_plain_copies_merge(held, tmp_path):
    """Yosys merges registers with equal inputs; held_copy's copies stay four registers (what lets
    the PE array and the vector blocks give each row or element its own copy of a wide-fan-out
    register)."""
    report = flow.synthesize_component(Copies(held), "copies", tmp_path, log=None)
    flops = sum(n for c, n in report["area"]["cells_by_type"].items() if c.startswith(("$_DFF", "$_SDFF")))
    assert flops == (4 * 8 if held else 8)
