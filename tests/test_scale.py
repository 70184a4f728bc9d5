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


def generate_in_child(argv, out):
    """``elmoe3d generate ARGV -o OUT`` in a fresh parent process: ``(status, stderr, peak bytes)``,
    the peak being that of the largest process (Python or Amaranth's Yosys) of that command."""
    probe = ("import resource, subprocess, sys; r = subprocess.run([sys.executable, '-m', 'elmoe3d', "
             f"'generate', *{list(argv)!r}, '-o', {str(out)!r}], stderr=subprocess.PIPE, text=True); "
             "sys.stderr.write(r.stderr); print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    status, kib = (int(x) for x in r.stdout.split()[-2:])
    return status, r.stderr, kib * 1024


def check_core_modules(text, cfg):
    """Every module of a generated core defined once; the repeated blocks as often instantiated
    as the configuration has them; the executor and the compute blocks one module each, the two
    requantizers one module."""
    names = modules(text)
    assert names[0] == "core" and not [n for n, k in Counter(names).items() if k > 1]
    a = cfg.array

    def only(prefix):
        found = [n for n in names if n.startswith(prefix)]
        assert len(found) == 1, (prefix, found)
        return found[0]
    assert instances(text, only("elmoe3d_pe_")) == a.rows * a.lanes
    assert instances(text, only("elmoe3d_lsbaugment_")) == a.rows
    banks = [n for n in names if n.startswith("elmoe3d_bank_")]
    # six token buffers of buffers.tokens banks each, of as many distinct (depth, bits) as there are
    assert sum(instances(text, b) for b in banks) == 6 * cfg.buffers.tokens and len(banks) <= 6
    assert instances(text, only("elmoe3d_executor_")) == 1
    assert instances(text, only("elmoe3d_pearray_")) == 1
    assert instances(text, only("elmoe3d_vectorrequant_")) == 2
    for block in ("vectorswiglu", "vectorcombine", "vectorrouter"):
        assert instances(text, only(f"elmoe3d_{block}_")) == 1
    # the distinct blocks: the core's own submodules, the executor's, and one module per leaf kind
    return names


def test_tiny_core_defines_each_block_once_in_bounded_memory(tmp_path):
    """``generate --top core --preset tiny`` (about 8 CPU s): each block once, under 400 MiB peak
    (measured: 130 MiB the largest process)."""
    status, err, peak = generate_in_child(["--top", "core", "--preset", "tiny", "--max-k", "4"], tmp_path)
    assert status == 0, err
    assert peak < 400 * 2**20, peak
    check_core_modules((tmp_path / "core.v").read_text(), PRESETS["tiny"])


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


def test_core_generation_is_estimated_and_refused_beyond_the_limits(monkeypatch):
    """The estimate grows with vector width x token banks; the mixtral core converts here; a core
    is refused in one line where its estimate exceeds the memory available, or where its executor
    has too many input bits to be converted on its own (the whole core would be one Yosys run)."""
    from types import SimpleNamespace

    from elmoe3d.hw import sim_budget
    from elmoe3d.hw.sim_budget import GENERATION_CALIBRATION, check_core_generation, core_generation_bytes
    from elmoe3d.hw.verilog import MAX_PART_INPUT_BITS
    mix = PRESETS["mixtral"]
    assert core_generation_bytes(PRESETS["small"]) == GENERATION_CALIBRATION[0][2]
    assert core_generation_bytes(mix) == pytest.approx(GENERATION_CALIBRATION[-1][2])
    assert core_generation_bytes(PRESETS["tiny"]) == GENERATION_CALIBRATION[0][2]       # never below
    core = SimpleNamespace(config=mix, ex=PEArray(rows=2, cols=2))     # the check reads config and ex
    need = check_core_generation(core, "generate", available=2**40)
    assert need < 2 * 2**30
    with pytest.raises(UserError, match=r"^generate: converting the mixtral core .* more than the 1.0 GiB"):
        check_core_generation(core, "generate", available=2**30)
    monkeypatch.setattr("elmoe3d.hw.verilog.input_bits", lambda block: MAX_PART_INPUT_BITS + 1)
    with pytest.raises(UserError, match=r"executor of \d+ input bits.*4 GiB"):
        check_core_generation(core, "generate", available=2**40)
    assert check_core_generation(PEArray(rows=4, cols=4), "generate", available=1) is None   # not a core
    assert sim_budget.MAX_SYNTH_WIDTH_X_TOKENS < mix.vector.width * mix.buffers.tokens


def test_mixtral_synthesis_is_refused_in_one_line(tmp_path, capsys):
    """The mixtral core generates, but its synthesis is not bounded yet (docs/scale.md)."""
    out = tmp_path / "out"
    assert main(["synth", "--top", "core", "--preset", "mixtral", "-o", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "synthesizing the mixtral core" in lines[0], lines
    assert not out.exists()


@pytest.mark.slow
def test_mixtral_core_generates_in_bounded_memory_and_lints(tmp_path):
    """``generate --top core --preset mixtral`` (minutes): each block once, under 2 GiB peak of
    its largest process, lint clean (Verilator -Wall with the project's waivers)."""
    from elmoe3d.hw.lint import lint
    status, err, peak = generate_in_child(["--top", "core", "--preset", "mixtral"], tmp_path)
    assert status == 0, err
    assert peak < 2 * 2**30, peak
    check_core_modules((tmp_path / "core.v").read_text(), PRESETS["mixtral"])
    ok, log = lint(tmp_path / "core.v", "core")
    assert ok, log[-3000:]
