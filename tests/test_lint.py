"""``verilator --lint-only -Wall`` on the generated Verilog of every top (arrays, vector unit,
expert cache, HB memory).

The only waivers are those of ``hw/lint_waivers.vlt`` (each with its reason).
"""

import pytest

from elmoe3d.hw.lint import WAIVERS, lint
from elmoe3d.hw.tops import get_top
from elmoe3d.hw.verilog import write_verilog

CONFIGS = [
    ("pe", {}), ("pe", dict(terms=5, pipeline=0, acc_bits=20, max_k=31)),
    ("lsb_augment", {}),
    ("pe_array", {}), ("pe_array", dict(rows=3, cols=5, lanes=2, pipeline=0)),
    ("mac_array_baseline", {}), ("mac_array_baseline", dict(rows=4, cols=3, lanes=4)),
    ("vector_requant", dict(width=1)), ("vector_swiglu", dict(width=3)), ("vector_combine", dict(width=1)),
    ("vector_router", dict(max_experts=2, max_k=1)), ("vector_router", dict(max_experts=5, max_k=5)),
    ("vector_unit", {}),
    ("expert_cache", dict(entries=8)), ("expert_cache", dict(entries=5, policy="lfu", counter_bits=8)),
    ("expert_cache", dict(entries=4, policy="score")),
    ("hb_memory", dict(channels=2, width=16, burst=4, latency=6, lines=256)),
    ("hb_memory", dict(channels=3, width=8, burst=1, outstanding=2, latency=3, lines=16, counter_bits=8)),
    ("core", dict(preset="tiny", max_k=4)),
    # small: vector width = array width, so its width adapters have ratio 1 (they once declared a
    # zero-width counter, `wire [-1:0]`, which -Wall refuses)
    ("core", dict(preset="small", lanes=2)),
]


def _generate(tmp_path, name, params):
    top = get_top(name)
    params = top.resolve(params)
    return write_verilog(top.build(**params), name, tmp_path, params)


@pytest.mark.parametrize("name, params", CONFIGS,
                         ids=[f"{n}-{'-'.join(f'{k}{v}' for k, v in p.items()) or 'default'}" for n, p in CONFIGS])
def test_generated_verilog_is_lint_clean(tmp_path, name, params):
    ok, log = lint(_generate(tmp_path, name, params), name)
    assert ok, log


def test_waivers_are_needed_and_documented(tmp_path):
    """Without the waiver file the same Verilog warns: the file is what makes it pass."""
    ok, log = lint(_generate(tmp_path, "pe_array", dict(rows=2, cols=2)), "pe_array", waivers=False)
    assert not ok and "%Warning-" in log
    text = WAIVERS.read_text()
    rules = [line.split("-rule ")[1].split()[0] for line in text.splitlines() if line.startswith("lint_off")]
    assert rules == ["DECLFILENAME", "PROCASSINIT", "UNUSEDSIGNAL", "WIDTHEXPAND", "WIDTHTRUNC", "CASEINCOMPLETE"]
    for rule in rules:   # every waiver (or group of waivers) has a comment block right above it
        above = [ln for ln in text.split(f"lint_off -rule {rule}")[0].rstrip().splitlines()
                 if not ln.startswith("lint_off")]
        assert above[-1].startswith("//"), rule


def test_lint_still_catches_real_problems(tmp_path):
    bad = tmp_path / "bad.v"
    bad.write_text("module bad(input clk, input [3:0] a, output reg [3:0] y);\n"
                   "  always @(posedge clk) y = a;\n"          # blocking assignment in a flop
                   "endmodule\n")
    ok, log = lint(bad, "bad")
    assert not ok and "BLKSEQ" in log
