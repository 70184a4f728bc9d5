"""The generated interface documentation (``hw/interface_doc.py``) against the RTL it describes.

The documentation must not drift from the design: every top's documented ports are the ports of
its Verilog module; the documented fields tile each port exactly, at the offsets Amaranth's
layouts give; and simulations of the RTL (Amaranth's simulator) driven and read *only* through
the documented offsets and encodings behave as the notes say, including the out-of-range
inputs (``k > max_k``, activation -128) that ``sim.gemv.array_gemv`` defines.
"""

import enum
import inspect
import json
import re

import numpy as np
import pytest
from amaranth.lib import data
from amaranth.sim import Simulator

from elmoe3d.hw.interface_doc import RULES, describe, field_rows, markdown, notes
from elmoe3d.hw.layouts import ArrayOf
from elmoe3d.hw.tops import all_tops
from elmoe3d.hw.verilog import write_verilog
from elmoe3d.sim.numerics.gemv import array_gemv
from elmoe3d.sim.golden.hb_memory import HBConfig, split_bursts
from elmoe3d.sim.numerics.slices import lsb_slice, msb_slice

TOPS = all_tops()


# --- packing through the documentation only ---------------------------------------------------------
def _positions(row):
    """``[(index tuple, bit offset)]`` of every element a documented field row stands for."""
    dims = row.get("index", [])
    out = []
    for idx in np.ndindex(*[d["count"] for d in dims]) if dims else [()]:
        out.append((idx, row["offset"] + sum(i * d["stride"] for i, d in zip(idx, dims))))
    return out


def pack(port, values):
    """Bits of a port from ``{field: value or array}`` using only the documented rows."""
    bits = 0
    for row in port["fields"]:
        if row["field"] not in values:
            continue
        v = values[row["field"]]
        if "encoding" in row and isinstance(v, str):
            v = row["encoding"][v]
        arr = np.asarray(v, dtype=object)
        for idx, off in _positions(row):
            bits |= (int(arr[idx] if idx else arr) & ((1 << row["width"]) - 1)) << off
    return bits


def unpack(port, bits):
    """``{field: int or array}`` of a port's bits, signed fields sign-extended, from the rows."""
    out = {}
    for row in port["fields"]:
        dims = [d["count"] for d in row.get("index", [])]
        arr = np.zeros(dims, dtype=np.int64) if dims else None
        for idx, off in _positions(row):
            v = (bits >> off) & ((1 << row["width"]) - 1)
            if row["signed"] and v >> (row["width"] - 1):
                v -= 1 << row["width"]
            if dims:
                arr[idx] = v
            else:
                out[row["field"]] = v
        if dims:
            out[row["field"]] = arr
    return out


def ports_of(doc):
    return {p["name"]: p for p in doc["ports"]}


def _small(name):
    """Small parameters for each top (defaults for the others): fast to elaborate and simulate."""
    return {"pe_array": dict(rows=2, cols=3, lanes=2, max_k=4, acc_bits=18),
            "mac_array_baseline": dict(rows=2, cols=3, lanes=2, max_k=4, acc_bits=18),
            # 32 slots: the HB test sends 19 bursts and returns no beats, so none frees
            "hb_memory": dict(channels=2, width=8, burst=4, outstanding=32, latency=3, lines=64),
            "expert_cache": dict(entries=2),
            "exec_gemv": dict(lanes=1),
            "core": dict(preset="tiny", max_k=2)}.get(name, {})


# --- structure -------------------------------------------------------------------------------------
def check_tiling(component, doc):
    """Raise AssertionError unless the fields of every port tile it at Amaranth's offsets."""
    flat = {"__".join(map(str, path)): value for path, _, value in component.signature.flatten(component)}
    for port in doc["ports"]:
        if "fields" not in port:
            continue
        covered = 0
        for row in port["fields"]:
            for _, off in _positions(row):
                mask = ((1 << row["width"]) - 1) << off
                assert not covered & mask, f"{port['name']}.{row['field']} overlaps another field"
                covered |= mask
        assert covered == (1 << port["width"]) - 1, f"{port['name']}: fields do not cover the port"
        # Each field read back through Amaranth's own view of the layout is the value packed at
        # the documented offset -- first and last element of arrays.
        shape = flat[port["name"]].shape()
        if not isinstance(shape, data.Layout):
            continue
        for row in port["fields"]:
            # all ones, or for an enum its largest encoding (not every bit pattern is a member)
            want = max(row["encoding"].values()) if "encoding" in row else -1 if row["signed"] else (1 << row["width"]) - 1
            for idx, off in {_positions(row)[0], _positions(row)[-1]}:
                target, it = data.Const(shape, (want & ((1 << row["width"]) - 1)) << off), iter(idx)
                for name, index in re.findall(r"\.?([A-Za-z_]\w*)|\[(\w+)\]", row["field"]):
                    target = getattr(target, name) if name else target[next(it)]
                if isinstance(target, enum.Enum):
                    target = target.value
                elif not isinstance(target, int):
                    target = target.as_value().value
                assert target == want, f"{port['name']}.{row['field']}{list(idx)} is not at bit {off}"


