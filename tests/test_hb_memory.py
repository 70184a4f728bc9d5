"""Golden HB memory model: address map, burst split, bandwidth, refusals."""

import pytest

from elmoe3d.errors import UserError
from elmoe3d.sim.golden.hb_memory import (DEFAULT, HBConfig, HBMemory, achieved_fraction, address_map, is_legal,
                                   plane_lines, plane_read_time_ns, split_bursts, stream_cycles)


def test_derived_widths_and_slots():
    cfg = HBConfig(channels=4, width=64, burst=16, latency=24, lines=1 << 20)
    assert (cfg.beat_bytes, cfg.line_bytes, cfg.addr_bits) == (8, 32, 20)
    assert cfg.slots == 4 and cfg.tag_bits == 2 and cfg.burst_bits == 5   # 4 bursts of 16 cover 24 + 3 cycles
    assert HBConfig(burst=4, latency=24).slots == 8
    assert HBConfig(outstanding=2).slots == 2
    assert cfg.full_rate and not HBConfig(outstanding=2, burst=4, latency=24).full_rate


def test_address_map_rotates_beats_over_channels():
    cfg = HBConfig(channels=4, width=64, lines=16)
    assert [address_map(cfg, a)[0] for a in range(0, 64, 8)] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert address_map(cfg, 32 + 8 + 3) == (1, 1, 3)
    with pytest.raises(UserError, match=r"^byte address 512 outside the 512-byte HB space$"):
        address_map(cfg, 512)


def test_plane_uses_every_channel():
    cfg = DEFAULT
    lines = plane_lines(cfg, 1 << 20)
    assert lines == (1 << 20) // cfg.line_bytes
    channels = {address_map(cfg, a)[0] for a in range(0, 1 << 20, cfg.beat_bytes)}
    assert channels == set(range(cfg.channels))


def test_burst_split():
    cfg = HBConfig(burst=4, lines=64)
    assert split_bursts(cfg, 10, 9) == [(10, 4), (14, 4), (18, 1)]
    assert split_bursts(cfg, 60, 4) == [(60, 4)]
    assert split_bursts(cfg, 61, 4) == [] and split_bursts(cfg, 0, 0) == []
    assert not is_legal(cfg, 0, 0) and not is_legal(cfg, 61, 4) and is_legal(cfg, 0, 64)


def test_golden_counters_and_data():
    cfg = HBConfig(channels=2, width=16, burst=4, lines=64)
    hb = HBMemory(cfg, contents=lambda c, r: 100 * r + c)
    assert hb.request(3, 2) == [[300, 301], [400, 401]]
    assert hb.request(0, 0) is None and hb.request(63, 2) is None
    assert hb.counters() == {"requests": 1, "errors": 2, "bursts": 1, "beats": [2, 2]}


def test_bandwidth_model():
    cfg = HBConfig(channels=4, width=64, latency=24, clock_mhz=1000)
    assert cfg.peak_gbps == 32.0
    assert stream_cycles(cfg, [1024] * 4) == 4096 + 24 + 3
    assert achieved_fraction(cfg, [1024] * 4) == pytest.approx(4096 / 4123)
    assert plane_read_time_ns(cfg, 1 << 20) == pytest.approx((32768 + 27) * 1.0)


def test_cycles_at_request_boundaries():
    """Burst 1 (and one-line requests) pay the splitter's accept cycle per request boundary."""
    b1 = HBConfig(channels=1, width=8, burst=1, latency=3, lines=256)
    assert b1.full_rate
    assert stream_cycles(b1, [5]) == 5 + 3 + 3
    assert stream_cycles(b1, [5, 5]) == 10 + 1 + 3 + 3           # L + latency + 3 was 16
    assert stream_cycles(b1, [3, 7, 2, 9]) == 21 + 3 + 3 + 3
    b4 = HBConfig(channels=1, width=8, burst=4, latency=6, lines=256)
    assert stream_cycles(b4, [12, 12, 12]) == 36 + 6 + 3         # the splitter keeps ahead
    assert stream_cycles(b4, [1, 1, 1, 1]) == 4 + 3 + 6 + 3      # one-line requests do not
    slow = HBConfig(channels=1, width=8, burst=1, outstanding=2, latency=3, lines=16)
    assert stream_cycles(slow, [5]) == 17                        # 2 slots: one burst per latency
    with pytest.raises(UserError, match=r"^stream_cycles needs request lengths >= 1, got \[3, 0\]$"):
        stream_cycles(b1, [3, 0])


def test_length_field_holds_the_whole_space_by_default():
    """A 1 MiB plane is one request whatever the line size (16-byte lines: 65 536 lines)."""
    cfg = HBConfig(channels=2, width=64, lines=1 << 20)
    lines = plane_lines(cfg, 1 << 20)
    assert lines == 65536 and cfg.len_bits == 21
    assert is_legal(cfg, 0, lines) and split_bursts(cfg, 0, lines)[-1] == (lines - cfg.burst, cfg.burst)
    assert is_legal(cfg, 0, cfg.lines) and not is_legal(HBConfig(lines=1 << 20, len_bits=16), 0, lines)
    assert HBConfig(lines=1 << 20, len_bits=16).len_bits == 16


@pytest.mark.parametrize("kwargs, message", [
    ({"channels": 0}, "channels must be in [1, 16], got 0"),
    ({"width": 12}, "width must be a multiple of 8, got 12"),
    ({"width": 1024}, "width must be in [8, 512], got 1024"),
    ({"burst": 6}, "burst must be a power of two, got 6"),
    ({"outstanding": 3}, "outstanding must be a power of two, got 3"),
    ({"outstanding": 1}, "outstanding must be in [2, 64], got 1"),
    ({"lines": 1000}, "lines must be a power of two, got 1000"),
    ({"latency": 0}, "latency must be in [1, 1024], got 0"),
    ({"latency": 1000, "burst": 1}, "latency 1000 with burst 1 needs 1024 bursts in flight; at most 64: use a longer burst"),
    ({"channels": "4"}, "channels must be an integer, got '4'"),
    ({"len_bits": 34}, "len_bits must be in [0, 33], got 34"),
])
def test_refusals(kwargs, message):
    with pytest.raises(UserError) as info:
        HBConfig(**kwargs)
    assert str(info.value) == message
