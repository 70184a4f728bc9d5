"""``elmoe3d synth`` on the command line, the shared per-top options, the registry path."""

import argparse
import gzip
import json
import subprocess
import sys

import pytest

from elmoe3d.cli import main
from elmoe3d.commands._top_args import add_top_arguments, top_params
from elmoe3d.errors import UserError
from elmoe3d.hw import tops as tops_module
from elmoe3d.hw.tops import Param, Top
from elmoe3d.toolchain import have, shipped_liberty
from elmoe3d.synth import flow

from test_synth import Mac  # pytest puts tests/ on sys.path

pytestmark = pytest.mark.synth

FAKE = {
    "mac": Top("mac", "a small MAC", lambda out_regs, acc_bits: Mac(out_regs=out_regs, acc_bits=acc_bits),
               params=(Param("out_regs", int, 1, "output register stages"),
                       Param("acc_bits", int, 12, "accumulator bits", (12, 16))),
               macs_per_cycle=lambda out_regs, acc_bits: {"full": 1, "draft": 2}),
    "other": Top("other", "another top", lambda fast: Mac(),
                 params=(Param("fast", bool, False, "100% faster"),)),
}


def _parse(*argv):
    parser = argparse.ArgumentParser()
    add_top_arguments(parser, FAKE)
    return top_params(parser.parse_args(list(argv)))


def test_top_params_convert_and_fill_defaults():
    top, params = _parse("--top", "mac", "--out-regs", "3")
    assert top is FAKE["mac"] and params == {"out_regs": 3, "acc_bits": 12}
    assert _parse("--top", "other", "--fast", "yes")[1] == {"fast": True}
    assert _parse("--top", "other", "--fast", "0")[1] == {"fast": False}
    assert _parse("--top", "other")[1] == {"fast": False}


@pytest.mark.parametrize("argv, message", [
    (["--top", "nosuch"], "unknown top 'nosuch'; choose from mac, other"),
    (["--top", "mac", "--fast", "1"], "top 'mac' takes no option --fast; it takes: --out-regs, --acc-bits"),
    (["--top", "mac", "--out-regs", "two"], "--out-regs: expected int, got 'two'"),
    (["--top", "mac", "--acc-bits", "13"], "--acc-bits: '13' is not one of 12, 16"),
    (["--top", "other", "--fast", "maybe"], "--fast: expected true or false, got 'maybe'"),
])
def test_top_params_refusals(argv, message):
    with pytest.raises(UserError) as info:
        _parse(*argv)
    assert str(info.value) == message


def test_help_lists_which_tops_take_a_parameter():
    parser = argparse.ArgumentParser()
    add_top_arguments(parser, FAKE)
    text = parser.format_help()
    assert "--out-regs VALUE" in text and "(mac: default 1)" in text
    assert "100% faster (other: default False)" in text


def test_synthesize_a_registered_top(tmp_path, monkeypatch):
    monkeypatch.setattr(tops_module, "all_tops", lambda: FAKE)
    report = flow.synthesize("mac", {"out_regs": 2}, tmp_path, log=None)
    assert report["top"] == "mac" and report["params"] == {"out_regs": 2, "acc_bits": 12}
    assert json.loads((tmp_path / "mac.json").read_text())["params"] == report["params"]
    assert report["area"]["total"]["area"] > 0
    assert "(out_regs=2, acc_bits=12)" in (tmp_path / "report.md").read_text()
    with pytest.raises(UserError, match="takes no parameter rows"):
        flow.synthesize("mac", {"rows": 2}, tmp_path, log=None)
    with pytest.raises(UserError, match="unknown top 'pe_arrayy'"):
        flow.synthesize("pe_arrayy", {}, tmp_path, log=None)


