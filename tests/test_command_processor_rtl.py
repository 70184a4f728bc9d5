"""Command processor (``hw/command_processor.py``): refusals, the golden model against the ISS,
lint, the interface documentation, and the cocotb regression of the RTL against the golden model.

The default run builds the tiny and default presets (one Verilator build each, random stalls on
``i_word`` and in the executor model, random answer delays); mixtral is ``slow``.
"""

import json

import numpy as np
import pytest

from elmoe3d.config import PRESETS, preset
from elmoe3d.errors import UserError
from elmoe3d.firmware.compiler import compile_model, compile_pass
from elmoe3d.spec.isa import InstructionSet, Op, Reg, Status
from elmoe3d.hw.command_processor import CommandProcessor, StatusShape
from elmoe3d.sim.machine.dispatch import DispatchModel, MachineError
from elmoe3d.hw.lint import lint
from elmoe3d.hw.tops import get_top
from elmoe3d.hw.verilog import write_verilog
from elmoe3d.sim.benches.launch import BENCHES, run_top_bench
from elmoe3d.sim.benches.tb_command_processor import Policy
from elmoe3d.sim.golden.int_moe import VERIFY, calibrate_layer, draft_pass, fold_layer, quantize_tokens
from elmoe3d.firmware.layout import write_input
from elmoe3d.sim.machine.iss import Machine
from elmoe3d.sim.golden.moe_layer import MoEShape, random_moe

BENCH = dict(idle=0.3, stall=0.3, max_delay=3)


# -- refusals ---------------------------------------------------------------------------------------
def test_refusals_name_the_parameter():
    with pytest.raises(UserError, match="config must be an AccelConfig, got str"):
        CommandProcessor("tiny")
    with pytest.raises(UserError, match=rf"unknown accelerator preset 'huge'; choose from {', '.join(PRESETS)}"):
        get_top("command_processor").build(preset="huge")
    with pytest.raises(UserError, match="takes no parameter width"):
        get_top("command_processor").resolve({"width": 3})


def test_status_codes_are_the_firmware_enum():
    assert {m.name: m.value for m in StatusShape} == {m.name: int(m) for m in Status}
    assert "command_processor" in BENCHES


# -- the golden model against the ISS ----------------------------------------------------------------
def _compiled(config_name, seed):
    shape = MoEShape(d_model=24, n_experts=6, top_k=2, d_ffn=40, n_shared=1)
    rng = np.random.default_rng(seed)
    qw = random_moe(shape, rng).quantized()
    layer = fold_layer(qw, calibrate_layer(qw, rng.standard_normal((32, 24)), shape.top_k), shape.top_k)
    comp = compile_model(preset(config_name), [layer])
    a, xm, xe = quantize_tokens(rng.standard_normal((5, 24)))
    write_input(comp.offchip, comp.map, a, xm, xe)
    return comp, shape


@pytest.mark.parametrize("config_name", ["tiny", "default"])
def test_model_follows_the_iss_sequencing(config_name):
    """Experts run in the ISS's order, and ``commands`` is the ISS's instruction count."""
    comp, shape = _compiled(config_name, 3)
    m = Machine(preset(config_name), comp.offchip, comp.hb)
    for p in (VERIFY, draft_pass(1), draft_pass(1, "draft", "cached")):
        words = compile_pass(comp, 0, 5, p)
        stats = m.run(words)
        mask = sum(1 << int(e) for e in np.unique(m.route[0]))
        model = DispatchModel(preset(config_name), Policy([mask])).feed(words)
        assert model.error == Status.NONE and model.halts[0][0] == stats.instructions
        routed = [d for d in model.dispatches if d[4] and not d[3]]
        firsts = [d[2] for n, d in enumerate(routed) if n == 0 or routed[n - 1][2] != d[2]]
        assert firsts == stats.experts
        shared = {d[2] for d in model.dispatches if d[3]}
        assert shared == {shape.n_experts}


