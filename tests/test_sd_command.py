"""``elmoe3d sd``: a tiny study end to end, and one-line refusals with exit status 2."""

import csv
import json
import subprocess
import sys

import pytest

from elmoe3d.cli import main

TINY_STUDY = ["--batch", "1", "2", "--k-d", "1", "--bits", "draft", "--dense-bits", "full",
              "--choice", "topk", "cached", "--new", "4", "--prompt-len", "8", "--gamma", "2"]


def test_sd_study_writes_table_json_and_plot(tmp_path, capsys):
    assert main(["sd", *TINY_STUDY, "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "batch  1: best speed-up" in out and "batch  2: best speed-up" in out
    rows = list(csv.DictReader(open(tmp_path / "out" / "sd.csv")))
    # per batch: plain, separate, elastic topk, elastic cached
    assert len(rows) == 8 and {r["method"] for r in rows} == {"plain", "separate", "elastic"}
    data = json.loads((tmp_path / "out" / "sd.json").read_text())
    assert data["rows"][0]["tokens_per_target_pass"] == 1.0
    assert (tmp_path / "out" / "sd.png").stat().st_size > 10_000


def test_sd_writes_routing_traces(tmp_path):
    assert main(["sd", "--batch", "1", "--k-d", "1", "--bits", "draft", "--dense-bits", "draft",
                 "--choice", "topk", "--new", "3", "--prompt-len", "8", "--no-baselines", "--traces",
                 "-o", str(tmp_path)]) == 0
    traces = list((tmp_path / "traces").glob("*.jsonl"))
    assert len(traces) == 1
    assert json.loads(traces[0].read_text().splitlines()[0])["format"] == "elmoe3d-routing-trace"


@pytest.mark.parametrize("argv, fragment", [
    (["--batch", "17"], "a batch holds 1 to 16 sequences"),
    (["--k-d", "3"], "--k-d 3 exceeds the model's top-k = 2"),
    (["--gamma", "0"], "expected a positive integer, got '0'"),
    (["--policy", "fifo"], "invalid choice: 'fifo'"),
    (["--model", "CORRUPT"], "is corrupt or not an .npz file"),
    (["--model", "/nonexistent.npz"], "weights file /nonexistent.npz does not exist"),
])
def test_sd_refuses_bad_options_in_one_line(tmp_path, argv, fragment):
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"\x00" * 100)
    argv = [str(corrupt) if a == "CORRUPT" else a for a in argv]
    result = subprocess.run([sys.executable, "-m", "elmoe3d", "sd", *argv, "--new", "2", "-o", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
