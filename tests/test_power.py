"""Power from simulated activity (synth/power.py): the SAIF and VCD readers on tiny known dumps,
the difference of two dumps, and a small block's power from a short simulated dump against the
flat 0.2 figure (it differs, and an idle input draws less)."""

import random

import pytest
from amaranth import Module, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from elmoe3d.errors import UserError
from elmoe3d.synth import flow, power
from elmoe3d.toolchain import have, liberty_path

TINY_VCD = """$timescale 1 ns $end
$scope module top $end
$var wire 1 ! clk $end
$var wire 3 " a [2:0] $end
$scope module sub $end
$var wire 1 # en $end
$upscope $end
$upscope $end
$enddefinitions $end
#0
$dumpvars
0!
b101 "
1#
$end
#5
1!
#10
0!
b100 "
#15
1!
#20
0!
b000 "
0#
#25
1!
#30
0!
b111 "
#40
"""

TINY_SAIF = r"""(SAIFILE
(SAIFVERSION "2.0")
(DIRECTION "backward")
(DIVIDER / )
(TIMESCALE 1ps)
(DURATION 100)
 (INSTANCE top
  (NET
   (clk (T0 50) (T1 50) (TZ 0) (TX 0) (TB 0) (TC 20))
   (a\[0\] (T0 40) (T1 60) (TZ 0) (TX 0) (TB 0) (TC 4))
   (a\[1\] (T0 100) (T1 0) (TZ 0) (TX 0) (TB 0) (TC 0))
  )
  (INSTANCE u
   (NET
    (q (T0 25) (T1 75) (TZ 0) (TX 0) (TB 0) (TC 6))
   )
  )
 )
)
"""


def test_vcd_reader_counts_toggles_and_time_at_one(tmp_path):
    path = tmp_path / "t.vcd"
    path.write_text(TINY_VCD)
    act = power.read_vcd(path)
    assert act.duration == 40 and act.timescale_s == pytest.approx(1e-9)
    top, sub = act.nets["top"], act.nets["top/sub"]
    # the first values (dumpvars) set the nets and are not toggles
    a = {i: top[f"a[{i}]"] for i in range(3)}
    assert [a[i][0] for i in range(3)] == [2, 1, 2]          # counted by hand from the dump above
    assert a[2][1] == 20 + 10 and a[0][1] == 10 + 10 and a[1][1] == 10
    assert sub["en"] == (1, 20)
    assert act.cycles() == top["clk"][0] / 2 == 3


def test_saif_reader_nested_instances_and_rates(tmp_path):
    path = tmp_path / "t.saif"
    path.write_text(TINY_SAIF)
    act = power.read_saif(path)
    assert act.duration == 100 and act.timescale_s == pytest.approx(1e-12)
    assert act.nets["top"]["a[0]"] == (4, 60) and act.nets["top/u"]["q"] == (6, 75)
    rates = power.port_rates(act, "top")
    assert act.cycles() == 10
    assert rates["a"] == pytest.approx(((4 + 0) / 2 / 10, (60 + 0) / 2 / 100))
    assert power.port_rates(act, "u")["q"] == pytest.approx((0.6, 0.75))


def test_difference_cancels_a_shared_prefix(tmp_path):
    path = tmp_path / "t.saif"
    path.write_text(TINY_SAIF)
    late = power.read_saif(path)
    early = power.read_saif(path)
    early.duration = 40
    early.nets["top"]["clk"] = (8, 20)
    early.nets["top"]["a[0]"] = (1, 30)
    d = power.difference(late, early)
    assert d.duration == 60 and d.nets["top"]["clk"] == (12, 30) and d.nets["top"]["a[0]"] == (3, 30)
    assert d.cycles() == 6
    with pytest.raises(UserError):
        power.difference(early, late)


@pytest.mark.parametrize("text, suffix", [("not a dump", ".saif"), ("$var wire 1 ! a $end\n", ".vcd"),
                                          ("(SAIFILE (DURATION 1))", ".txt")])