def _edit(isa, words, what):
    e = isa.encode
    loop = next(i for i, w in enumerate(words) if w & 0xF == Op.EXPERTS)
    shared = next(i for i, w in enumerate(words) if w & 0xF == Op.SHARED)
    w = list(words)
    if what == "opcode":
        w[loop + 2] = 0xD
    elif what == "reserved":
        w[3] |= 1 << (isa.word_bits - 1)
    elif what == "enum":
        w[0] = (w[0] & ~(0xF << 4)) | (15 << 4)
    elif what == "body0":
        w[loop] = e(Op.EXPERTS, body=0)
    elif what == "nested":
        w[loop + 2] = e(Op.SHARED, index=0, body=1)
    elif what == "halt":
        w[shared + 1] = e(Op.HALT)
    elif what == "route":
        w = [x for x in w if x & 0xF != Op.ROUTE]
    elif what == "key":
        n = dict(isa.decode(x)[1].values() for x in w if x & 0xF == Op.SETR)[Reg.N_EXPERTS]
        w[shared] = e(Op.SHARED, index=isa.config.cache.n_experts - n, body=isa.decode(w[shared])[1]["body"])
    return w


CODES = {"opcode": Status.OPCODE, "reserved": Status.FIELD, "enum": Status.FIELD, "body0": Status.LOOP,
         "nested": Status.LOOP, "halt": Status.LOOP, "route": Status.LOOP, "key": Status.KEY}


@pytest.mark.parametrize("what", list(CODES))
def test_model_stops_where_the_iss_refuses(what):
    comp, _ = _compiled("tiny", 4)
    isa = comp.isa
    words = _edit(isa, compile_pass(comp, 0, 5), what)
    with pytest.raises(MachineError, match=r"instruction (\d+)") as info:
        Machine(isa.config, comp.offchip, comp.hb).run(words)
    assert info.value.status == CODES[what], str(info.value)
    model = DispatchModel(isa.config, Policy([0b11])).feed(words)
    assert (model.error, model.index) == (info.value.status, info.value.index), str(info.value)


def test_model_index_saturates_and_registers_persist():
    isa = InstructionSet(PRESETS["tiny"])
    words = [isa.encode(Op.NOP)] * 70000 + [isa.encode(Op.SETR, reg=Reg.LAYER, value=2), 0xD]
    model = DispatchModel(isa.config, Policy([0])).feed(words)
    assert (model.error, model.index) == (Status.OPCODE, 65535)
    model = DispatchModel(isa.config, Policy([0])).feed([isa.encode(Op.SETR, reg=Reg.TOKENS, value=3),
                                                         isa.encode(Op.HALT), isa.encode(Op.NOP)])
    assert model.regs == {Reg.TOKENS: 3} and model.halts == [(2, 2)] and model.index == 1


# -- generated Verilog ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tiny", "default"])
def test_generated_verilog_is_lint_clean_and_documented(tmp_path, name):
    top = get_top("command_processor")
    params = top.resolve({"preset": name})
    v = write_verilog(top.build(**params), "command_processor", tmp_path, params)
    ok, log = lint(v, "command_processor")
    assert ok, log
    doc = json.loads((tmp_path / "command_processor.json").read_text())
    text = json.dumps(doc)
    assert "ROUTE flag" in text and "OPCODE" in text and "KEY" in text
    md = (tmp_path / "command_processor.md").read_text()
    assert f"{PRESETS[name].word_bits}-bit command" in md


# -- the RTL bench ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tiny", "default"])
def test_command_processor_rtl(tmp_path, name):
    run_top_bench("command_processor", {"preset": name}, tmp_path, seeds=(1, 2), quick=True, **BENCH)


@pytest.mark.slow
def test_command_processor_rtl_mixtral(tmp_path):
    run_top_bench("command_processor", {"preset": "mixtral"}, tmp_path, seeds=(3, 4, 5), **BENCH)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny", "default"])
def test_command_processor_rtl_more_seeds(tmp_path, name):
    run_top_bench("command_processor", {"preset": name}, tmp_path, seeds=(5, 6, 7), **BENCH)
