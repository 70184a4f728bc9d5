"""Command set, assembler, C header, compiler images and the instruction-set simulator (SPEC 8)."""

import shutil
import subprocess

import numpy as np
import pytest

from elmoe3d.config import PRESETS, AccelConfig, ArrayConfig, HBConfig, preset
from elmoe3d.errors import UserError
from elmoe3d.sim.machine.dispatch import MachineError, StreamEnd
from elmoe3d.firmware.asm import assemble, disassemble, listing
from elmoe3d.firmware.cheader import c_header
from elmoe3d.firmware.compiler import compile_model, compile_pass
from elmoe3d.spec.isa import INSTRUCTIONS, OPCODE_BITS, InstructionSet, Op, Reg, Status
from elmoe3d.firmware.layout import read_output, write_input
from elmoe3d.sim.cache.expert_cache import Key
from elmoe3d.sim.golden.int_moe import VERIFY, IntPass, calibrate_layer, draft_pass, fold_layer, int_moe, quantize_tokens
from elmoe3d.sim.machine.iss import Machine
from elmoe3d.sim.golden.moe_layer import MoEShape, random_moe

CONFIGS = ["tiny", "default", "mixtral"]


def random_fields(isa, op, rng):
    out = {}
    for s in isa.fields[op]:
        out[s.name] = int(rng.choice([int(v) for v in s.enum])) if s.enum else int(rng.integers(0, 1 << s.width))
    return out


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_instruction_round_trips_through_text_and_binary(name, seed):
    isa = InstructionSet(preset(name))
    rng = np.random.default_rng(seed)
    words = []
    for op in INSTRUCTIONS:
        for _ in range(5):
            f = random_fields(isa, op, rng)
            w = isa.encode(op, **f)
            assert w < 1 << isa.word_bits and isa.decode(w) == (op, f), f"{op.name} {f}"
            words.append(w)
    assert assemble(isa, disassemble(isa, words)) == words
    assert isa.from_bytes(isa.to_bytes(words)) == words
    assert len(listing(isa, words).splitlines()) == len(words)


def test_field_widths_derive_from_the_configuration():
    tiny, mix = InstructionSet(preset("tiny")), InstructionSet(preset("mixtral"))
    width = {s.name: s.width for s in mix.fields[Op.SETR]}
    assert width["value"] == max(preset("mixtral").offchip.addr_bits, preset("mixtral").hb.addr_bits)
    assert {s.name: s.width for s in tiny.fields[Op.SHARED]}["index"] == preset("tiny").cache.expert_bits
    with pytest.raises(UserError, match="word_bits"):
        AccelConfig(word_bits=48)


@pytest.mark.parametrize("word, message", [
    (0xD, "instruction 0: unknown opcode 0xd"),
    (int(Op.GEMV) | (3 << OPCODE_BITS), r"instruction 0 \(gemv\): field proj = 3 out of range"),
    (int(Op.SETR) | (15 << OPCODE_BITS), r"instruction 0 \(setr\): field reg = 15 out of range"),
    (int(Op.HALT) | (1 << 40), "reserved bits"),
])
def test_malformed_words_are_refused_naming_the_instruction(word, message):
    isa = InstructionSet(preset("default"))
    with pytest.raises(UserError, match=message):
        isa.decode(word)
    with pytest.raises(UserError, match=message.replace("instruction 0", "instruction 2")):
        Machine(isa.config, np.zeros(64, np.uint8), np.zeros(64, np.uint8)).run([0, 0, word])
    with pytest.raises(UserError, match="truncated"):
        isa.from_bytes(b"\0" * 12)


def test_assembler_errors_name_the_line():
    isa = InstructionSet(preset("default"))
    with pytest.raises(UserError, match="line 2: unknown mnemonic 'jump'"):
        assemble(isa, "nop\njump 3\n")
    with pytest.raises(UserError, match="line 1: bad value 'side' for field proj"):
        assemble(isa, "gemv proj=side, bits=full")
    with pytest.raises(UserError, match="line 1: setr field value = 16777216 out of range"):
        assemble(isa, "setr reg=tokens, value=16777216")