def test_bad_activity_files_are_refused_in_one_line(tmp_path, text, suffix):
    path = tmp_path / f"x{suffix}"
    path.write_text(text)
    with pytest.raises(UserError):
        power.load_activity(path)
    with pytest.raises(UserError):
        power.load_activity(tmp_path / "missing.saif")


def test_unknown_scope_is_refused(tmp_path):
    path = tmp_path / "t.saif"
    path.write_text(TINY_SAIF)
    with pytest.raises(UserError, match="instance"):
        power.port_rates(power.read_saif(path), "core/nothing")


POWER_LOG = """@@power
Group                    Internal    Switching      Leakage        Total
                            Power        Power        Power        Power
------------------------------------------------------------------------
Sequential           1.000000e-03 2.000000e-04 1.000000e-05 1.210000e-03  20.0%
Combinational        4.000000e-03 5.000000e-04 3.000000e-04 4.800000e-03  80.0%
------------------------------------------------------------------------
Total                5.000000e-03 7.000000e-04 3.100000e-04 6.010000e-03 100.0%
@@macros 2
     Internal    Switching      Leakage        Total
        Power        Power        Power        Power
----------------------------------------------------
 2.000000e-03 1.000000e-07 1.000000e-04 2.100100e-03 buf.0.0
 1.000000e-03 0.000000e+00 1.000000e-04 1.100000e-03 buf.1.0
@@end
"""

TINY_NETLIST = """module blk(clk, rst, a, b, q);
  input clk;
  input rst;
  input [3:0] a;
  input \\b$12 ;
  output q;
endmodule
"""


def test_power_log_totals_and_macro_share():
    res = power.parse_power_log(POWER_LOG)
    assert res == pytest.approx({"internal": 5.0, "switching": 0.7, "leakage": 0.31, "total": 6.01, "macros": 3.2001})
    no_macros = power.parse_power_log(POWER_LOG.split("@@macros")[0] + "@@end\n")
    assert no_macros["macros"] == 0 and no_macros["total"] == pytest.approx(6.01)
    assert power.parse_power_log("@@power\nError: report_power failed\n@@end") is None


def test_block_script_annotates_ports_and_reports_macros(tmp_path):
    net = tmp_path / "n.v"
    net.write_text(TINY_NETLIST)
    lib = tmp_path / "ram.lib"
    lib.write_text("library (x) {\n  cell (ram_64x32) {\n  }\n  cell(\"ram_8x8\") {\n  }\n}\n")
    assert power.macro_cells([lib]) == ["ram_64x32", "ram_8x8"]
    rates = {"a": (0.25, 0.4), "b": (0.5, 0.5)}
    text = power.block_script(net, tmp_path / "std.lib", "blk", 2.0, rates, extra_libs=[lib])
    assert "get_ports {a[*]}] -activity 0.25 -duty 0.4" in text
    assert "get_ports {b$12}] -activity 0.5 -duty 0.5" in text        # a port Yosys renamed: its RTL net
    assert "get_ports {rst}] -activity 0 -duty 0" in text
    assert "ram_64x32 ram_8x8" in text and "@@macros" in text
    assert "@@macros" not in power.block_script(net, tmp_path / "std.lib", "blk", 2.0, rates)
    assert power.annotated_ports(net, "blk", rates) == (2, 2)
    assert power.annotated_ports(net, "blk", {"a": (0.1, 0.5)}) == (1, 2)


