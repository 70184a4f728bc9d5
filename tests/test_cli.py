"""The command line: reports, --help everywhere, one-line errors with exit status 2."""

import json
import subprocess
import sys
from pathlib import Path

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
    """A second `elmoe3d demo --quick` writes into the folder the first made (it once refused
    it); the core it compiles for is the one it generated (its JSON is compile's --config)."""
    from elmoe3d.commands import demo
    steps = []

    def step(title, argv):
        steps.append(argv)
        if argv[0] == "compile":            # what the real step leaves for the report
            folder = Path(argv[argv.index("-o") + 1])
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "layer0_verify.expected.json").write_text(json.dumps(
                {"y_block": {"tokens": 16}, "iss_cycles": 1, "offchip_bytes": 2}))
        return 0
    monkeypatch.setattr(demo, "_step", step)
    monkeypatch.setattr(demo, "system_answer", lambda: {"line": "the system model's line"})
    out = tmp_path / "nested" / "demo"
    for _ in range(2):
        assert main(["demo", "--quick", "-o", str(out)]) == 0
    assert out.is_dir() and len(steps) == 6
    numerics, generate, compile_ = steps[:3]
    assert generate[:2] == ["generate", "--top"] and "core" in generate
    assert compile_[compile_.index("--config") + 1] == str(out / "core" / "core.json")
    report = (out / "report.md").read_text()
    assert "the system model's line" in report and "--quick" in report
    capsys.readouterr()


def _package_folders():
    """``{import name: folder}`` of pyproject.toml's package-dir (the clone is mapped the same way)."""
    tomllib = pytest.importorskip("tomllib")            # Python 3.11+
    data = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    return data["tool"]["setuptools"]["package-dir"]


@pytest.mark.synth
def test_readme_demo_on_a_fresh_clone(tmp_path):
    """The README's first command, quick variant, on a fresh clone of the committed tree with
    ../shared beside it and the virtual environment linked in: no results/ folder exists, as on
    a new user's machine (issue 11: this once stopped at 'folder results does not exist').
    `demo --quick` generates the core, compiles a shipped-model layer for it and checks it on the
    ISS, and prints the system model's line (no Verilator run, no synthesis: those are the full
    demo's).

    The clone's own code runs: a package folder on PYTHONPATH maps elmoe3d.* onto the clone's
    folders as pyproject.toml does, ahead of the editable install of this checkout."""
    import os
    import shutil

    from elmoe3d.toolchain import REPO_ROOT
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout")
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
    for name, folder in _package_folders().items():
        if name.count(".") == 1 and folder != "elmoe3d":
            (pkg / name.split(".")[1]).symlink_to(clone / folder)
    env = {**os.environ, "PYTHONPATH": str(pkg.parent)}
    env.pop("ELMOE3D_DEBUG", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)     # the __pycache__ check below needs bytecode written
    result = subprocess.run([".venv/bin/elmoe3d", "demo", "--quick"],
                            cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    # Python caches what it imported beside the source: the clone's modules ran
    assert (pkg / "__pycache__").is_dir() and (clone / "hw" / "__pycache__").is_dir()
    assert (clone / "sim" / "__pycache__").is_dir() and (clone / "firmware" / "__pycache__").is_dir()
    demo = clone / "results" / "demo"
    assert "rel. RMS error, full INT8 vs float" in result.stdout
    assert (demo / "core" / "core.v").read_text().count("module core(") == 1
    assert (demo / "core" / "core_commands.h").is_file() and (demo / "core" / "core.md").is_file()
    assert "output equals the integer golden layer" in result.stdout
    assert (demo / "compile" / "layer0_verify.expected_y.bin").is_file()
    assert "tokens/s" in result.stdout and "naive xPU" in result.stdout
    report = (demo / "report.md").read_text()
    assert "tokens/s" in report and "expected_y.bin" in report


def test_compile_writes_the_expected_output_beside_the_images(tmp_path, capsys):
    """The Y block the pass must leave (golden layer, byte for byte) and the cache events of a
    cold cache beside the images; a cached-choice draft says its ISS check ran on an empty cache."""
    import numpy as np
    out = tmp_path / "c"
    assert main(["compile", "--tokens", "2", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "output equals the integer golden layer" in text and "empty expert cache" not in text
    meta = json.loads((out / "layer0_verify.expected.json").read_text())
    y = np.frombuffer((out / "layer0_verify.expected_y.bin").read_bytes(), dtype="<i4")
    assert y.size == meta["y_block"]["tokens"] * meta["y_block"]["d_model"] == 2 * 128 and np.any(y != 0)
    events = meta["cache_events"]
    assert meta["cache_at_start"] == "empty" and events and all(len(e) == 5 for e in events)
    assert all(hit == 0 and fill == 1 for _, _, _, hit, fill in events)        # a cold cache misses
    assert main(["compile", "--tokens", "2", "--pass", "draft", "--choice", "cached", "-o", str(out)]) == 0
    assert "ran on an empty expert cache" in capsys.readouterr().out