def test_c_header_compiles_and_matches_the_table(tmp_path):
    isa = InstructionSet(preset("default"))
    text = c_header(isa)
    s = {f.name: f for f in isa.fields[Op.SETR]}
    assert f"#define ELMOE3D_SETR_VALUE_SHIFT {s['value'].offset}u" in text
    assert f"#define ELMOE3D_REG_TOKENS {int(Reg.TOKENS)}u" in text
    if shutil.which("gcc"):
        src = tmp_path / "t.c"
        src.write_text('#include "h.h"\n_Static_assert(ELMOE3D_OP_GEMV == 9, "op");\n'
                       "unsigned long long w(void) { return ELMOE3D_OP_SETR | ELMOE3D_FIELD(SETR, VALUE, 16) | "
                       "ELMOE3D_FIELD(SETR, REG, ELMOE3D_REG_TOKENS); }\n")
        (tmp_path / "h.h").write_text(text)
        subprocess.run(["gcc", "-c", "-Wall", "-Werror", "-o", str(tmp_path / "t.o"), str(src)], check=True)


def test_configuration_refusals_name_the_field():
    with pytest.raises(UserError, match="array.lanes must be in"):
        ArrayConfig(lanes=17)
    with pytest.raises(UserError, match="hb line of 64 bytes must divide the array's beat of 8 bytes"):
        AccelConfig(array=ArrayConfig(rows=4, cols=4, lanes=4), hb=HBConfig(channels=8, width=64))
    with pytest.raises(UserError, match="cache.expert_bits = 6 holds 64 experts"):
        PRESETS["default"].check_model(n_layers=4, n_experts=64, n_shared=1, d_model=128, d_ffn=256, top_k=2,
                                       plane_bytes=1 << 14)
    hb = PRESETS["default"].hb
    with pytest.raises(UserError, match=f"hb.len_bits = {hb.len_bits} cannot express one plane"):
        PRESETS["default"].check_model(n_layers=4, n_experts=8, n_shared=0, d_model=128, d_ffn=256, top_k=2,
                                       plane_bytes=hb.line_bytes << hb.len_bits)
    with pytest.raises(UserError, match="unknown accelerator preset"):
        preset("huge")
    for name in CONFIGS:
        cfg = preset(name)
        assert AccelConfig.from_dict(__import__("json").loads(cfg.to_json())) == cfg


# -- compiler and ISS ---------------------------------------------------------------------------
SHAPES = [MoEShape(d_model=24, n_experts=6, top_k=2, d_ffn=40, n_shared=1),
          MoEShape(d_model=16, n_experts=4, top_k=1, d_ffn=20),
          MoEShape(d_model=33, n_experts=8, top_k=3, d_ffn=17, n_shared=2)]


def compiled_layers(shape, seed, n_layers=2, config="tiny"):
    rng = np.random.default_rng(seed)
    layers = []
    for _ in range(n_layers):
        qw = random_moe(shape, rng).quantized()
        cal = rng.standard_normal((64, shape.d_model))
        layers.append(fold_layer(qw, calibrate_layer(qw, cal, shape.top_k), shape.top_k))
    return layers, compile_model(preset(config), layers), rng


