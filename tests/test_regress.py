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
