"""The generator at the paper's scale: repeated blocks are one Verilog module each
(``hw/verilog.leaf``), and simulating a core too large for this machine is refused up front
(``hw/sim_budget.py``)."""

import re
import subprocess
import sys
from collections import Counter

import pytest
from amaranth.back import verilog as amaranth_verilog

from elmoe3d.cli import main
from elmoe3d.config import PRESETS
from elmoe3d.errors import UserError
from elmoe3d.hw.pe_array import PEArray
from elmoe3d.hw.sim_budget import CALIBRATION, check_core_simulation, core_build_cost, core_macs
from elmoe3d.hw.token_buffer import TokenBuffer
from elmoe3d.hw.verilog import convert

MODULE = re.compile(r"^module (\S+?)\s*\(", re.M)


def modules(text):
    """Names of the module definitions in Verilog ``text``."""
    return MODULE.findall(text)


def instances(text, module):
    """How often ``module`` is instantiated in ``text``."""
    return len(re.findall(rf"^\s+{re.escape(module)} \S+ \(", text, re.M))


def test_array_is_one_module_per_distinct_block():
    """A 4 x 4 x 3 array: the top, one PE module (12 instances), one LSB-augment module (4)."""
    text = convert(PEArray(rows=4, cols=4, lanes=3), "pe_array")
    names = modules(text)
    assert names[0] == "pe_array" and len(names) == 3 == len(set(names))
    pe = next(n for n in names if n.startswith("elmoe3d_pe_"))
    aug = next(n for n in names if n.startswith("elmoe3d_lsbaugment_"))
    assert instances(text, pe) == 12 and instances(text, aug) == 4
    # Amaranth's own conversion writes one module per instance: 1 + 12 + 4
    plain = amaranth_verilog.convert(PEArray(rows=4, cols=4, lanes=3), name="pe_array", emit_src=False)
    assert len(modules(plain)) == 1 + 12 + 4
    # the count follows the distinct blocks, not the instances
    assert len(modules(convert(PEArray(rows=2, cols=4, lanes=1), "pe_array"))) == 3


def test_token_buffer_banks_are_one_module():
    text = convert(TokenBuffer(tokens=5, depth=6, width=3, elem=8), "buf")
    names = modules(text)
    assert len(names) == 2 and instances(text, names[1]) == 5


@pytest.mark.slow
def test_tiny_core_defines_each_block_once(tmp_path):
    """The tiny core: every module defined once; the PE, augment and bank modules instantiated
    as often as the configuration has them (slow: a conversion of the core; test_lint's tiny
    core lints the same text in the default run)."""
    from elmoe3d.hw.core import build_core
    cfg = PRESETS["tiny"]
    text = convert(build_core("tiny", max_k=4), "core")
    names = modules(text)
    assert names[0] == "core" and not [n for n, k in Counter(names).items() if k > 1]
    a = cfg.array
    pe = [n for n in names if n.startswith("elmoe3d_pe_")]
    aug = [n for n in names if n.startswith("elmoe3d_lsbaugment_")]
    banks = [n for n in names if n.startswith("elmoe3d_bank_")]
    assert len(pe) == 1 and instances(text, pe[0]) == a.rows * a.lanes
    assert len(aug) == 1 and instances(text, aug[0]) == a.rows
    # six token buffers of buffers.tokens banks each, of as many distinct (depth, bits) as there are
    assert sum(instances(text, b) for b in banks) == 6 * cfg.buffers.tokens
    assert len(banks) <= 6


def test_simulation_cost_is_estimated_from_the_calibration():
    tiny, small = PRESETS["tiny"], PRESETS["small"]
    assert core_macs(PRESETS["mixtral"]) == 64 * 64 * 16
    (_, _, x0, t0, m0), (_, _, x1, t1, m1) = CALIBRATION[0], CALIBRATION[-1]
    assert core_build_cost(tiny) == (t0, m0)                 # tiny is the first calibration point
    assert core_build_cost(small) == pytest.approx((t1, m1))   # small, 16 lanes, the second
    t, m = core_build_cost(PRESETS["mixtral"])
    assert t > t1 and m > m1
    check_core_simulation(small, "x", available=2 * m1)       # fits: no refusal
    with pytest.raises(UserError, match=r"bench-core: simulating the mixtral core .* CPU hours .* of memory"):
        check_core_simulation(PRESETS["mixtral"], "bench-core", available=m - 1, max_seconds=2 * t)
    with pytest.raises(UserError, match="the limits here are 0.0 hours"):
        check_core_simulation(small, "x", available=2 * m1, max_seconds=1)


@pytest.mark.parametrize("argv", [
    ["bench-core", "--no-synth", "--preset", "mixtral"],
    ["regress", "--top", "core", "--preset", "mixtral"],
])
def test_mixtral_simulation_is_refused_in_one_line(tmp_path, capsys, argv):
    out = tmp_path / "out"
    assert main([*argv, "-o", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "simulating the mixtral core" in lines[0] and "CPU hours" in lines[0]
    assert not out.exists()


@pytest.mark.slow
def test_mixtral_pe_array_generates_in_bounded_memory_and_lints(tmp_path):
    """The mixtral core's PE array (64 x 64 x 16) in a child process: under 2 GiB peak (the
    child's and Yosys's), one PE module, lint clean."""
    from elmoe3d.hw.lint import lint
    out = tmp_path / "mix"
    # a fresh parent process, so the peak is this command's (its Python and Yosys), not that of
    # whatever else this test process ran before
    probe = ("import resource, subprocess, sys; r = subprocess.run([sys.executable, '-m', 'elmoe3d', "
             "'generate', '--top', 'pe_array', '--rows', '64', '--cols', '64', '--lanes', '16', '-o', "
             f"{str(out)!r}]); print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    status, kib = (int(x) for x in r.stdout.split()[-2:])
    assert status == 0, r.stderr
    assert kib * 1024 < 2 * 2**30, kib
    text = (out / "pe_array.v").read_text()
    pe = [n for n in modules(text) if n.startswith("elmoe3d_pe_")]
    assert len(pe) == 1 and instances(text, pe[0]) == 64 * 16
    ok, log = lint(out / "pe_array.v", "pe_array")
    assert ok, log[-3000:]


@pytest.mark.parametrize("argv", [
    ["generate", "--top", "core", "--preset", "mixtral"],
    ["synth", "--top", "core", "--preset", "mixtral"],
])
def test_mixtral_core_conversion_is_refused_in_one_line(tmp_path, capsys, argv):
    """Until the core's datapath converts within Amaranth's 4 GiB Yosys (docs/scale.md)."""
    out = tmp_path / "out"
    assert main([*argv, "-o", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "mixtral core" in lines[0] and "4 GiB" in lines[0], lines
    assert not out.exists()
