"""cocotb bench: the core stops where the ISS stops, with the same Status, index and command count.

Streams from :mod:`.stream_fuzz` (valid, mutated toward every Status, truncated) run on the RTL
core (``hw/core.py``, top ``core``) through ``tb_core``'s memory models (after a reset per
stream; random stalls on every memory interface in every other stream) and on a fresh ISS
(``sim/machine/iss.py`` with the core's :class:`~elmoe3d.sim.machine.iss.CoreLimits`). Checked per stream:

- stopped on an error: ``o_status.error`` and ``index`` equal the ISS's
  :class:`~elmoe3d.sim.machine.dispatch.MachineError` ``status`` and ``index``, ``commands`` the
  commands the ISS completed before it, and the core takes no further word;
- halted: ``commands`` and the HALT's index equal the ISS's, and the Y block equals the ISS's;
- truncated (the ISS raises :class:`~elmoe3d.sim.machine.dispatch.StreamEnd`): once the ISS's commands
  have completed, the core stays busy with no error and ``index`` at the word it waits for.

Every Status the core can raise (OPCODE .. ORDER) must occur among the streams. Configuration:
``params`` (``preset``, ``lanes``, ``max_k``), ``seeds``, ``quick`` (per seed each error kind and
the truncation once, INPUT from the token-mantissa and zero-exponent edges, 1-2 tokens: 13
streams; otherwise 3 streams per kind drawn at random plus every input edge), ``stall`` (0.3).
"""

import random

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge

from ...firmware.layout import read_output
from ...hw.core import core_config
from ...spec.isa import Status
from ..machine.iss import CoreLimits
from .runner import bench_config
from .stream_fuzz import KINDS, StreamFuzzer, expect
from .tb_core import code, session

SETTLE = 40         # cycles a stopped or waiting core is watched for a change
# quick: valid streams are tb_core's; INPUT comes from the edge mutations below
QUICK_KINDS = tuple(k for k in KINDS if k not in ("valid", "input"))
QUICK_INPUTS = ("xm", "router_e", "hid_e")
QUICK_ORDER = ("outside", "route_first", "storey_first")      # ORDER early in the stream: cheap


def core_limits(params):
    """The :class:`CoreLimits` of the core the launcher built (its vector width, router slots and
    experts): read off the generator, not restated."""
    from ...hw.executor.buffers import Dims
    cfg = core_config(params["preset"], params.get("lanes", 0))
    d = Dims(cfg, params.get("max_k", 8))
    return cfg, CoreLimits(width=d.W, max_k=d.slots, max_experts=d.n_experts)


async def run_case(dut, cfg, case, out, mems, rng, stall, mm, limit=400_000):
    """One stream on a freshly reset core; the memories (for the next reset)."""
    mems = await session(dut, cfg, case.offchip.copy(), case.hb.copy(), rng, stall, mems)
    mems.words.extend(case.words)
    what = f"{case.kind} ({case.detail}), {len(case.words)} words, ISS: {out.message}"
    start, quiet = mems.cycle, 0
    while True:
        await RisingEdge(dut.clk)
        st = mems.status()
        if code(st) != Status.NONE:
            break
        if int(st.halted) and not int(st.busy) and not mems.words:
            break
        if out.ended and not mems.words and int(st.commands) == out.commands:
            quiet += 1
            if quiet > SETTLE:
                break
        assert mems.cycle - start < limit, f"{what}: the core neither stopped nor halted in {limit} cycles"
    for _ in range(SETTLE if code(st) != Status.NONE else 0):
        await RisingEdge(dut.clk)
    st = mems.status()
    got = (code(st), int(st.index), int(st.commands))
    assert got == (out.status, out.index, out.commands), \
        f"{what}: core stopped with {got[0].name} at {got[1]} after {got[2]} commands, ISS {out.status.name} " \
        f"at {out.index} after {out.commands}"
    if out.status != Status.NONE:
        assert mems.words or int(dut.i_word__ready.value) == 0, f"{what}: the core takes words after an error"
    elif out.ended:
        assert bool(int(st.busy)) == bool(case.words), f"{what}: busy {int(st.busy)} while waiting for words"
    else:
        T = case.tokens
        assert np.array_equal(read_output(mems.off, mm, T), read_output(out.offchip, mm, T)), \
            f"{what}: the Y block differs from the ISS's"
    return mems


@cocotb.test()
async def core_stops_where_the_iss_stops(dut):
    conf = bench_config()
    params = conf["params"]
    cfg, limits = core_limits(params)
    stall = conf.get("stall", 0.3)
    seen, mems, n = set(), None, 0
    for seed in conf["seeds"]:
        rng = random.Random(seed)
        if conf["quick"]:       # every code once, the input edges of the four-edge decisions, short groups
            fz = StreamFuzzer(cfg, seed, limits, max_tokens=2)
            cases = [fz.case(k, rng.choice(QUICK_ORDER) if k == "order" else None) for k in QUICK_KINDS]
            cases += [fz.case("input", w) for w in QUICK_INPUTS]
        else:
            fz = StreamFuzzer(cfg, seed, limits)
            cases = fz.cases(3 * len(KINDS)) + fz.edge_cases()
        for case in cases:
            out = expect(cfg, case, limits)
            if case.want is not None:
                assert (out.status, out.ended) == (case.want, False), f"{case.kind} ({case.detail}): ISS {out.message}"
            else:
                assert out.ended, f"{case.kind} ({case.detail}): ISS {out.message}"
            mems = await run_case(dut, cfg, case, out, mems, rng, stall if n % 2 else 0.0, fz.comp.map)
            seen.add(out.status)
            n += 1
            dut._log.info(f"{case.kind:<10} {case.detail:<40} {out.status.name} at {out.index}")
    missing = sorted(s.name for s in Status if s != Status.NONE and s not in seen)
    assert not missing, f"no stream stopped the core with {missing}"
    mems.running = False
