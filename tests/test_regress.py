"""``elmoe3d regress``: the summary table, the exit status of a failing run, usage errors."""

import pytest

from elmoe3d.cli import main
from elmoe3d.hw import lsb_augment


@pytest.mark.icarus
def test_regress_icarus_quick_passes(tmp_path, capsys):
    assert main(["regress", "--simulator", "icarus", "--quick", "--only", "pe_array-2x2",
                 "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "pe_array-2x2" in out and "PASS" in out and "1 of 1 passed" in out
    assert (tmp_path / "pe_array-2x2-icarus" / "regress.log").exists()


@pytest.mark.icarus
def test_regress_reports_a_broken_design(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(lsb_augment, "AUGMENT_BIT", 0)      # truncation instead of {h, 1}
    assert main(["regress", "--simulator", "icarus", "--quick", "--only", "pe_array-2x2", "-o", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "FAIL" in captured.out and "0 of 1 passed" in captured.out
    assert "mismatch" in (tmp_path / "pe_array-2x2-icarus" / "regress.log").read_text()


def test_regress_list(capsys):
    assert main(["regress", "--list"]) == 0
    assert "pe_array-16x16" in capsys.readouterr().out


def test_regress_unknown_entry(capsys):
    assert main(["regress", "--only", "zzz"]) == 2
    assert "no regression entry matches zzz" in capsys.readouterr().err


# Tops with no cocotb bench of their own, and why; every other top must be in BENCHES.
NO_BENCH = {
    "lsb_augment": "a PE building block: simulated inside every pe / pe_array bench entry, and "
                   "proven formally (tests/test_formal_pe.py)",
}


def test_every_top_has_a_bench_and_every_bench_a_regression_entry():
    from elmoe3d.hw.tops import all_tops
    from elmoe3d.sim.benches.launch import BENCHES, REGRESSION
    tops = set(all_tops())
    assert set(BENCHES) <= tops, f"benches for unknown tops: {sorted(set(BENCHES) - tops)}"
    assert not set(NO_BENCH) & set(BENCHES), "a top with a bench is still listed in NO_BENCH"
    missing = sorted(tops - set(BENCHES) - set(NO_BENCH))
    assert not missing, f"tops without a bench in BENCHES (add one, or list them in NO_BENCH with why): {missing}"
    covered = {e.top for e in REGRESSION}
    assert not set(BENCHES) - covered - _PARTS, \
        f"benches with no REGRESSION entry: {sorted(set(BENCHES) - covered - _PARTS)}"
    assert len({e.name for e in REGRESSION}) == len(REGRESSION), "two REGRESSION entries share a name"
    assert any(e.quick for e in REGRESSION if e.top == "expert_cache")
    assert any(e.quick for e in REGRESSION if e.top == "hb_memory")


# The vector unit's blocks are regressed through the unit top, which drives each block's ports
# (the same bench module); they need no entry of their own.
_PARTS = {"vector_requant", "vector_swiglu", "vector_combine", "vector_router"}


def test_regress_list_shows_every_entry(capsys):
    from elmoe3d.sim.benches.launch import REGRESSION
    assert main(["regress", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(e.name in out for e in REGRESSION)
    assert main(["regress", "--list", "--quick"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == [e.name for e in REGRESSION if e.quick]


def test_format_table_columns():
    from elmoe3d.commands.regress import format_table
    rows = [{"name": "expert_cache-lru8", "top": "expert_cache", "params": "entries=8,policy=lru", "seeds": "1,2",
             "tests": 1, "result": "PASS", "wall_s": 12.34},
            {"name": "hb_memory-2ch-b4", "top": "hb_memory", "params": "", "seeds": "1", "tests": 0,
             "result": "FAIL", "wall_s": 3.0}]
    lines = format_table(rows).splitlines()
    assert lines[0].split() == ["entry", "top", "params", "seeds", "tests", "result", "seconds"]
    assert lines[2].split() == ["expert_cache-lru8", "expert_cache", "entries=8,policy=lru", "1,2", "1", "PASS", "12.3"]
    assert lines[3].split() == ["hb_memory-2ch-b4", "hb_memory", "-", "1", "0", "FAIL", "3.0"]
    assert lines[-1] == "1 of 2 passed"


def test_regress_runs_a_registered_hb_entry(tmp_path, capsys):
    """An entry of the table end to end (Verilator): the row names its top, params and seed."""
    assert main(["regress", "--quick", "--only", "hb_memory-2ch-b4", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    row = next(line for line in out if line.startswith("hb_memory-2ch-b4"))
    assert row.split()[1:4] == ["hb_memory", "channels=2,width=16,burst=4,outstanding=4,latency=6,lines=256,len_bits=8",
                                "1"]
    assert row.split()[-2] == "PASS" and out[-1] == "1 of 1 passed"


def test_regress_runs_the_core_error_bench_and_the_native_bench(tmp_path, capsys, monkeypatch):
    """The core's entries run its error bench on the same build, and the native entry the HDL-memory
    bench; with Icarus the native entry is left out (it needs Verilator). The runs themselves are
    recorded, not made (tests/test_errors.py and test_core_rtl.py make them)."""
    from elmoe3d.sim.benches import launch, native
    calls = []

    def fake_top(top, params, build, *, module, **kw):
        calls.append(("cocotb", top, module))
        (build / "results.xml").write_text('<testsuites><testsuite name="x"><testcase name="t"/></testsuite></testsuites>')

    def fake_native(params, build, testcase, **kw):
        calls.append(("native", testcase, params))
        (build / "results.xml").write_text('<testsuites><testsuite name="x"><testcase name="t"/></testsuite></testsuites>')

    monkeypatch.setattr(launch, "run_top_bench", fake_top)
    monkeypatch.setattr(native, "run_native", fake_native)
    assert main(["regress", "--only", "core-small", "-o", str(tmp_path)]) == 0
    assert ("cocotb", "core", ("elmoe3d.sim.benches.tb_core", "elmoe3d.sim.benches.tb_core_errors")) in calls
    assert ("native", "native_matches_iss", {"preset": "small"}) in calls
    assert "core-small-native" in capsys.readouterr().out
    assert main(["regress", "--list", "--simulator", "icarus", "--only", "core-small"]) == 0
    assert "core-small-native" not in capsys.readouterr().out