def test_a_block_whose_propagation_crashes_opensta_falls_back_to_global_activity(tmp_path, monkeypatch):
    """OpenSTA dying on a signal in a block's run: reran once, then the block's nets all at the
    mean rate of its inputs (``-global``), said in the result; other failures stay errors."""
    import subprocess
    net = tmp_path / "n.v"
    net.write_text(TINY_NETLIST)
    runs = []

    def fake_run(cmd, cwd, **kw):
        text = (cwd / cmd[-1]).read_text()
        runs.append("-global" in text)
        if "-global" in text:
            assert "-global -activity 0.375 -duty 0.45" in text     # (0.25 + 0.5) / 2, (0.4 + 0.5) / 2
            return subprocess.CompletedProcess(cmd, 0, POWER_LOG, "")
        return subprocess.CompletedProcess(cmd, -11, "@@power\n", "")

    monkeypatch.setattr(power.sta_flow, "sta_binary", lambda: "sta")
    monkeypatch.setattr(power.subprocess, "run", fake_run)
    res = power.run_block_power(net, tmp_path / "std.lib", "blk", tmp_path / "p", clock_ns=2.0,
                                rates={"a": (0.25, 0.4), "b": (0.5, 0.5)}, tag="t")
    assert runs == [False, False, True]
    assert res["total"] == pytest.approx(6.01) and "crashed" in res["fallback"]
    monkeypatch.setattr(power.subprocess, "run",
                        lambda cmd, cwd, **kw: subprocess.CompletedProcess(cmd, 1, "Error: no cell x\n", ""))
    with pytest.raises(UserError, match="no cell x"):
        power.run_block_power(net, tmp_path / "std.lib", "blk", tmp_path / "q", clock_ns=2.0, tag="t")


class Mac(wiring.Component):
    """``acc += a * b`` when ``en``."""

    def __init__(self):
        super().__init__({"a": In(signed(8)), "b": In(signed(8)), "en": In(1), "acc": Out(signed(20))})

    def elaborate(self, platform):
        m = Module()
        with m.If(self.en):
            m.d.sync += self.acc.eq(self.acc + self.a * self.b)
        return m


def _dump(path, mode, cycles=120):
    """A VCD of the Mac driven for ``cycles``: ``random`` operands, ``idle_b`` (b held), ``idle``
    (both held)."""
    dut = Mac()
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    rng = random.Random(3)

    async def bench(ctx):
        ctx.set(dut.en, 1)
        ctx.set(dut.b, 77)
        for _ in range(cycles):
            if mode != "idle":
                ctx.set(dut.a, rng.randrange(-128, 128))
            if mode == "random":
                ctx.set(dut.b, rng.randrange(-128, 128))
            await ctx.tick()

    sim.add_testbench(bench)
    with sim.write_vcd(str(path)):
        sim.run()
    return power.load_activity(path)


@pytest.fixture(scope="module")
def mac_netlist(tmp_path_factory):
    if not have("sta"):
        pytest.skip("OpenSTA ('sta') is not installed")
    out = tmp_path_factory.mktemp("mac")
    flow.synthesize_component(Mac(), "mac", out, liberty="nangate45", clock_ns=2.0, log=None)
    return out


@pytest.mark.synth
def test_block_power_follows_simulated_activity(mac_netlist, tmp_path):
    lib = liberty_path("nangate45")
    net = mac_netlist / "netlist_hier.v"
    totals = {}
    for mode in ("random", "idle_b", "idle"):
        act = _dump(tmp_path / f"{mode}.vcd", mode)
        rates = power.port_rates(act, "top")
        assert rates["clk"][0] == pytest.approx(2.0, rel=0.02)
        totals[mode] = power.run_block_power(net, lib, "mac", tmp_path, clock_ns=2.0, rates=rates, tag=mode)
    flat = power.run_block_power(net, lib, "mac", tmp_path, clock_ns=2.0, tag="flat")
    # random 8-bit operands toggle about half their bits per cycle: more than the flat 0.2
    assert totals["random"]["total"] > 1.2 * flat["total"]
    # holding inputs still draws less, down to the clock and leakage alone
    assert totals["random"]["total"] > totals["idle_b"]["total"] > totals["idle"]["total"]
    assert totals["idle"]["switching"] < 0.05 * totals["random"]["switching"]
    # leakage does not depend on activity
    assert len({round(t["leakage"], 9) for t in (*totals.values(), flat)}) == 1


