"""The HB memory interface RTL against a cocotb channel model and the golden model.

Each test node builds its own Verilog and simulator in ``tmp_path`` through the one bench registry
(``run_top_bench``); every output stream (``o_data``, each ``o_cmd[c]``) is checked to hold valid
and payload until the transfer. Random cases: random request
lengths and bases with 10 % illegal requests, random stalls on the request, output and channel
command streams, random gaps on the channel beat streams, random per-burst latency and channels
that return their bursts out of order (interleaved). Full-rate case: back-to-back plane reads with
no stalls; the measured cycles must equal the analytical model ``sim.hb_memory.stream_cycles``.
"""

import json

import pytest

from elmoe3d.errors import UserError
from elmoe3d.hw.hb_memory import HBMemory
from elmoe3d.sim.benches.launch import run_top_bench
from elmoe3d.sim.golden.hb_memory import HBConfig, stream_cycles

PARAMS = {
    "tiny": dict(channels=2, width=16, burst=4, outstanding=4, latency=6, lines=256, len_bits=8),
    "wide": dict(channels=4, width=32, burst=8, outstanding=0, latency=24, lines=65536, len_bits=16),
    "narrow": dict(channels=1, width=8, burst=1, outstanding=2, latency=3, lines=16, len_bits=5, counter_bits=8),
    "odd": dict(channels=3, width=24, burst=2, outstanding=8, latency=10, lines=1024, len_bits=11),
}


def _run(tmp_path, params, cases, simulator="verilator"):
    report = tmp_path / "report.json"
    run_top_bench("hb_memory", params, tmp_path, cases=cases, report=str(report), simulator=simulator)
    return json.loads(report.read_text())


def _random(seed, n=80, **kw):
    case = {"kind": "random", "n": n, "seed": seed, "stall": 0.3, "cmd_stall": 0.3, "gap": 0.3, "illegal": 0.1}
    case.update(kw)
    return case


@pytest.mark.parametrize("name", ["tiny", "narrow", "odd"])
def test_random_requests_exactly_once_in_order(tmp_path, name):
    p = PARAMS[name]
    cases = [_random(1), _random(2, stall=0.0, cmd_stall=0.0, gap=0.6, lat=[1, 40]),
             _random(3, stall=0.7, cmd_stall=0.0, gap=0.0), {"kind": "fullrate", "n": 3, "plane_lines": 12}]
    rep = _run(tmp_path, p, cases)
    assert all(r["counters"]["errors"] > 0 for r in rep[:3])
    assert rep[0]["held_cycles"] > 20 and rep[2]["held_cycles"] > 20   # stalls made outputs wait
    cfg = HBConfig(**{k: v for k, v in p.items() if k != "counter_bits"})
    # exact also where too few bursts are in flight for the latency ("narrow": 2 slots, burst 1)
    assert rep[3]["span_cycles"] == stream_cycles(cfg, [12] * 3)
    if not cfg.full_rate:
        assert rep[3]["span_cycles"] > sum([12] * 3) + cfg.latency + 3


# Back-to-back requests of mixed lengths: one-line requests and burst 1 expose the splitter's
# accept cycle at every request boundary, which `L + latency + 3` missed.
BOUNDARY_LENGTHS = [[1], [5], [5, 5], [1, 1, 1, 1], [3, 7, 2, 9], [12, 12, 12]]


@pytest.mark.parametrize("burst, outstanding, latency", [(1, 0, 3), (4, 0, 6), (4, 2, 6)])
def test_cycles_exact_across_request_boundaries(tmp_path, burst, outstanding, latency):
    p = dict(channels=2, width=8, burst=burst, outstanding=outstanding, latency=latency, lines=64)
    rep = _run(tmp_path, p, [{"kind": "fullrate", "lengths": ls} for ls in BOUNDARY_LENGTHS])
    cfg = HBConfig(**p)
    measured = [r["span_cycles"] for r in rep]
    assert measured == [stream_cycles(cfg, ls) for ls in BOUNDARY_LENGTHS]
    if burst == 1 and cfg.full_rate:   # the closed form: one cycle per request boundary
        assert measured == [sum(ls) + len(ls) - 1 + latency + 3 for ls in BOUNDARY_LENGTHS]


def test_full_rate_plane_reads(tmp_path):
    """4 channels x 32 bits, burst 8, latency 24: four back-to-back reads of 1024-line planes."""
    p = PARAMS["wide"]
    rep = _run(tmp_path, p, [{"kind": "fullrate", "n": 4, "plane_lines": 1024},
                             {"kind": "fullrate", "n": 1, "plane_lines": 64}, _random(4, n=60)])
    cfg = HBConfig(**p)
    full = rep[0]
    assert full["span_cycles"] == stream_cycles(cfg, [1024] * 4)
    assert full["achieved_fraction"] >= 0.99                # the issue asks for >= 0.90
    assert rep[1]["span_cycles"] == stream_cycles(cfg, [64])
    assert all(b >= 4096 for b in full["busy"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny", "wide"])
def test_random_requests_long(tmp_path, name):
    _run(tmp_path, PARAMS[name], [_random(s, n=1500) for s in (10, 11)])


@pytest.mark.icarus
def test_hb_icarus_smoke(tmp_path):
    _run(tmp_path, PARAMS["tiny"], [_random(5, n=30), {"kind": "fullrate", "n": 2, "plane_lines": 8}],
         simulator="icarus")


@pytest.mark.parametrize("kwargs, message", [
    ({"channels": 17}, "channels must be in [1, 16], got 17"),
    ({"burst": 3}, "burst must be a power of two, got 3"),
    ({"counter_bits": 65}, "counter_bits must be an integer in [8, 64], got 65"),
    ({"lines": 3}, "lines must be a power of two, got 3"),
])
def test_refusals(kwargs, message):
    with pytest.raises(UserError) as info:
        HBMemory(**kwargs)
    assert str(info.value) == message


def test_ports_and_widths():
    dut = HBMemory(channels=4, width=64, burst=16, latency=24, lines=1 << 20, len_bits=16)
    assert dut.i_req.payload.shape().size == 20 + 16
    assert HBMemory(lines=1 << 20).i_req.payload.shape()["length"].width == 21   # derived
    assert dut.o_data.payload.shape().size == 4 * 64 + 1
    assert dut.o_cmd[3].payload.shape().size == 20 + 5 + 2
    assert dut.i_beat[0].payload.shape().size == 64 + 2


@pytest.mark.parametrize("argv, fragment", [
    (["--top", "hb_memory", "--channels", "2", "--width", "16", "--burst", "4"], None),
    (["--top", "expert_cache", "--entries", "8", "--policy", "score"], None),
    (["--top", "hb_memory", "--burst", "6"], "burst must be a power of two, got 6"),
    (["--top", "expert_cache", "--entries", "65"], "entries must be in [2, 64], got 65"),
])
def test_generate_tops(tmp_path, capsys, argv, fragment):
    from elmoe3d.cli import main
    status = main(["generate", "-o", str(tmp_path), *argv])
    if fragment is None:
        assert status == 0
        name = argv[1]
        meta = json.loads((tmp_path / f"{name}.json").read_text())
        assert (tmp_path / f"{name}.v").read_text().count(f"module {name}(") == 1 and meta["ports"]
    else:
        assert status == 2 and fragment in capsys.readouterr().err
