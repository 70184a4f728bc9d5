"""The command line: reports, --help everywhere, one-line errors with exit status 2."""

import json
import subprocess
import sys

import pytest

from elmoe3d.cli import COMMANDS, main


def _run(*argv):
    return subprocess.run([sys.executable, "-m", "elmoe3d", *argv], capture_output=True, text=True)


def test_numerics_report_prints_figures(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["numerics", "--d-model", "64", "--d-ffn", "96", "--experts", "4", "--tokens", "8",
                 "--no-mixtral", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "rel. RMS error, draft (MSB+aug) vs float" in text
    rows = json.loads(out.read_text())
    assert rows[0]["draft_bytes_per_token"] * 2 == rows[0]["full_bytes_per_token"] == 2 * 3 * 64 * 96
    assert rows[0]["rel_rms_full"] < rows[0]["rel_rms_draft"] < rows[0]["rel_rms_truncated"]


@pytest.mark.parametrize("command", [[]] + [[c.replace("_", "-")] for c in COMMANDS])
def test_help_everywhere(command):
    result = _run(*command, "--help")
    assert result.returncode == 0 and "usage: elmoe3d" in result.stdout


@pytest.mark.parametrize("argv, fragment", [
    (["numerics", "--d-model", "-4"], "expected a positive integer, got '-4'"),
    (["demo", "--quick", "-o", "/nonexistent/dir/demo"], "folder /nonexistent/dir does not exist"),
    (["numerics", "--top-k", "9"], "top_k = 9 exceeds the number of experts (8)"),
    (["numerics", "--bogus"], "unrecognized arguments: --bogus"),
    (["numerics", "--weights", "cauchy"], "invalid choice: 'cauchy'"),
    (["numerics", "--d-model", "200000", "--no-mixtral"], "can overflow a 32-bit accumulator"),
    (["numerics", "--d-model", "8", "--d-ffn", "8", "--no-mixtral", "--json", "/nonexistent/dir/x.json"],
     "cannot write /nonexistent/dir/x.json: folder /nonexistent/dir does not exist"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    ([], "the following arguments are required: COMMAND"),
])
def test_user_mistakes_are_one_line_and_exit_2(argv, fragment):
    result = _run(*argv)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.synth
def test_demo_runs_every_step_end_to_end(tmp_path):
    """The README's first command (quick variant): report, Verilog, regression, synthesis."""
    from elmoe3d.toolchain import simulator_missing
    if simulator_missing("verilator") and simulator_missing("icarus"):
        pytest.skip("no simulator installed")
    result = _run("demo", "--quick", "-o", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "rel. RMS error, full INT8 vs float" in result.stdout
    assert (tmp_path / "demo" / "verilog" / "pe_array.v").is_file()
    assert "1 of 1 passed" in result.stdout
    assert (tmp_path / "demo" / "synth" / "report.json").is_file()
