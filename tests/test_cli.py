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
    (["demo", "--quick", "-o", "/etc/passwd/demo"], "cannot write into /etc/passwd/demo: /etc/passwd is a file, not a folder"),
    (["numerics", "--top-k", "9"], "top_k = 9 exceeds the number of experts (8)"),
    (["numerics", "--bogus"], "unrecognized arguments: --bogus"),
    (["numerics", "--weights", "cauchy"], "invalid choice: 'cauchy'"),
    (["numerics", "--d-model", "200000", "--no-mixtral"], "can overflow a 32-bit accumulator"),
    (["numerics", "--d-model", "8", "--d-ffn", "8", "--no-mixtral", "--json", "/etc/passwd/x.json"],
     "cannot write /etc/passwd/x.json: /etc/passwd is a file, not a folder"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    ([], "the following arguments are required: COMMAND"),
])
def test_user_mistakes_are_one_line_and_exit_2(argv, fragment):
    result = _run(*argv)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_demo_reuses_its_output_folder(tmp_path, monkeypatch, capsys):
    """A second `elmoe3d demo` writes into the folder the first made (it once refused it)."""
    from elmoe3d.commands import demo
    steps = []
    monkeypatch.setattr(demo, "_step", lambda title, argv: steps.append(argv) or 0)
    monkeypatch.setattr(demo, "_same_verilog", lambda generated, regress_dir: 0)
    out = tmp_path / "nested" / "demo"
    for _ in range(2):
        assert main(["demo", "--quick", "-o", str(out)]) == 0
    assert out.is_dir() and len(steps) == 8
    # the regression runs the array that generate writes and synth synthesizes
    generate, regress, synth = steps[1], steps[2], steps[3]
    array = generate[generate.index("--top"):generate.index("-o")]
    assert array == ["--top", "pe_array", "--rows", "4", "--cols", "4"]
    assert all(a in regress for a in array) and all(a in synth for a in array)
    capsys.readouterr()


@pytest.mark.synth
def test_readme_demo_on_a_fresh_clone(tmp_path):
    """The README's first command, quick variant, on a fresh clone of the committed tree with
    ../shared beside it and the virtual environment linked in: no results/ folder exists, as on
    a new user's machine (issue 11: this once stopped at 'folder results does not exist').

    The clone's own code runs: a package folder on PYTHONPATH maps elmoe3d.* onto the clone's
    folders as pyproject.toml does, ahead of the editable install of this checkout."""
    import os
    import shutil
    from pathlib import Path

    from elmoe3d.toolchain import REPO_ROOT, simulator_missing
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout")
    if simulator_missing("verilator") and simulator_missing("icarus"):
        pytest.skip("no simulator installed")
    clone = tmp_path / "elmoe3d"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(REPO_ROOT), str(clone)], check=True, timeout=120)
    assert not (clone / "results").exists()
    shared = REPO_ROOT.parent / "shared"
    if shared.is_dir():
        (tmp_path / "shared").symlink_to(shared)
    (clone / ".venv").symlink_to(Path(sys.executable).parents[1])
    pkg = tmp_path / "pkg" / "elmoe3d"
    pkg.mkdir(parents=True)
    for item in (clone / "elmoe3d").iterdir():
        (pkg / item.name).symlink_to(item)
    for sub in ("hw", "sim", "synth", "firmware"):
        (pkg / sub).symlink_to(clone / sub)
    env = {**os.environ, "PYTHONPATH": str(pkg.parent)}
    env.pop("ELMOE3D_DEBUG", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)     # the __pycache__ check below needs bytecode written
    result = subprocess.run([".venv/bin/elmoe3d", "demo", "--quick"],
                            cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    # Python caches what it imported beside the source: the clone's modules ran
    assert (pkg / "__pycache__").is_dir() and (clone / "hw" / "__pycache__").is_dir()
    assert (clone / "sim" / "__pycache__").is_dir() and (clone / "synth" / "__pycache__").is_dir()
    demo = clone / "results" / "demo"
    assert "rel. RMS error, full INT8 vs float" in result.stdout
    assert (demo / "verilog" / "pe_array.v").is_file()
    assert "1 of 1 passed" in result.stdout
    assert "the regression simulated" in result.stdout and "byte for byte" in result.stdout
    assert (demo / "synth" / "report.json").is_file()