@pytest.mark.parametrize("name", sorted(TOPS))
def test_documented_fields_tile_every_port(name):
    top = TOPS[name]
    component = top.build(**top.resolve(_small(name)))
    doc = describe(component)
    check_tiling(component, doc)
    assert notes(component), f"{type(component).__name__} has no INTERFACE_NOTES"
    assert doc["rules"][1:] == list(RULES[1:])


def test_a_wrong_offset_is_caught():
    component = TOPS["hb_memory"].build(**TOPS["hb_memory"].resolve(_small("hb_memory")))
    doc = describe(component)
    req = ports_of(doc)["i_req__payload"]
    req["fields"][1]["offset"] -= 1                       # `length` one bit low
    with pytest.raises(AssertionError, match="overlaps"):
        check_tiling(component, doc)
    req["fields"][1]["offset"] += 1
    req["fields"][0], req["fields"][1] = ({**req["fields"][0], "offset": req["fields"][1]["offset"]},
                                          {**req["fields"][1], "offset": 0})   # swapped, widths kept
    with pytest.raises(AssertionError):
        check_tiling(component, doc)


def test_field_rows_of_named_arrays_and_enums():
    from elmoe3d.hw.layouts import Mode, act_layout, command_layout
    assert field_rows(command_layout(4096)) == [
        {"field": "k", "offset": 0, "width": 13, "signed": False},
        {"field": "mode", "offset": 13, "width": 1, "signed": False, "encoding": {"DRAFT": 0, "FULL": 1}}]
    assert field_rows(act_layout(cols=3, lanes=2)) == [
        {"field": "[lane][col]", "offset": 0, "width": 8, "signed": True,
         "index": [{"name": "lane", "count": 2, "stride": 24}, {"name": "col", "count": 3, "stride": 8}]}]
    assert ArrayOf(8, 3, index="col") == data.ArrayLayout(8, 3)
    assert field_rows(Mode)[0]["encoding"] == {"DRAFT": 0, "FULL": 1}


@pytest.mark.parametrize("name", sorted(TOPS))
def test_generated_files_agree_with_the_verilog(tmp_path, name):
    top = TOPS[name]
    params = top.resolve(_small(name))
    v = write_verilog(top.build(**params), name, tmp_path, params)
    text = v.read_text()
    if name == "core" or name.startswith("exec_"):     # every signal of the core and its units has a name (issue 15)
        assert "$signal" not in text, f"{name}: an unnamed signal in the Verilog"
    header = text[text.index(f"module {name}("):].split(");")[0]
    in_module = {p.strip() for p in header.split("(", 1)[1].split(",")}
    meta = json.loads(v.with_suffix(".json").read_text())
    assert {p["name"] for p in meta["ports"]} == in_module
    for p in meta["ports"]:                       # direction and width as declared
        vector = f"[{p['width'] - 1}:0] " if p["width"] > 1 else ""
        decl = f"{'input' if p['dir'] == 'in' else 'output'} {vector}{p['name']};"
        assert decl in text, decl
    md = v.with_suffix(".md").read_text()
    assert meta["interface"]["notes"] and all(n in md for n in meta["interface"]["notes"])
    assert all(f"`{p['name']}`" in md for p in meta["ports"])
    sync = "clk" in in_module
    assert (meta["interface"]["reset"] or {}).get("kind") == ("synchronous" if sync else None)


