"""INT8 x INT8 baseline array: same generator as the PE array, compared with ``int8_gemv``."""

import json

import pytest

from elmoe3d.errors import UserError
from elmoe3d.hw.mac_array import MacArray
from elmoe3d.hw.pe_array import PEArray
from elmoe3d.hw.tops import get_top
from elmoe3d.sim.benches.launch import run_top_bench

PARAM_SETS = [
    pytest.param(dict(rows=2, cols=2, pipeline=0), id="2x2-p0"),
    pytest.param(dict(rows=4, cols=3, lanes=2, pipeline=1), id="4x3-l2"),
    pytest.param(dict(rows=3, cols=5, pipeline=3, acc_bits=20, max_k=31), id="3x5-acc20-p3"),
    pytest.param(dict(rows=2, cols=1, pipeline=2), id="2x1-p2"),
]


@pytest.mark.parametrize("params", PARAM_SETS)
def test_mac_array_regression_verilator(params, tmp_path):
    run_top_bench("mac_array_baseline", params, tmp_path, seeds=(1, 2, 3))
    cycles = json.loads((tmp_path / "cycles.json").read_text())
    assert cycles["rows"] and all(r["measured"] == r["model"] for r in cycles["rows"])


@pytest.mark.icarus
def test_mac_array_smoke_icarus(tmp_path):
    run_top_bench("mac_array_baseline", dict(rows=2, cols=3), tmp_path, seeds=(4,), quick=True,
                  simulator="icarus")


@pytest.mark.parametrize("kwargs, message", [
    (dict(rows=0, cols=2), "rows must be at least 1, got 0"),
    (dict(rows=2, cols=0), "cols must be at least 1, got 0"),
    (dict(rows=2, cols=2, lanes=99), "lanes must be at most 16, got 99"),
    (dict(rows=2, cols=2, acc_bits=20, max_k=32),
     "acc_bits = 20 can overflow for max_k = 32: a 20-bit accumulator holds at most 31 inputs; "
     "use acc_bits >= 21"),
    (dict(rows=2, cols=2, pipeline=-1), "pipeline must be an integer in 0..3, got -1"),
])
def test_refusals(kwargs, message):
    with pytest.raises(UserError) as info:
        MacArray(**kwargs)
    assert str(info.value) == message


def test_same_streams_as_the_bit_sliced_array():
    base, sliced = MacArray(rows=4, cols=3, lanes=2), PEArray(rows=4, cols=3, lanes=2)
    members = dict(base.signature.members)
    assert set(members) == {"i_cmd", "i_act", "i_weight", "o_result"}
    assert members["i_act"] == sliced.signature.members["i_act"]
    assert members["o_result"] == sliced.signature.members["o_result"]
    assert len(base.i_weight.payload.as_value()) == 4 * 3 * 8
    assert base.cmd_layout.size == sliced.cmd_layout.size - 1      # no mode field


def test_registry_entry():
    top = get_top("mac_array_baseline")
    assert top.macs_per_cycle(**top.resolve({})) == {"int8": 256}