@pytest.mark.skipif(shipped_liberty("nangate45") is None, reason="../shared/pdk has no nangate45 Liberty file")
def test_cli_synthesizes_verilog_files(tmp_path, capsys):
    from elmoe3d.hw.verilog import write_verilog
    v = write_verilog(Mac(), "mac", tmp_path / "src", {})
    out = tmp_path / "out"
    assert main(["synth", "--verilog", str(v), "--top", "mac", "--liberty", "nangate45",
                 "--clock-ns", "2.5", "--activity", "0.1", "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out == (out / "report.md").read_text()
    assert "# Synthesis report: `mac`" in captured.out and "clock target 2.5 ns (400.0 MHz)" in captured.out
    assert "elmoe3d synth: running Yosys" in captured.err
    report = json.loads((out / "report.json").read_text())
    assert report["clock_ns"] == 2.5 and report["activity"] == 0.1 and report["library"] == "NangateOpenCellLibrary"
    if have("sta"):
        assert report["timing"]["fmax_mhz"] > 0 and report["power_mw"]["total"] > 0
        assert (out / "netlist.v").exists() and (out / "timing.rpt").exists()


def test_idle_ports_must_match_an_input(tmp_path):
    # a component's ports are known before synthesis: refused at once
    with pytest.raises(UserError, match=r"--idle acc: no input port of mac matches; its inputs: rst, a, b, en"):
        flow.synthesize_component(Mac(), "mac", tmp_path, idle_ports=["acc"], log=None)
    assert not (tmp_path / "mac.v").exists()
    if not have("sta") or shipped_liberty("nangate45") is None:
        return
    # Verilog files: known once Yosys has read them; the last line says why, exit 2
    src = tmp_path / "m.v"
    src.write_text("module m(input a, output b);\n  assign b = ~a;\nendmodule\n")
    result = _cli("--verilog", src, "--top", "m", "--liberty", "nangate45", "--idle", "q*", "-o", tmp_path / "o")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "elmoe3d: error: --idle q*: no input port of m matches; its inputs: a"


def _cli(*argv):
    return subprocess.run([sys.executable, "-m", "elmoe3d", "synth", *map(str, argv)],
                          capture_output=True, text=True)


def _other_tops_param():
    """A registered top and a parameter only some other registered top takes (or None)."""
    registered = tops_module.all_tops()
    for top in registered.values():
        own = {p.name for p in top.params}
        for other in registered.values():
            for p in other.params:
                if p.name not in own:
                    return top.name, p.name
    return None


def test_cli_mistakes_are_one_line_exit_2(tmp_path):
    src = tmp_path / "mac.v"
    src.write_text("module mac(input a, output b);\n  assign b = a;\nendmodule\n")
    text_lib = tmp_path / "readme.lib"
    text_lib.write_text("These notes describe the timing library we will use.\n")
    bad_gz = tmp_path / "bad.lib.gz"
    bad_gz.write_bytes(gzip.compress(b"library (x) {\n" * 100)[:40])
    not_dir = tmp_path / "file"
    not_dir.write_text("x")
    cases = [
        (["--verilog", src, "--top", "mac", "--liberty", text_lib, "-o", tmp_path / "o1"],
         "does not look like a Liberty file"),
        (["--verilog", src, "--top", "mac", "--liberty", bad_gz, "-o", tmp_path / "o2"], "not a readable gzip file"),
        (["--verilog", src, "--top", "mac", "--liberty", tmp_path / "none.lib", "-o", tmp_path / "o3"],
         "Liberty file not found"),
        (["--top", "no_such_top", "-o", tmp_path / "o4"], "unknown top 'no_such_top'"),
        (["--verilog", src, "--top", "mac", "--clock-ns", "0", "-o", tmp_path / "o5"],
         "expected a positive number, got '0'"),
        (["--verilog", src, "--top", "mac", "--activity", "2", "-o", tmp_path / "o6"], "expected a number in [0, 1]"),
        (["--verilog", src, "--top", "mac", "-o", not_dir], "it is a file"),
        (["--verilog", src, "--top", "mac", "-o", not_dir / "b"], "file is a file, not a folder"),
        (["--top", "x", "--bogus", "1", "-o", tmp_path / "o7"], "unrecognized arguments: --bogus"),
    ]
    pair = _other_tops_param()
    if pair:
        top, param = pair
        cases.append((["--top", top, f"--{param.replace('_', '-')}", "1", "-o", tmp_path / "o8"],
                      f"top '{top}' takes no option --{param.replace('_', '-')}"))
        cases.append((["--verilog", src, "--top", "mac", f"--{param.replace('_', '-')}", "1", "-o", tmp_path / "o9"],
                      "top parameters apply to registered tops, not to --verilog files"))
    for argv, fragment in cases:
        result = _cli(*argv)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (argv, result.stderr)
        assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in result.stderr, (argv, result.stderr)