# --- generator defaults ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(TOPS))
def test_generator_defaults_equal_constructor_defaults(name):
    """Every Param's default is the component constructor's default for that keyword (or the
    constructor requires it); every constructor keyword without a default is a Param."""
    top = TOPS[name]
    component = top.build(**top.defaults())
    ctor = inspect.signature(type(component).__init__).parameters
    factory = inspect.signature(top.build).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in factory.values()):
        # a named factory (a preset of the accelerator configuration, a width for a shape): its
        # keywords are the generator's parameters
        ctor = factory
    for param in top.params:
        assert param.name in ctor, f"{name}: constructor takes no {param.name}"
        default = ctor[param.name].default
        if default is not inspect.Parameter.empty:
            assert param.default == default, f"{name}.{param.name}: generator {param.default!r}, constructor {default!r}"
    required = [n for n, p in ctor.items() if n != "self" and p.default is inspect.Parameter.empty]
    assert set(required) <= {p.name for p in top.params}


# --- behaviour through the documented offsets ------------------------------------------------------------
def _run(component, bench, cycles_limit=2000):
    sim = Simulator(component)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("name, mode", [("pe_array", "FULL"), ("pe_array", "DRAFT"), ("mac_array_baseline", None)])
def test_array_out_of_range_matches_golden(name, mode):
    """k above max_k (the field's largest value) and activations of -128, driven through the
    documented offsets, give exactly ``array_gemv`` -- the documented behaviour."""
    top = TOPS[name]
    params = top.resolve(_small(name))
    dut = top.build(**params)
    doc = ports_of(describe(dut))
    cmd_rows = {r["field"]: r for r in doc["i_cmd__payload"]["fields"]}
    k = (1 << cmd_rows["k"]["width"]) - 1
    assert k > params["max_k"]
    rng = np.random.default_rng(1)
    rows, cols, lanes = params["rows"], params["cols"], params["lanes"]
    q = rng.integers(-128, 128, (rows, k)).astype(np.int8)
    q[0] = -128
    a = rng.integers(-128, 128, (lanes, k)).astype(np.int8)
    a[0] = -128
    beats = -(-k // cols)
    pad = beats * cols - k
    qp = np.concatenate([q, rng.integers(-128, 128, (rows, pad))], axis=1).astype(np.int8)
    ap = np.concatenate([a, rng.integers(-128, 128, (lanes, pad))], axis=1).astype(np.int8)
    golden = array_gemv({"FULL": "full", "DRAFT": "draft", None: "int8"}[mode], q, a, params["acc_bits"])
    if name == "pe_array":
        weights = {"i_msb": msb_slice(qp), "i_lsb": lsb_slice(qp)}
    else:
        weights = {"i_weight": qp}
    inputs = {"i_act": [pack(doc["i_act__payload"], {"[lane][col]": ap[:, b * cols:(b + 1) * cols]})
                        for b in range(beats)]}
    for port, w in weights.items():
        inputs[port] = [pack(doc[f"{port}__payload"], {"[row][col]": w[:, b * cols:(b + 1) * cols]})
                        for b in range(beats)]
    cmd = pack(doc["i_cmd__payload"], {"k": k, **({"mode": mode} if mode else {})})
    result = {}

    async def bench(ctx):
        def port(name):
            return getattr(dut, name.split("__")[0])
        ctx.set(dut.i_cmd.payload.as_value(), cmd)
        ctx.set(dut.i_cmd.valid, 1)
        while not ctx.get(dut.i_cmd.ready):
            await ctx.tick()
        await ctx.tick()
        ctx.set(dut.i_cmd.valid, 0)
        left = {p: list(v) for p, v in inputs.items()}
        for _ in range(50 * beats + 50):
            for p, beats_left in left.items():
                s = port(p)
                ctx.set(s.valid, bool(beats_left))
                if beats_left:
                    ctx.set(s.payload.as_value(), beats_left[0])
            ctx.set(dut.o_result.ready, 1)
            fired = {p: ctx.get(port(p).ready) and bool(b) for p, b in left.items()}
            done = ctx.get(dut.o_result.valid)
            if done:
                result["bits"] = ctx.get(dut.o_result.payload.as_value())
            await ctx.tick()
            if done:
                return
            for p, f in fired.items():
                if f:
                    left[p].pop(0)

    _run(dut, bench)
    got = unpack(doc["o_result__payload"], result["bits"])["[lane][row]"]
    np.testing.assert_array_equal(got, golden)


def test_hb_request_fields_and_refusal_through_documented_offsets():
    top = TOPS["hb_memory"]
    params = top.resolve(_small("hb_memory"))
    dut = top.build(**params)
    doc = ports_of(describe(dut))
    cfg = HBConfig(**{k: v for k, v in params.items() if k != "counter_bits"})
    assert params["len_bits"] == 0 and cfg.len_bits == cfg.lines.bit_length()
    seen = []
    status = {}

    async def bench(ctx):
        for base, length in [(5, 10), (60, 5), (0, 0), (0, cfg.lines)]:      # legal, past the end, 0, whole space
            ctx.set(dut.i_req.payload.as_value(), pack(doc["i_req__payload"], {"base": base, "length": length}))
            ctx.set(dut.i_req.valid, 1)
            while not ctx.get(dut.i_req.ready):
                await ctx.tick()
            await ctx.tick()
            ctx.set(dut.i_req.valid, 0)
            for _ in range(cfg.lines // cfg.burst + 4):
                for c in range(cfg.channels):          # a burst is sent once every channel took it
                    ctx.set(dut.o_cmd[c].ready, 1)
                if ctx.get(dut.o_cmd[0].valid):
                    c = unpack(doc["o_cmd__0__payload"], ctx.get(dut.o_cmd[0].payload.as_value()))
                    seen.append((c["row"], c["beats"]))
                await ctx.tick()
        status.update(unpack(doc["o_status"], ctx.get(dut.o_status.as_value())))

    _run(dut, bench)
    assert seen == split_bursts(cfg, 5, 10) + split_bursts(cfg, 0, cfg.lines)
    assert status["error"] == 1 and status["errors"] == 2 and status["requests"] == 2
    assert status["bursts"] == len(seen)


def test_cache_counters_through_documented_offsets():
    """Two slots, both pinned: a LOOKUP miss bypasses and counts; a PREFETCH miss bypasses and
    counts as nothing but its response's `bypass` bit (as the notes say)."""
    top = TOPS["expert_cache"]
    dut = top.build(**top.resolve(_small("expert_cache")))
    doc = ports_of(describe(dut))
    ops = [("PIN", 1), ("PIN", 2), ("LOOKUP", 1), ("LOOKUP", 3), ("PREFETCH", 4), ("UNPIN", 5)]
    responses = []
    counters = {}

    async def bench(ctx):
        for op, expert in ops:
            ctx.set(dut.i_lookup.payload.as_value(),
                    pack(doc["i_lookup__payload"], {"op": op, "key.expert": expert, "key.layer": 1}))
            ctx.set(dut.i_lookup.valid, 1)
            ctx.set(dut.o_resp.ready, 1)
            ctx.set(dut.o_fill.ready, 1)
            while not ctx.get(dut.i_lookup.ready):
                await ctx.tick()
            await ctx.tick()
            ctx.set(dut.i_lookup.valid, 0)
            while not ctx.get(dut.o_resp.valid):
                await ctx.tick()
            responses.append(unpack(doc["o_resp__payload"], ctx.get(dut.o_resp.payload.as_value())))
            await ctx.tick()
        counters.update(unpack(doc["o_counters"], ctx.get(dut.o_counters.as_value())))

    _run(dut, bench)
    enc = {r["field"]: r for r in doc["o_resp__payload"]["fields"]}["op"]["encoding"]
    assert [r["op"] for r in responses] == [enc[op] for op, _ in ops]
    assert [r["key.expert"] for r in responses] == [e for _, e in ops]
    assert [(r["hit"], r["fill"], r["bypass"]) for r in responses] == [
        (0, 1, 0), (0, 1, 0), (1, 0, 0), (0, 0, 1), (0, 0, 1), (0, 0, 0)]
    want = {"hits": 1, "misses": 3, "evictions": 0, "fills": 2, "prefetch_fills": 0, "bypasses": 1}
    assert {name: counters[name] for name in want} == want


def test_markdown_lists_fields_with_bits():
    dut = TOPS["hb_memory"].build(**TOPS["hb_memory"].resolve(_small("hb_memory")))
    md = markdown("hb_memory", {"channels": 2}, describe(dut))
    assert "| `beats[channel]` (channel < 2) | 97 + channel*32 (+32) | 32 | unsigned |" in md
    assert "| `base` | 5:0 | 6 | unsigned |" in md and "| `length` | 12:6 | 7 | unsigned |" in md