@pytest.mark.slow
@pytest.mark.synth
def test_core_power_from_simulated_passes(tmp_path):
    """bench-core's power entry end to end (about 7 CPU minutes with the two Verilator builds):
    a verify and a draft pass of the shipped model on the native bench of the small core (2
    lanes) with SAIF dumps, the cut-down core synthesized in Nangate 45, every block's power from
    the dumps beside the flat 0.2 figures."""
    if not have("sta"):
        pytest.skip("OpenSTA ('sta') is not installed")
    from elmoe3d.commands._power import power_entry, simulate_passes
    from elmoe3d.commands.bench_core import CUT_DOWN, SYNTH_CLOCK_NS, synthesize_blocks
    from elmoe3d.commands.sd import _default_model
    from elmoe3d.sim.lm.model import MoELM
    model_path = _default_model("moe_lm.npz")
    passes = simulate_passes({"preset": "small", "lanes": 2}, MoELM.load(model_path), model_path, 0,
                             tmp_path / "activity", progress=lambda *a, **k: None)
    assert [p["mode"] for p in passes] == ["full", "draft"]
    for p in passes:
        cyc = p["activity"].cycles()
        assert p["cycles"] <= cyc < 1.2 * p["cycles"] + 1000   # the dump's difference spans the pass
        # traced: the bench, the core and its blocks, nothing deeper (Verilator inlines the core)
        scopes = set(p["activity"].nets)
        assert "core_bench/u_core/ex" in scopes and max(x.count("/") for x in scopes) == 2
    syn = synthesize_blocks("nangate45", SYNTH_CLOCK_NS["nangate45"], tmp_path / "synth", config=CUT_DOWN,
                            power=lambda entry, d: power_entry(d, "nangate45", entry["fmax_mhz"], passes))
    pw, flat = syn["power"], syn["power"]["at_activity_0.2"]
    # every block instance of the synthesized core has a figure (synthesize_blocks names blocks by module)
    instances = power.blocks_of(syn["files"]["netlist_hier"], "core")
    assert set(pw["blocks_mw"]) == set(instances)
    assert {m.split(".", 1)[1] if m.startswith("core.") else m for m in instances.values()} == set(syn["blocks"])
    assert pw["leakage_mw"] == pytest.approx(flat["leakage_mw"])
    assert abs(pw["total_mw"] - flat["total_mw"]) > 0.05 * flat["total_mw"]
    verify, draft = (p["name"] for p in passes)
    assert pw["energy_per_pass_nj"][draft] < pw["energy_per_pass_nj"][verify]
    assert set(pw["pj_per_mac"]) == {"draft", "full"} and pw["pj_per_byte_onchip"] > 0
    # every block's inputs found in the dump (by port name, across the two configurations)
    assert all(0 < a <= n for a, n in pw["ports_annotated"].values()), pw["ports_annotated"]
    assert 0 < pw["macros_mw"] < pw["total_mw"] and syn["macro_area_um2"] > 0


@pytest.mark.slow
def test_saif_dump_of_a_bench_has_each_block(tmp_path):
    """``waves="saif"``: the vector unit's bench run with a SAIF dump of its top and its four
    blocks (two levels), the clock at 2 toggles per cycle, the requantizer's input ports active."""
    from elmoe3d.sim.benches.launch import run_top_bench
    from elmoe3d.toolchain import simulator_missing
    if simulator_missing("verilator"):
        pytest.skip(simulator_missing("verilator"))
    run_top_bench("vector_unit", {"width": 2, "max_experts": 6, "max_k": 3}, tmp_path, seeds=(1,), quick=True,
                  waves="saif", quick_build=True)
    act = power.load_activity(tmp_path / "dump.saif")
    assert {f"vector_unit/{b}" for b in ("requant", "swiglu", "router", "combine")} <= set(act.nets)
    assert not any(p.count("/") > 1 for p in act.nets)
    rates = power.port_rates(act, "vector_unit/requant")
    assert rates["clk"][0] == pytest.approx(2.0, rel=0.01)
    assert 0 < rates["i_data__valid"][0] < 1 and 0 < rates["i_data__payload"][0] < 1