def _independent_plane(image_bytes, n, k, rows, cols):
    """The test's own reading of a tiled plane: beat by beat, low nibble first."""
    tn, tk = -(-n // rows), -(-k // cols)
    nib = np.empty(len(image_bytes) * 2, dtype=np.int64)
    nib[0::2], nib[1::2] = image_bytes & 0xF, image_bytes >> 4
    out = np.zeros((tn * rows, tk * cols), dtype=np.int64)
    i = 0
    for r in range(tn):
        for c in range(tk):
            out[r * rows:(r + 1) * rows, c * cols:(c + 1) * cols] = nib[i:i + rows * cols].reshape(rows, cols)
            i += rows * cols
    return out[:n, :k]


@pytest.mark.parametrize("config", ["tiny", "default"])
def test_compiler_images_reread_by_an_independent_decoder(config):
    layers, comp, _ = compiled_layers(SHAPES[0], 0, config=config)
    cfg, mm = preset(config), comp.map
    r, c = cfg.array.rows, cfg.array.cols
    L = mm.line_bytes
    for lm, layer in zip(mm.layers, layers):
        for e, ex in enumerate(list(layer.experts) + list(layer.shared)):
            base = (lm.e_addr + e * lm.e_stride) * L
            off = 0
            for q in (ex.gate, ex.up, ex.down):
                n, k = q.shape
                size = -(-n // r) * r * (-(-k // c)) * c // 2
                msb = _independent_plane(comp.offchip[base + off:base + off + size], n, k, r, c)
                lsb = _independent_plane(comp.offchip[base + lm.plane_lines * L + off:
                                                      base + lm.plane_lines * L + off + size], n, k, r, c)
                h = np.where(msb >= 8, msb - 16, msb)
                assert np.array_equal(16 * h + lsb, q.astype(np.int64)), f"layer {lm} expert {e}"
                off += size
            mult = comp.offchip[base + 2 * lm.plane_lines * L:][:4 * len(ex.gate_m)].reshape(-1, 4).astype(np.int64)
            assert np.array_equal(mult[:, 0] + 256 * mult[:, 1], ex.gate_m) and np.array_equal(mult[:, 2], ex.gate_e)
        silu_at = (lm.p_addr + 2 * lm.router_lines + -(-8 // L)) * L     # after the 8 bytes of scalars
        assert np.array_equal(comp.offchip[silu_at:silu_at + 512].view("<i2"), layer.silu)


PASSES = [VERIFY, draft_pass(1), draft_pass(2, "full"), draft_pass(1, "draft", "cached"), IntPass(k=1)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"d{s.d_model}e{s.n_experts}k{s.top_k}s{s.n_shared}")
@pytest.mark.parametrize("seed", [0, 1])
def test_iss_equals_the_integer_layer(shape, seed):
    layers, comp, rng = compiled_layers(shape, seed)
    cfg = preset("tiny")
    m = Machine(cfg, comp.offchip, comp.hb)
    for T in (1, 4, 16):
        for p in PASSES:
            if p.k is not None and p.k > shape.top_k:
                continue
            layer = int(rng.integers(len(layers)))
            x = rng.standard_normal((T, shape.d_model)) * rng.choice([0.01, 1.0, 100.0])
            a, xm, xe = quantize_tokens(x)
            allowed = (np.array([Key(layer, e, 0) in m.cache.resident() for e in range(shape.n_experts)])
                       if p.choice == "cached" else None)
            want = int_moe(layers[layer], a, xm, xe, p, allowed)
            write_input(comp.offchip, comp.map, a, xm, xe)
            stats = m.run(compile_pass(comp, layer, T, p))
            got = read_output(comp.offchip, comp.map, T)
            assert np.array_equal(got, want.out), f"T={T} pass={p} layer={layer}"
            assert np.array_equal(m.route[0], want.chosen)
            assert stats.cycles > 0 and (len(stats.cache) > 0) == (p.update and want.chosen.size + shape.n_shared > 0)


def test_iss_saturating_inputs():
    layers, comp, _ = compiled_layers(SHAPES[0], 5)
    m = Machine(preset("tiny"), comp.offchip, comp.hb)
    a = np.full((16, 24), 127, dtype=np.int8)
    a[::2] = -127
    xm, xe = np.full(16, (1 << 15) - 1), np.full(16, 1)
    write_input(comp.offchip, comp.map, a, xm, xe)
    m.run(compile_pass(comp, 0, 16))
    assert np.array_equal(read_output(comp.offchip, comp.map, 16), int_moe(layers[0], a, xm, xe).out)


def test_cache_decisions_follow_the_golden_cache_and_fill_hb():
    layers, comp, rng = compiled_layers(SHAPES[0], 2)
    m = Machine(preset("tiny"), comp.offchip, comp.hb)
    from elmoe3d.sim.cache.expert_cache import ExpertCache
    gold = ExpertCache(preset("tiny").cache)
    for _ in range(6):
        a, xm, xe = quantize_tokens(rng.standard_normal((4, 24)))
        write_input(comp.offchip, comp.map, a, xm, xe)
        stats = m.run(compile_pass(comp, 0, 4))
        for key, res in stats.cache:
            assert gold.apply(0, key, 0).hit == res.hit      # tiny's policy is LRU: scores do not matter
    # every resident MSB plane in HB equals its off-chip copy (the fill path wrote it)
    lm, L = comp.map.layers[0], comp.map.line_bytes
    for key, slot in m.cache.resident().items():
        off = (lm.e_addr + key.expert * lm.e_stride) * L
        hb = slot * lm.plane_lines * L
        assert np.array_equal(comp.hb[hb:hb + lm.plane_lines * L], comp.offchip[off:off + lm.plane_lines * L])


def _stream(comp, **edits):
    words = compile_pass(comp, 0, 4)
    for idx, word in edits.items():
        words[int(idx[1:])] = word
    return words


def test_malformed_streams_are_refused_naming_the_instruction():
    """Each refusal is a MachineError with the core's Status and index, its message naming the
    instruction (tests/test_errors.py covers every code against the RTL)."""
    layers, comp, rng = compiled_layers(SHAPES[0], 0)
    isa, cfg = comp.isa, preset("tiny")
    a, xm, xe = quantize_tokens(rng.standard_normal((4, 24)))
    write_input(comp.offchip, comp.map, a, xm, xe)
    m = Machine(cfg, comp.offchip, comp.hb)
    words = compile_pass(comp, 0, 4)

    def refused(stream, status, index, pattern):
        with pytest.raises(MachineError, match=pattern) as info:
            m.run(stream)
        assert isinstance(info.value, UserError)
        assert (info.value.status, info.value.index) == (status, index), str(info.value)

    with pytest.raises(StreamEnd, match=f"instruction {len(words) - 1}: the stream ends without halt"):
        m.run(words[:-1])
    p_idx = [i for i, w in enumerate(words) if isa.decode(w)[0] == Op.SETR and isa.decode(w)[1]["reg"] == Reg.P_ADDR][0]
    bad = list(words)
    bad[p_idx] = isa.encode(Op.SETR, reg=Reg.P_ADDR, value=isa.fields[Op.SETR][1].most)   # the largest address
    loadp = [i for i, w in enumerate(words) if isa.decode(w)[0] == Op.LOADP][0]
    refused(bad, Status.ADDRESS, loadp, rf"instruction {loadp} \(loadp\): lines .* past the off-chip image")
    bad = [w for i, w in enumerate(words) if i != p_idx]
    refused(bad, Status.REGISTER, loadp - 1, r"\(loadp\): register P_ADDR not set")
    route = [i for i, w in enumerate(words) if isa.decode(w)[0] == Op.ROUTE][0]
    bad = list(words)
    bad[route] = isa.encode(Op.ROUTE, k=3, choice=0)
    refused(bad, Status.RANGE, route, rf"instruction {route} \(route\): k = 3 outside \[1, 2\]")
    loop = route + 1
    with pytest.raises(StreamEnd, match=rf"instruction {loop + 3}: the stream ends inside a loop body"):
        m.run(words[:loop + 3])
    refused(words[:loop + 3] + [isa.encode(Op.HALT)], Status.LOOP, loop + 3, r"\(halt\): not allowed in a loop body")
    bad = list(words)
    bad[loop + 1] = isa.encode(Op.NOP)         # no FETCH: the GEMV has no plane
    refused(bad, Status.ORDER, loop + 4, r"\(gemv\): the MSB and LSB planes of expert \d+ not fetched")
    bad = list(words)
    bad.insert(route, isa.encode(Op.EXPERTS, body=1))
    refused(bad, Status.LOOP, route, rf"instruction {route} \(experts\): no ROUTE before")
    x = a.copy()
    x[2, 3] = -128
    write_input(comp.offchip, comp.map, x, xm, xe)
    refused(words, Status.INPUT, loadp - 1, r"\(loadx\): token 2 holds -128")


def test_cycle_estimate_grows_with_work():
    layers, comp, rng = compiled_layers(SHAPES[0], 1)
    cycles = {}
    for p, name in ((VERIFY, "verify"), (draft_pass(1), "draft")):
        m = Machine(preset("tiny"), comp.offchip, comp.hb.copy())
        a, xm, xe = quantize_tokens(np.random.default_rng(0).standard_normal((16, 24)))
        write_input(comp.offchip, comp.map, a, xm, xe)
        st = m.run(compile_pass(comp, 0, 16, p))
        cycles[name] = st.cycles
        assert st.cycles == sum(st.by_op.values())
    assert cycles["draft"] < cycles["verify"]


def test_disassembler_refuses_a_bad_word_naming_its_index():
    isa = InstructionSet(preset("default"))
    words = [isa.encode(Op.NOP), isa.encode(Op.HALT), 0xE]
    with pytest.raises(UserError, match="instruction 2: unknown opcode 0xe"):
        disassemble(isa, words)
    with pytest.raises(UserError, match="instruction 1 .halt.: reserved bits set"):
        listing(isa, [0, int(Op.HALT) | 1 << 63])


def test_generator_defaults_derive_from_the_configuration(tmp_path):
    from elmoe3d.config import DEFAULT
    from elmoe3d.hw.tops import get_top
    from elmoe3d.hw.verilog import write_verilog
    cache, hb, array = (get_top(n).defaults() for n in ("expert_cache", "hb_memory", "pe_array"))
    for name in ("entries", "policy", "layer_bits", "expert_bits", "count_bits", "score_bits", "decay_shift"):
        assert cache[name] == getattr(DEFAULT.cache, name), name
    for name in ("channels", "width", "burst", "outstanding", "latency", "lines"):
        assert hb[name] == getattr(DEFAULT.hb, name), name
    for name in ("rows", "cols", "acc_bits", "pipeline"):
        assert array[name] == getattr(DEFAULT.array, name), name
    top = get_top("lsb_augment")
    write_verilog(top.build(**top.defaults()), top.name, tmp_path, top.defaults())
    meta = __import__("json").loads((tmp_path / "lsb_augment.json").read_text())
    assert AccelConfig.from_dict(meta["accelerator_config"]) == DEFAULT
